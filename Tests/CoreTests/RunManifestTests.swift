// RunManifestTests: the run directory's manifest: round trip, unreadable files, conflicts, checksums.
import Foundation
import XCTest
@testable import Core
@testable import Reporting
import TestSupport

final class RunManifestTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = try temporaryFolder("manifest")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("task_vectors"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("heads"), withIntermediateDirectories: true)
    }

    private func record(definition: String = "def-a") throws -> RunManifest.TaskRecord {
        let vector = Data([1, 2, 3, 4]), head = Data([5, 6])
        try vector.write(to: directory.appendingPathComponent("task_vectors/a.safetensors"))
        try head.write(to: directory.appendingPathComponent("heads/a.safetensors"))
        return RunManifest.TaskRecord(
            definition: definition, taskVector: "task_vectors/a.safetensors", taskVectorSHA256: Checksum.sha256(vector),
            head: "heads/a.safetensors", headSHA256: Checksum.sha256(head), steps: 40, finalLoss: nil, trainSeconds: 1.5, rank: 2)
    }

    func testRoundTripAndNoManifest() throws {
        XCTAssertNil(try RunManifest.read(in: directory))
        var manifest = RunManifest(job: "j", training: ["finetune": "steps: 40\n", "seed": "1"], baseFingerprint: "ab")
        manifest.tasks["a"] = try record()
        try manifest.write(in: directory)
        XCTAssertEqual(try RunManifest.read(in: directory), manifest)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("manifest.json"))) as? [String: Any]
        XCTAssertEqual(json?["format"] as? String, "orthofuse-manifest/1")
        XCTAssertNotNil((json?["tasks"] as? [String: Any])?["a"], "tasks by name")
    }

    func testUnreadableOrForeignManifestsAreErrors() throws {
        try Data("{not json".utf8).write(to: directory.appendingPathComponent("manifest.json"))
        XCTAssertThrowsError(try RunManifest.read(in: directory)) { error in
            XCTAssertTrue("\(error)".contains("not a valid run manifest"), "\(error)")
        }
        var manifest = RunManifest(job: "j", training: [:])
        manifest.format = "orthofuse-manifest/9"
        try manifest.write(in: directory)
        XCTAssertThrowsError(try RunManifest.read(in: directory)) { error in
            XCTAssertTrue("\(error)".contains("manifest format 'orthofuse-manifest/9'"), "\(error)")
        }
    }

    func testConflictsNameWhatDiffers() throws {
        var manifest = RunManifest(job: "j", training: ["finetune": "lr: 1", "model": "mlp", "seed": "1"])
        manifest.tasks["a"] = try record()
        XCTAssertNil(manifest.conflict(training: manifest.training, taskDefinitions: ["a": "def-a", "new": "def-n"]),
                     "the same training; a task added")
        XCTAssertEqual(manifest.conflict(training: ["finetune": "lr: 2", "model": "mlp", "seed": "2"], taskDefinitions: [:]),
                       "it holds task vectors of job 'j' trained with other settings (finetune, seed differ)")
        XCTAssertEqual(manifest.conflict(training: manifest.training, taskDefinitions: ["a": "def-b"]),
                       "task(s) 'a' were trained there with another definition (data, classes, steps or validation split)")
    }

    func testVerificationCatchesChangedAndMissingFiles() throws {
        let good = try record()
        XCTAssertTrue(RunManifest.verify(good, in: directory))
        try Data([1, 2, 3, 5]).write(to: directory.appendingPathComponent("task_vectors/a.safetensors"))
        XCTAssertFalse(RunManifest.verify(good, in: directory), "a changed byte")
        _ = try record()
        try FileManager.default.removeItem(at: directory.appendingPathComponent("heads/a.safetensors"))
        XCTAssertFalse(RunManifest.verify(good, in: directory), "a missing head")
    }
}
