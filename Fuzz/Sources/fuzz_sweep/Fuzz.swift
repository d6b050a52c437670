// fuzz_sweep: Sweep.parse on any text (axes, grids, set, inline jobs).
import Core
import JobSchema
import ControlProtocol
import Foundation
import FuzzInputs

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    FuzzInputs.run(start, count) { data in
        _ = try Sweep.parse(FuzzInputs.text(data), origin: "sweep.yaml", baseDirectory: FuzzInputs.directory)
    }
}

@_cdecl("fuzz_sweep_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzInputs.drive(argc, argv, fuzz)
}
