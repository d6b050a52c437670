// GeneratedProtocolTests: the committed protobuf-c code is what protoc-c makes of proto/orthofuse.proto.
import Foundation
import XCTest

final class GeneratedProtocolTests: XCTestCase {
    func testCommittedCodeIsNotStale() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/protoc-c") else {
            throw XCTSkip("protoc-c not installed (scripts/setup.sh installs protobuf-c-compiler)")
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("orthofuse-proto-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }
        let process = Process()
        process.executableURL = root.appendingPathComponent("scripts/generate_protocol.sh")
        process.arguments = [output.path]
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        for file in ["include/orthofuse.pb-c.h", "orthofuse.pb-c.c"] {
            let fresh = try Data(contentsOf: output.appendingPathComponent(file))
            let committed = try Data(contentsOf: root.appendingPathComponent("Sources/CControlProtocol/\(file)"))
            XCTAssertEqual(fresh, committed, "\(file) is stale: run scripts/generate_protocol.sh and commit")
        }
    }
}
