// fuzz_gzip: Gzip.decompress and the gzip IDX reader on any bytes.
import Core
import ControlProtocol
import Foundation
import FuzzInputs

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    FuzzInputs.run(start, count) { data in
        _ = try? Gzip.decompress(data, source: "fuzz.gz"); _ = try FuzzInputs.throughFile(data, suffix: "idx.gz") { _ = try IDXArray.read($0) }
    }
}

@_cdecl("fuzz_gzip_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzInputs.drive(argc, argv, fuzz)
}
