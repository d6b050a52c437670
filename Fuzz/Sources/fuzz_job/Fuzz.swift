// fuzz_job: JobConfig.parse on any text (YAML, strict keys, ranges).
import Core
import JobSchema
import ControlProtocol
import Foundation
import FuzzInputs

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    FuzzInputs.run(start, count) { data in
        _ = try JobConfig.parse(FuzzInputs.text(data), origin: "job.yaml", baseDirectory: FuzzInputs.directory)
    }
}

@_cdecl("fuzz_job_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzInputs.drive(argc, argv, fuzz)
}
