// JobRunnerTests: the whole coordinator/worker program on in-process ranks (threads), checked as
// a function of the world size: same outputs for any number of ranks, clean failure everywhere.
import Foundation
import XCTest
@testable import Coordinator
@testable import Core
@testable import Reporting
import TestSupport
import Transport
import Worker

final class JobRunnerTests: XCTestCase {
    private var workspace: SyntheticWorkspace!
    private var directory: URL { workspace.directory }
    private var taskNames: [String] { workspace.taskNames }

    override func setUpWithError() throws {
        workspace = try syntheticWorkspace("runner")
    }

    private func plan(output: String, extra: String = "") throws -> JobPlan {
        try workspace.plan(workspace.jobText(output: output, extra: extra))
    }

    private func run(_ plan: JobPlan, ranks: Int) throws -> RunReport {
        try workspace.run(plan, ranks: ranks)
    }

    private func values(_ path: String) throws -> [String: [Float]] {
        try workspace.values(path)
    }

    func testResultsDoNotDependOnTheNumberOfRanks() throws {
        let single = try run(plan(output: "np1"), ranks: 1)
        let three = try run(plan(output: "np3"), ranks: 3)
        let two = try run(plan(output: "np2"), ranks: 2)
        for name in taskNames {
            let reference = try values("np1/task_vectors/\(name).safetensors")
            XCTAssertEqual(try values("np3/task_vectors/\(name).safetensors"), reference, "task vector \(name), 3 ranks")
            XCTAssertEqual(try values("np2/task_vectors/\(name).safetensors"), reference, "task vector \(name), 2 ranks")
            XCTAssertEqual(try values("np3/heads/\(name).safetensors"), try values("np1/heads/\(name).safetensors"))
            XCTAssertGreaterThan(reference.values.map { $0.map { abs($0) }.max() ?? 0 }.max() ?? 0, 0, "τ is not zero")
        }
        XCTAssertEqual(try values("np3/merged/task_arithmetic.safetensors"), try values("np1/merged/task_arithmetic.safetensors"))
        XCTAssertEqual(single.merges.map(\.alpha), three.merges.map(\.alpha))
        XCTAssertEqual(single.tasks.map(\.finetunedAccuracy), three.tasks.map(\.finetunedAccuracy))
        XCTAssertEqual(two.merges[0].perTask.map(\.accuracy), single.merges[0].perTask.map(\.accuracy))
        XCTAssertEqual(three.tasks.map(\.rank), [0, 1, 2], "one task per rank")
    }

    func testOutputsAndMergedModelFormula() throws {
        let report = try run(plan(output: "out"), ranks: 3)
        let base = try values("out/base.safetensors")
        let merged = try values("out/merged/task_arithmetic.safetensors")
        let vectors = try taskNames.map { try values("out/task_vectors/\($0).safetensors") }
        let alpha = report.merges[0].alpha
        for (name, baseValues) in base {
            let expected = baseValues.indices.map { i in
                Double(baseValues[i]) + alpha * vectors.map { Double($0[name]![i]) }.reduce(0, +)
            }
            checkClose(merged[name]!, expected, name)
        }
        XCTAssertEqual(report.tasks.map(\.name), taskNames)
        for task in report.tasks {
            XCTAssertGreaterThan(task.finetunedAccuracy, 0.5, "\(task.name) learns")
            XCTAssertGreaterThan(task.validationSamples, 0)
        }
        XCTAssertEqual(report.merges[0].alphaCurve.count, 9)
        XCTAssertTrue(report.merges[0].alphaCurve.contains { $0.alpha == alpha })

        // report.json carries the documented fields.
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("out/report.json")))
        let root = try XCTUnwrap(json as? [String: Any])
        let tasks = try XCTUnwrap(root["tasks"] as? [[String: Any]])
        XCTAssertNotNil(tasks.first?["zero_shot_accuracy"] as? Double)
        XCTAssertNotNil(tasks.first?["finetuned_accuracy"] as? Double)
        let merges = try XCTUnwrap(root["merges"] as? [[String: Any]])
        for key in ["method", "alpha", "absolute_accuracy", "normalized_accuracy", "per_task", "alpha_curve"] {
            XCTAssertNotNil(merges.first?[key], key)
        }
        let curve = try XCTUnwrap(merges.first?["alpha_curve"] as? [[String: Any]])
        XCTAssertNotNil(curve.first?["validation_normalized_accuracy"] as? Double)
        let perTask = try XCTUnwrap(merges.first?["per_task"] as? [[String: Any]])
        XCTAssertNotNil(perTask.first?["normalized_accuracy"] as? Double)
    }

    func testCoordinatorCanStayOutOfTraining() throws {
        let report = try run(plan(output: "coord", extra: "runtime: {coordinator_trains: false}"), ranks: 3)
        // The queue gives task 0 to rank 1 and task 1 to rank 2; task 2 goes to whichever is free first.
        XCTAssertEqual(Array(report.tasks.map(\.rank).prefix(2)), [1, 2])
        XCTAssertFalse(report.tasks.map(\.rank).contains(0), "rank 0 only coordinates")
    }

    func testAFailingTaskEndsTheJobOnEveryRankWithItsReason() throws {
        // Task 1's training labels include 9 while the job says 4 classes.
        let folder = directory.appendingPathComponent("task1")
        try SyntheticTasks.idx(magic: 0x0801, dimensions: [240], bytes: [UInt8](repeating: 9, count: 240))
            .write(to: folder.appendingPathComponent("train-labels.idx"))
        let failing = try plan(output: "fail")
        XCTAssertThrowsError(try run(failing, ranks: 3)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("task1") && text.contains("label 9"), text)
        }
        XCTAssertThrowsError(try run(failing, ranks: 1)) { error in
            XCTAssertTrue("\(error)".contains("label 9"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent("fail/report.json").path))
    }

    /// A rerun of the same job into the same output resumes every task from its finished
    /// checkpoint (nothing is retrained) and gives identical task vectors; a changed job does not
    /// pick up the old checkpoints.
    func testRerunReusesFinishedTrainingAndChangedJobsAreRefused() throws {
        let first = try run(plan(output: "resume", extra: ""), ranks: 3)
        XCTAssertEqual(first.tasks.map(\.resumedFromStep), [0, 0, 0])
        let vectors = try taskNames.map { try values("resume/task_vectors/\($0).safetensors") }
        let second = try run(plan(output: "resume"), ranks: 2)
        XCTAssertEqual(second.tasks.map(\.resumedFromStep), [40, 40, 40], "finished tasks are not retrained")
        XCTAssertEqual(try taskNames.map { try values("resume/task_vectors/\($0).safetensors") }, vectors)
        XCTAssertEqual(second.merges.map(\.alpha), first.merges.map(\.alpha))

        let changed = try workspace.plan(workspace.jobText(output: "resume") {
            $0.replacingOccurrences(of: "lr: 5.0e-3", with: "lr: 4.0e-3")
        })
        XCTAssertThrowsError(try run(changed, ranks: 1), "another job's outputs are not mixed in") { error in
            XCTAssertTrue("\(error)".contains("trained with other settings"), "\(error)")
        }
        // Without the manifest, another job's checkpoints are still never resumed.
        try FileManager.default.removeItem(at: directory.appendingPathComponent("resume/manifest.json"))
        let third = try run(changed, ranks: 1)
        XCTAssertEqual(third.tasks.map(\.resumedFromStep), [0, 0, 0], "another job's checkpoints are ignored")
    }

    func testValidationFractionZeroNeedsASingleAlpha() throws {
        let text = workspace.jobText(output: "noval", extra: "validation_fraction: 0.0")
        XCTAssertThrowsError(try workspace.plan(text)) { error in
            XCTAssertTrue("\(error)".contains("validation_fraction 0"), "\(error)")
        }
        let single = text.replacingOccurrences(of: "alpha: {from: 0.2, to: 1.0, count: 9}", with: "alpha: {from: 0.3, to: 0.3, count: 1}")
        let report = try run(workspace.plan(single), ranks: 2)
        XCTAssertEqual(report.merges.first?.alpha, 0.3)
    }

    private func checkClose(_ actual: [Float], _ expected: [Double], _ name: String) {
        XCTAssertEqual(actual.count, expected.count)
        let worst = zip(actual, expected).map { abs(Double($0) - $1) / max(1, abs($1)) }.max() ?? 0
        XCTAssertLessThan(worst, 1e-6, "\(name): merged ≠ θ0 + αΣτ (worst relative error \(worst))")
    }
}

/// `tasks[].head`: a head from a file replaces the fitted one, is frozen, gives the zero-shot
/// accuracy the file's head gives on θ0, and belongs to the task's definition.
final class HeadFileRunTests: XCTestCase {
    func testAHeadFileIsTheTasksFrozenHead() throws {
        let workspace = try syntheticWorkspace("head-file")
        var random = RandomStream(seed: 9, label: "class embeddings")
        for name in workspace.taskNames {
            // The synthetic job's MLP has 8 features; 4 classes.
            try Safetensors.write([
                TensorRecord(name: "weight", shape: [4, 8], values: (0..<32).map { _ in Float(random.nextGaussian()) }),
                TensorRecord(name: "logit_scale", shape: [], values: [log(30)]),
            ], to: workspace.directory.appendingPathComponent("\(name)-head.safetensors"))
        }
        func text(output: String) -> String {
            workspace.jobText(output: output) { job in
                var job = job
                for name in workspace.taskNames {
                    job = job.replacingOccurrences(of: "  - name: \(name)\n    classes: 4\n",
                                                   with: "  - name: \(name)\n    classes: 4\n    head: \(name)-head.safetensors\n")
                }
                return job
            }
        }
        let plan = try workspace.plan(text(output: "out"))
        XCTAssertEqual(plan.tasks.compactMap(\.headFile).count, workspace.taskNames.count, "every task has its head file")
        let report = try workspace.run(plan, ranks: 2)

        let base = try workspace.read("out/base.safetensors")
        let backbone = plan.model.makeBackbone(maxBatch: 256)
        let parameters = FloatBuffer(count: backbone.layout.totalCount)
        try backbone.layout.load(base, into: parameters, origin: "base")
        for (index, name) in workspace.taskNames.enumerated() {
            let file = workspace.directory.appendingPathComponent("\(name)-head.safetensors")
            let head = try ZeroShotHeadFile.load(file, classes: 4, featureCount: 8, origin: name)
            XCTAssertEqual(try workspace.values("out/heads/\(name).safetensors")["head.weight"], head.parameters.array.prefix(32).map { $0 },
                           "the saved head is the file's, frozen")
            let data = try TaskDataLoader.load(plan.tasks[index], inputShape: backbone.inputShape, seed: plan.seed)
            XCTAssertEqual(report.tasks[index].zeroShotAccuracy,
                           Evaluation.accuracy(backbone: backbone, parameters: parameters, head: head, data: data.test), name)
        }
        // A different head file is a different task: its checksum is in the task's definition.
        let first = workspace.taskNames[0]
        try Safetensors.write([TensorRecord(name: "weight", shape: [4, 8], values: (0..<32).map { Float($0 + 1) })],
                              to: workspace.directory.appendingPathComponent("\(first)-head.safetensors"))
        let changed = try workspace.plan(text(output: "out"))
        XCTAssertNotEqual(changed.taskDefinitions[first], plan.taskDefinitions[first])
        XCTAssertEqual(changed.taskDefinitions[workspace.taskNames[1]], plan.taskDefinitions[workspace.taskNames[1]])
        // A normalisation must have one value per model input channel (this MLP: 1), or one.
        let first3 = "  - name: \(first)\n    classes: 4\n"
        XCTAssertThrowsError(try workspace.plan(text(output: "out").replacingOccurrences(
            of: first3, with: first3 + "    normalize: {mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2]}\n"))) { error in
            XCTAssertTrue("\(error)".contains("tasks[0].normalize") && "\(error)".contains("1 channel"), "\(error)")
        }
        let normalized = try workspace.plan(text(output: "out").replacingOccurrences(
            of: first3, with: first3 + "    normalize: {mean: [0.5], std: [0.2]}\n"))
        XCTAssertEqual(normalized.tasks[0].normalize, ChannelNormalization(mean: [0.5], std: [0.2]))
        XCTAssertNotEqual(normalized.taskDefinitions[first], changed.taskDefinitions[first], "normalisation is part of the definition")
        // A missing head file is one line naming its key.
        XCTAssertThrowsError(try workspace.plan(text(output: "out").replacingOccurrences(of: "\(first)-head", with: "nowhere"))) { error in
            XCTAssertTrue("\(error)".contains("tasks[0].head") && "\(error)".contains("nowhere.safetensors"), "\(error)")
        }
    }
}
