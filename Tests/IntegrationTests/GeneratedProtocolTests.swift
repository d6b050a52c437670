// GeneratedProtocolTests: the committed protobuf-c code is what protoc-c makes of proto/orthofuse.proto.
import Foundation
import TestSupport
import XCTest

final class GeneratedProtocolTests: XCTestCase {
    func testCommittedCodeIsNotStale() throws {
        let root = BuiltProducts.packageRoot
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/protoc-c") else {
            throw XCTSkip("protoc-c not installed (scripts/setup.sh installs protobuf-c-compiler)")
        }
        let output = try temporaryFolder("proto")
        let generated = try Subprocess.run(root.appendingPathComponent("scripts/generate_protocol.sh"), [output.path])
        XCTAssertEqual(generated.status, 0, generated.stderr)
        for file in ["include/orthofuse.pb-c.h", "orthofuse.pb-c.c"] {
            let fresh = try Data(contentsOf: output.appendingPathComponent(file))
            let committed = try Data(contentsOf: root.appendingPathComponent("Sources/CControlProtocol/\(file)"))
            XCTAssertEqual(fresh, committed, "\(file) is stale: run scripts/generate_protocol.sh and commit")
        }
    }
}
