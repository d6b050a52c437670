// FuzzReplayTests: every input the fuzzers found (Fuzz/crashes/TARGET/) through its parser again:
// a value or an error, never a trap.
import Foundation
import XCTest
@testable import Core
@testable import JobSchema

final class FuzzReplayTests: XCTestCase {
    private static let crashes = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/crashes").standardizedFileURL

    /// The parser of each target, as Fuzz/Sources/fuzz_TARGET calls it (control messages aside:
    /// ControlProtocol is not a dependency of these tests; its decoder has its own tests).
    private static let parsers: [String: @Sendable (URL) throws -> Void] = [
        "safetensors": { _ = try Safetensors.read($0) },
        "npy": { _ = try NumpyArray.read($0).floatValues() },
        "npz": { _ = try Dataset.loadNPZ($0) },
        "idx": { _ = try IDXArray.read($0) },
        "gzip": { _ = try IDXArray.read($0) },
        "job": { _ = try JobConfig.parse(String(decoding: try Data(contentsOf: $0), as: UTF8.self), origin: "job.yaml",
                                         baseDirectory: $0.deletingLastPathComponent()) },
        "merge_config": { _ = try MergeRecipe.parse(String(decoding: try Data(contentsOf: $0), as: UTF8.self),
                                                    origin: "merge.yaml", baseDirectory: $0.deletingLastPathComponent()) },
        "sweep": { _ = try Sweep.parse(String(decoding: try Data(contentsOf: $0), as: UTF8.self), origin: "sweep.yaml",
                                       baseDirectory: $0.deletingLastPathComponent()) },
    ]

    func testEveryKeptFindingGetsAnAnswer() throws {
        var replayed = 0
        for (target, parse) in Self.parsers {
            let folder = Self.crashes.appendingPathComponent(target)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] where !name.hasPrefix(".") {
                _ = try? parse(folder.appendingPathComponent(name))
                replayed += 1
            }
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: Self.crashes.path), "Fuzz/crashes exists at \(Self.crashes.path)")
        print("replayed \(replayed) fuzz finding(s)")
    }
}
