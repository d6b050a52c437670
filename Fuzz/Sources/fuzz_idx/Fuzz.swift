// fuzz_idx: IDXArray.parse on any bytes (magic, dimensions, payload).
import Core
import ControlProtocol
import Foundation
import FuzzInputs

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    FuzzInputs.run(start, count) { data in
        _ = try IDXArray.parse(data, source: "fuzz.idx").floatValues(scaleBytes: true)
    }
}

@_cdecl("fuzz_idx_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzInputs.drive(argc, argv, fuzz)
}
