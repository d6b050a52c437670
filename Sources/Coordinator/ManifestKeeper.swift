// ManifestKeeper: rank 0's copy of the run manifest, rewritten as each task finishes.
import ControlProtocol
import Core
import Foundation
import Reporting
import Worker

/// Rank 0's copy of the run manifest, rewritten atomically whenever a task finishes.
final class ManifestKeeper {
    private(set) var manifest: RunManifest
    let directory: URL
    let definitions: [String: String]

    init(manifest: RunManifest, directory: URL, definitions: [String: String]) {
        self.manifest = manifest
        self.directory = directory
        self.definitions = definitions
    }

    func record(_ task: TaskPlan, result: ControlMessage.TaskResult, rank: Int) throws {
        manifest.tasks[task.name] = RunManifest.TaskRecord(
            definition: definitions[task.name] ?? "", taskVector: RunDirectory.taskVectorPath(task.name),
            taskVectorSHA256: result.taskVectorFileSHA256, head: RunDirectory.headPath(task.name),
            headSHA256: result.headFileSHA256, steps: task.steps, finalLoss: result.finalLoss.isFinite ? result.finalLoss : nil,
            trainSeconds: result.trainSeconds, rank: rank)
        try manifest.write(in: self.directory)
    }

    func setBaseFingerprint(_ fingerprint: String) throws {
        manifest.baseFingerprint = fingerprint
        try manifest.write(in: directory)
    }
}
