// fuzz_safetensors: Safetensors.read on any bytes (header JSON, dtypes, offsets).
import Core
import ControlProtocol
import Foundation
import FuzzInputs

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    FuzzInputs.run(start, count) { data in
        _ = try FuzzInputs.throughFile(data, suffix: "safetensors") { _ = try Safetensors.read($0) }
    }
}

@_cdecl("fuzz_safetensors_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzInputs.drive(argc, argv, fuzz)
}
