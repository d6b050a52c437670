// SchedulingTests: the dynamic task queue, data-parallel groups, task failures, heartbeats and the
// run manifest, on in-process ranks: results never depend on how the tasks were scheduled.
import Foundation
import XCTest
@testable import Coordinator
@testable import Core
@testable import Reporting
import TestSupport
import Transport
import Worker

final class SchedulingTests: XCTestCase {
    private func workspace(tasks: Int = 3) throws -> SyntheticWorkspace {
        try syntheticWorkspace("scheduling", taskCount: tasks)
    }

    private func assertSameTaskVectors(_ workspace: SyntheticWorkspace, _ output: String, _ reference: String,
                                       file: StaticString = #filePath, line: UInt = #line) throws {
        for name in workspace.taskNames {
            XCTAssertEqual(try workspace.values("\(output)/task_vectors/\(name).safetensors"),
                           try workspace.values("\(reference)/task_vectors/\(name).safetensors"),
                           "task vector \(name): \(output) vs \(reference)", file: file, line: line)
        }
        XCTAssertEqual(try workspace.values("\(output)/merged/task_arithmetic.safetensors"),
                       try workspace.values("\(reference)/merged/task_arithmetic.safetensors"), file: file, line: line)
    }

    func testFiveTasksOnTwoRanksShareAQueueAndMatchOneRank() throws {
        let workspace = try workspace(tasks: 5)
        let single = try workspace.run(workspace.plan(workspace.jobText(output: "np1")), ranks: 1)
        let queued = try workspace.run(workspace.plan(workspace.jobText(output: "np2")), ranks: 2)
        try assertSameTaskVectors(workspace, "np2", "np1")
        XCTAssertEqual(queued.tasks.map(\.finetunedAccuracy), single.tasks.map(\.finetunedAccuracy))
        XCTAssertEqual(Set(queued.tasks.map(\.rank)), [0, 1], "both ranks trained tasks")
        XCTAssertEqual(queued.tasks.map(\.name), workspace.taskNames, "the report keeps job order")
        // Rank 0 may coordinate only.
        _ = try workspace.run(workspace.plan(workspace.jobText(output: "np3", extra: "runtime: {coordinator_trains: false}")),
                              ranks: 3)
        try assertSameTaskVectors(workspace, "np3", "np1")
    }

    /// Rank 0 serves the queue between the chunks of its own task's head fitting and evaluations
    /// (not only between its steps): the worker calls the hook after every chunk, and a throw
    /// from it (the coordinator stopping) ends the task.
    func testTheWorkerCallsBetweenChunksInEveryEvaluationAndStopsOnAThrow() throws {
        let workspace = try workspace(tasks: 1)
        let plan = try workspace.plan(workspace.jobText(output: "hook"))
        func worker() -> TaskWorker {
            TaskWorker(backbone: plan.model.makeBackbone(maxBatch: plan.finetune.batchSize),
                       base: FloatBuffer(count: plan.model.layout.totalCount), seed: plan.seed,
                       finetune: plan.finetune, probe: plan.probe, console: Console(level: .quiet))
        }
        var calls = 0
        let trained = try worker().run(plan.tasks[0], betweenChunks: { calls += 1 })
        let chunk = plan.model.makeBackbone(maxBatch: plan.finetune.batchSize).cacheBlock
        func chunks(_ data: Dataset) -> Int { (data.count + chunk - 1) / chunk }
        // Probe features of the training split, then θ0 and the fine-tuned model on test and validation.
        XCTAssertEqual(calls, chunks(trained.data.train) + 2 * (chunks(trained.data.test) + chunks(trained.data.validation)))

        struct Stop: Error {}
        XCTAssertThrowsError(try worker().run(plan.tasks[0], betweenChunks: { throw Stop() })) { error in
            XCTAssertTrue(error is Stop, "\(error)")
        }
    }

    func testTasksWithTheirOwnStepsRunLongestFirst() throws {
        let workspace = try workspace(tasks: 3)
        func text(_ output: String) -> String {
            workspace.jobText(output: output) {
                $0.replacingOccurrences(of: "task1/test-labels.idx}", with: "task1/test-labels.idx}\n    steps: 80")
                    .replacingOccurrences(of: "task2/test-labels.idx}", with: "task2/test-labels.idx}\n    steps: 20")
            }
        }
        let plan = try workspace.plan(text("np1"))
        XCTAssertEqual(plan.tasks.map(\.steps), [40, 80, 20])
        XCTAssertNotNil(plan.canonicalJob.range(of: "steps: 80"), "the override is part of the job text")
        let worker = TaskWorker(backbone: plan.model.makeBackbone(maxBatch: 16), base: FloatBuffer(count: plan.model.layout.totalCount),
                                seed: plan.seed, finetune: plan.finetune, probe: plan.probe, console: Console(level: .quiet))
        let scheduler = TaskScheduler(plan: plan, communicator: InProcessWorld(size: 1).communicator(rank: 0),
                                      console: Console(level: .quiet), worker: worker, finished: [:], manifest: nil, metadata: [:])
        XCTAssertEqual(scheduler.queueOrder, [1, 0, 2], "longest first")
        // Spare ranks go where the most steps per rank remain: 80 steps on 2 ranks ties 40 on 1 (the
        // earlier task wins), then the 80-step task gets a third.
        let shared = try workspace.plan(text("x").replacingOccurrences(of: "  mode: full", with: "  mode: full\n  micro_batches: 4"))
        XCTAssertEqual(TaskScheduler.dataParallelGroups(plan: shared, worldSize: 5, finished: [])?.map(\.ranks.count), [2, 2, 1])
        XCTAssertEqual(TaskScheduler.dataParallelGroups(plan: shared, worldSize: 6, finished: [])?.map(\.ranks.count), [2, 3, 1])
        _ = try workspace.run(plan, ranks: 1)
        _ = try workspace.run(workspace.plan(text("np2")), ranks: 2)
        try assertSameTaskVectors(workspace, "np2", "np1")
        let rerun = try workspace.run(workspace.plan(text("np2")), ranks: 2)
        XCTAssertEqual(rerun.tasks.map(\.resumedFromStep), [40, 80, 20])
        XCTAssertThrowsError(try workspace.plan(workspace.jobText(output: "x") {
            $0.replacingOccurrences(of: "task2/test-labels.idx}", with: "task2/test-labels.idx}\n    steps: 3")
        })) { error in
            XCTAssertTrue("\(error)".contains("fewer than finetune.schedule.warmup_steps (5)"), "\(error)")
        }
    }

    func testSpareRanksTrainAsDataParallelGroupsWithTheSameResult() throws {
        let workspace = try workspace(tasks: 3)
        func text(_ output: String) -> String {
            workspace.jobText(output: output) { $0.replacingOccurrences(of: "  mode: full", with: "  mode: full\n  micro_batches: 4") }
        }
        _ = try workspace.run(workspace.plan(text("np1")), ranks: 1)
        let grouped = try workspace.run(workspace.plan(text("np5")), ranks: 5)
        try assertSameTaskVectors(workspace, "np5", "np1")
        XCTAssertEqual(grouped.tasks.map(\.rank), [0, 2, 4], "groups {0,1}, {2,3}, {4}: the leaders own the tasks")
        // With one micro-batch per batch a task cannot be shared: the spare rank idles, same results.
        let idle = try workspace.run(workspace.plan(workspace.jobText(output: "np4")), ranks: 4)
        XCTAssertEqual(idle.tasks.map(\.rank), [0, 1, 2])
        _ = try workspace.run(workspace.plan(workspace.jobText(output: "plain1")), ranks: 1)
        try assertSameTaskVectors(workspace, "np4", "plain1")
        let plan = try workspace.plan(text("x"))
        XCTAssertEqual(TaskScheduler.dataParallelGroups(plan: plan, worldSize: 8, finished: [])?.map(\.ranks),
                       [[0, 1, 2], [3, 4, 5], [6, 7]])
        XCTAssertEqual(TaskScheduler.dataParallelGroups(plan: plan, worldSize: 20, finished: [1])?.map(\.ranks.count),
                       [4, 1, 4], "at most micro_batches ranks per task; a finished task needs one")
        XCTAssertNil(TaskScheduler.dataParallelGroups(plan: plan, worldSize: 3, finished: []), "as many ranks as tasks: the queue")
    }

    func testAFailedTaskIsSkippedOrEndsTheJob() throws {
        let workspace = try workspace(tasks: 3)
        // A train file that exists but is not IDX: the task fails when its worker loads it.
        try Data("not an idx file".utf8).write(to: workspace.directory.appendingPathComponent("task1/test-labels.idx"))
        let skipped = try workspace.run(workspace.plan(workspace.jobText(output: "skip", extra: "runtime: {on_task_failure: skip}")),
                                        ranks: 2)
        XCTAssertEqual(skipped.tasks.map(\.name), ["task0", "task2"])
        XCTAssertEqual(skipped.failedTasks?.map(\.name), ["task1"])
        XCTAssertTrue(skipped.failedTasks?.first?.reason.contains("test-labels.idx") ?? false, "\(skipped.failedTasks ?? [])")
        XCTAssertEqual(skipped.merges[0].perTask.map(\.name), ["task0", "task2"])
        XCTAssertTrue(skipped.table().contains("task1: FAILED"))

        for ranks in [1, 2] {
            XCTAssertThrowsError(try workspace.run(workspace.plan(workspace.jobText(output: "abort\(ranks)")), ranks: ranks)) { error in
                XCTAssertTrue("\(error)".hasPrefix("task 'task1' failed on rank"), "\(error)")
                XCTAssertTrue("\(error)".contains("rerun to resume"), "\(error)")
                // A task the aborted queue never handed out is not blamed.
                XCTAssertFalse("\(error)".contains("unknown reason") || "\(error)".contains("rank -1"), "\(error)")
            }
        }
        // Nothing of the finished tasks is lost: their files and manifest entries exist.
        let manifest = try XCTUnwrap(RunManifest.read(in: workspace.directory.appendingPathComponent("abort2")))
        XCTAssertFalse(manifest.tasks.isEmpty)
        XCTAssertNil(manifest.tasks["task1"])
    }

    func testARerunSkipsVerifiedTasksAndRefusesAnotherJob() throws {
        let workspace = try workspace(tasks: 3)
        let text = workspace.jobText(output: "run")
        let first = try workspace.run(workspace.plan(text), ranks: 2)
        let firstVectors = try workspace.taskNames.map { try workspace.values("run/task_vectors/\($0).safetensors") }

        let second = try workspace.run(workspace.plan(text), ranks: 3)
        XCTAssertEqual(second.tasks.map(\.resumedFromStep), [40, 40, 40], "nothing retrained")
        XCTAssertEqual(second.tasks.map(\.finalLoss), first.tasks.map(\.finalLoss), "the final loss comes from the manifest")
        XCTAssertTrue(second.tasks.allSatisfy { $0.finalLoss.isFinite })
        XCTAssertEqual(second.merges[0].perTask.map(\.accuracy), first.merges[0].perTask.map(\.accuracy))

        // A damaged task vector fails its checksum and is rebuilt (from the final checkpoint): same bits.
        let damaged = workspace.directory.appendingPathComponent("run/task_vectors/task2.safetensors")
        var bytes = try Data(contentsOf: damaged)
        bytes[bytes.count - 1] ^= 0x40
        try bytes.write(to: damaged)
        _ = try workspace.run(workspace.plan(text), ranks: 1)
        XCTAssertEqual(try workspace.taskNames.map { try workspace.values("run/task_vectors/\($0).safetensors") }, firstVectors)

        // Another training setting into the same output is refused, naming what differs.
        let changed = text.replacingOccurrences(of: "lr: 5.0e-3", with: "lr: 4.0e-3")
        XCTAssertNotEqual(changed, text)
        XCTAssertThrowsError(try workspace.run(workspace.plan(changed), ranks: 2)) { error in
            XCTAssertTrue("\(error)".contains("finetune differ"), "\(error)")
            XCTAssertTrue("\(error)".contains("another output directory"), "\(error)")
        }
        // Merge settings may change: the tasks are reused.
        let remerged = try workspace.run(workspace.plan(text.replacingOccurrences(
            of: "methods: [task_arithmetic]", with: "methods: [task_arithmetic, ties]")), ranks: 2)
        XCTAssertEqual(remerged.tasks.map(\.resumedFromStep), [40, 40, 40])
        XCTAssertEqual(remerged.merges.count, 2)

        // --resume needs something to resume.
        var plan = try workspace.plan(workspace.jobText(output: "empty"))
        plan.requiresResume = true
        XCTAssertThrowsError(try workspace.run(plan, ranks: 1)) { error in
            XCTAssertTrue("\(error)".contains("nothing to resume"), "\(error)")
        }
    }

    func testAnotherBaseIntoTheSameOutputIsRefusedOnEveryRank() throws {
        let workspace = try workspace(tasks: 2)
        _ = try workspace.run(workspace.plan(workspace.jobText(output: "first")), ranks: 1)
        let baseFile = workspace.directory.appendingPathComponent("base.safetensors")
        try FileManager.default.copyItem(at: workspace.directory.appendingPathComponent("first/base.safetensors"), to: baseFile)
        func text() -> String {
            workspace.jobText(output: "run") { text in
                text.split(separator: "\n", omittingEmptySubsequences: false)
                    .map { $0.hasPrefix("pretrain:") ? "base: base.safetensors" : String($0) }.joined(separator: "\n")
            }
        }
        _ = try workspace.run(workspace.plan(text()), ranks: 2)
        // Same job text, other weights in the base file.
        let file = try Safetensors.read(baseFile)
        try Safetensors.write(file.tensors.map { TensorRecord(name: $0.name, shape: $0.shape, values: $0.values.map { $0 * 0.5 }) },
                              to: baseFile)
        XCTAssertThrowsError(try workspace.run(workspace.plan(text()), ranks: 2)) { error in
            XCTAssertTrue("\(error)".contains("trained from another θ0"), "\(error)")
        }
    }

    func testAPretrainedBaseIsReusedByARerunAndSavedByPretrain() throws {
        let workspace = try workspace(tasks: 2)
        let plan = try workspace.plan(workspace.jobText(output: "run"))
        _ = try workspace.run(plan, ranks: 1)
        // The run's θ0 file keeps the pre-training cache key, so `pretrain` (and a rerun) reuse it.
        let cached = try workspace.read("run/base.safetensors")
        XCTAssertNotNil(cached.metadata["orthofuse.pretrain_fingerprint"])
        let destination = workspace.directory.appendingPathComponent("models/theta0.safetensors")
        let world = InProcessWorld(size: 1)
        let summary = try BasePretraining.run(plan: plan, to: destination, replacing: false,
                                              communicator: world.communicator(rank: 0), console: Console(level: .quiet))
        XCTAssertTrue(summary?.contains("reused") == true, summary ?? "nil")
        let saved = try Safetensors.read(destination)
        XCTAssertEqual(saved.tensors.map(\.values), cached.tensors.map(\.values))
        // An existing file is not replaced without asking.
        XCTAssertThrowsError(try BasePretraining.run(plan: plan, to: destination, replacing: false,
                                                     communicator: world.communicator(rank: 0), console: Console(level: .quiet))) { error in
            XCTAssertTrue("\(error)".contains("exists"), "\(error)")
        }
        // A job with a base file has nothing to pre-train.
        let withBase = workspace.jobText(output: "other") { text in
            text.split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.hasPrefix("pretrain:") ? "base: models/theta0.safetensors" : String($0) }.joined(separator: "\n")
        }
        XCTAssertThrowsError(try BasePretraining.run(plan: workspace.plan(withBase), to: destination, replacing: true,
                                                     communicator: world.communicator(rank: 0), console: Console(level: .quiet))) { error in
            XCTAssertTrue("\(error)".contains("no pretrain: section"), "\(error)")
        }
    }

    func testASilentWorkerIsNamedAfterTheHeartbeatTimeout() throws {
        let workspace = try workspace(tasks: 3)
        // Any worker is silent longer than 0.1 ms while it loads its data.
        let plan = try workspace.plan(workspace.jobText(output: "hb", extra: "runtime: {heartbeat_timeout: 0.0001}"))
        XCTAssertThrowsError(try workspace.run(plan, ranks: 3)) { error in
            XCTAssertTrue("\(error)".contains("sent nothing for"), "\(error)")
            XCTAssertTrue("\(error)".contains("heartbeat_timeout"), "\(error)")
        }
    }
}
