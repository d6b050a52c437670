// fuzz_merge_config: MergeRecipe.parse on any text (the merge --config file).
import Core
import JobSchema
import ControlProtocol
import Foundation
import FuzzInputs

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    FuzzInputs.run(start, count) { data in
        _ = try MergeRecipe.parse(FuzzInputs.text(data), origin: "merge.yaml", baseDirectory: FuzzInputs.directory)
    }
}

@_cdecl("fuzz_merge_config_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzInputs.drive(argc, argv, fuzz)
}
