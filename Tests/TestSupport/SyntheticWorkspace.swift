// SyntheticWorkspace: a temporary directory holding the synthetic tasks, and whole runs of jobs
// over them on in-process ranks.
import Coordinator
import Core
import JobSchema
import Reporting
import Foundation
import Transport
import XCTest

public final class SyntheticWorkspace {
    public let directory: URL
    public let taskNames: [String]

    /// Creates a fresh directory and writes the synthetic tasks into it.
    public init(label: String, taskCount: Int = 3) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("orthofuse-\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        taskNames = try SyntheticTasks.write(to: directory, taskCount: taskCount)
    }

    public func remove() {
        try? FileManager.default.removeItem(at: directory)
    }

    /// The synthetic job (see SyntheticTasks.jobYAML) writing into `output`, after `edit`.
    public func jobText(output: String, steps: Int = 40, orthoRegLambda: Double = 0.5, extra: String = "",
                        disentanglement: Bool = false, edit: (String) -> String = { $0 }) -> String {
        edit(SyntheticTasks.jobYAML(taskNames: taskNames, steps: steps, extra: extra, orthoRegLambda: orthoRegLambda,
                                    disentanglement: disentanglement)
            .replacingOccurrences(of: "output: out", with: "output: \(output)"))
    }

    public func plan(_ text: String) throws -> JobPlan {
        try JobPlan(config: JobConfig.parse(text, origin: "job.yaml", baseDirectory: directory))
    }

    /// Runs `plan` on `ranks` threads-as-ranks; returns rank 0's report.
    public func run(_ plan: JobPlan, ranks: Int) throws -> RunReport {
        let reports = try InProcessWorld.run(size: ranks) { communicator in
            try JobRunner(plan: plan, communicator: communicator,
                          console: Console(rank: communicator.rank, size: ranks, level: .quiet)).run()
        }
        guard let report = reports[0] else { throw OrthofuseError("rank 0 returned no report") }
        return report
    }

    public func read(_ path: String) throws -> SafetensorsFile {
        try Safetensors.read(directory.appendingPathComponent(path))
    }

    /// name → values of a saved safetensors file.
    public func values(_ path: String) throws -> [String: [Float]] {
        try tensorValues(at: directory.appendingPathComponent(path))
    }
}

extension XCTestCase {
    /// A SyntheticWorkspace (see its init) removed after the test, passed or failed.
    public func syntheticWorkspace(_ label: String, taskCount: Int = 3) throws -> SyntheticWorkspace {
        let workspace = try SyntheticWorkspace(label: label, taskCount: taskCount)
        addTeardownBlock { workspace.remove() }
        return workspace
    }
}
