// OutputDirectoryTests: where a run may write (new, empty or its own run folder), one run at a time
// per folder, leftovers of a killed run cleaned, and a broken θ0 named at its file.
import Foundation
import XCTest
@testable import Coordinator
@testable import Core
@testable import Reporting
import TestSupport

final class OutputDirectoryTests: XCTestCase {
    private func workspace() throws -> SyntheticWorkspace {
        try syntheticWorkspace("output", taskCount: 2)
    }

    private func listing(_ url: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted()
    }

    func testAFolderThatIsNotARunIsRefusedAndLeftAsItWas() throws {
        let workspace = try workspace()
        try Data("user notes".utf8).write(to: workspace.directory.appendingPathComponent("job.yaml"))
        let before = listing(workspace.directory)
        // `output: .` is the folder of the job file and its data.
        XCTAssertThrowsError(try workspace.run(workspace.plan(workspace.jobText(output: ".")), ranks: 1)) { error in
            XCTAssertTrue("\(error)".contains("not an orthofuse run"), "\(error)")
        }
        XCTAssertEqual(listing(workspace.directory), before, "nothing written into the user's folder")
        XCTAssertEqual(try String(contentsOf: workspace.directory.appendingPathComponent("job.yaml"), encoding: .utf8), "user notes")
        // An empty folder is fine, and a rerun into a finished run resumes.
        try FileManager.default.createDirectory(at: workspace.directory.appendingPathComponent("empty"), withIntermediateDirectories: true)
        _ = try workspace.run(workspace.plan(workspace.jobText(output: "empty")), ranks: 1)
        let rerun = try workspace.run(workspace.plan(workspace.jobText(output: "empty")), ranks: 1)
        XCTAssertEqual(rerun.tasks.map(\.resumedFromStep), [40, 40])
    }

    func testASecondRunIntoALockedFolderIsRefusedNamingTheHolder() throws {
        let workspace = try workspace()
        let output = workspace.directory.appendingPathComponent("run")
        let lock = try RunLock.acquire(output)
        XCTAssertThrowsError(try workspace.run(workspace.plan(workspace.jobText(output: "run")), ranks: 2)) { error in
            XCTAssertTrue("\(error)".contains("another orthofuse run is writing here"), "\(error)")
            XCTAssertTrue("\(error)".contains("pid \(getpid())"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: output.appendingPathComponent(RunManifest.fileName).path))
        lock.release()
        _ = try workspace.run(workspace.plan(workspace.jobText(output: "run")), ranks: 2)
    }

    func testTemporariesOfAKilledWriteAreRemovedByTheNextRun() throws {
        let workspace = try workspace()
        _ = try workspace.run(workspace.plan(workspace.jobText(output: "run")), ranks: 1)
        let leftovers = ["checkpoints/.task0.safetensors.tmp-99999", ".report.json.tmp-12345"].map {
            workspace.directory.appendingPathComponent("run/\($0)")
        }
        for url in leftovers {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data([1, 2, 3]).write(to: url)
        }
        _ = try workspace.run(workspace.plan(workspace.jobText(output: "run")), ranks: 1)
        for url in leftovers { XCTAssertFalse(FileManager.default.fileExists(atPath: url.path), url.path) }
    }

    func testAModelTooLargeForMemoryIsRefusedBeforeAllocating() throws {
        let workspace = try workspace()
        // 11 matrices of 16384² floats (each at the per-matrix cap): 3 billion parameters, 12 GB per copy.
        let text = workspace.jobText(output: "huge") {
            $0.replacingOccurrences(of: "hidden: [12, 8]", with: "hidden: [" + Array(repeating: "16384", count: 12).joined(separator: ", ") + "]")
        }
        XCTAssertThrowsError(try workspace.run(workspace.plan(text), ranks: 1)) { error in
            XCTAssertTrue("\(error)".contains("parameters × about"), "\(error)")
            XCTAssertTrue("\(error)".contains("more than the"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: workspace.directory.appendingPathComponent("huge").path),
                       "refused before the output is made")
    }

    func testANonFiniteBaseIsNamedAtItsFile() throws {
        let workspace = try workspace()
        _ = try workspace.run(workspace.plan(workspace.jobText(output: "first")), ranks: 1)
        let good = try workspace.read("first/base.safetensors")
        var tensors = good.tensors
        var values = tensors[0].values
        values[1] = .infinity
        tensors[0] = TensorRecord(name: tensors[0].name, shape: tensors[0].shape, values: values)
        try Safetensors.write(tensors, to: workspace.directory.appendingPathComponent("broken.safetensors"))
        let text = workspace.jobText(output: "broken") { text in
            text.split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.hasPrefix("pretrain:") ? "base: broken.safetensors" : String($0) }.joined(separator: "\n")
        }
        XCTAssertThrowsError(try workspace.run(workspace.plan(text), ranks: 2)) { error in
            XCTAssertTrue("\(error)".contains("broken.safetensors"), "\(error)")
            XCTAssertTrue("\(error)".contains("'\(tensors[0].name)' holds a non-finite value"), "\(error)")
        }
    }
}
