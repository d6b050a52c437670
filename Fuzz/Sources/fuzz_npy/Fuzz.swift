// fuzz_npy: NumpyArray.parse on any bytes (preamble, header dictionary, shapes).
import Core
import ControlProtocol
import Foundation
import FuzzInputs

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    FuzzInputs.run(start, count) { data in
        _ = try NumpyArray.parse(data, source: "fuzz.npy").floatValues()
    }
}

@_cdecl("fuzz_npy_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzInputs.drive(argc, argv, fuzz)
}
