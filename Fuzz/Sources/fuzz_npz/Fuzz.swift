// fuzz_npz: Dataset.loadNPZ on any bytes (zip directory, local headers, deflate, the .npy inside).
import Core
import ControlProtocol
import Foundation
import FuzzInputs

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    FuzzInputs.run(start, count) { data in
        _ = try FuzzInputs.throughFile(data, suffix: "npz") { _ = try Dataset.loadNPZ($0) }
    }
}

@_cdecl("fuzz_npz_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzInputs.drive(argc, argv, fuzz)
}
