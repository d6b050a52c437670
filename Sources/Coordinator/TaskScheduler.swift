// TaskScheduler: steps 3–4 of the protocol: which rank fine-tunes which task (a dynamic queue on
// rank 0, or data-parallel groups when ranks outnumber tasks), task failures, heartbeats, and
// each finished task's files and manifest entry.
import ControlProtocol
import Core
import Reporting
import Foundation
import Transport
import Worker

/// What training left on this rank, and what every rank knows about the others.
struct TrainingOutcome {
    /// The tasks this rank owns (trained, or led the group that trained them), by task index.
    var results: [Int: TrainedTask]
    /// Task index → the rank that owns its result; nil for a failed task. The same on every rank.
    var owners: [Int?]
    /// Task index → (rank, reason) of each failed task; complete on rank 0.
    var failures: [Int: (rank: Int, reason: String)]

    /// Nothing trained yet, for `taskCount` tasks.
    init(taskCount: Int) {
        results = [:]
        owners = Array(repeating: nil, count: taskCount)
        failures = [:]
    }
}

/// The job was already aborted (and the reason printed) on this rank.
struct JobAborted: Error {
    let underlying: any Error
}

final class TaskScheduler {
    let plan: JobPlan
    let communicator: any Communicator
    let console: Console
    let worker: TaskWorker
    /// Tasks finished in an earlier run of this job, verified against the manifest, by index.
    let finished: [Int: TaskWorker.FinishedTask]
    /// Rank 0 only: records each finished task as it arrives.
    let manifest: ManifestKeeper?
    let metadata: [String: String]

    init(plan: JobPlan, communicator: any Communicator, console: Console, worker: TaskWorker,
         finished: [Int: TaskWorker.FinishedTask], manifest: ManifestKeeper?, metadata: [String: String]) {
        self.plan = plan
        self.communicator = communicator
        self.console = console
        self.worker = worker
        self.finished = finished
        self.manifest = manifest
        self.metadata = metadata
    }

    private var rank: Int { communicator.rank }
    private var trainingRanks: [Int] { Self.trainingRanks(plan: plan, worldSize: communicator.size) }

    /// Tasks by expected remaining work, longest first (ties in job order): finished tasks only
    /// need their evaluation, so they come last.
    var queueOrder: [Int] {
        plan.tasks.indices.sorted { a, b in
            let workA = finished[a] == nil ? plan.tasks[a].steps : 0
            let workB = finished[b] == nil ? plan.tasks[b].steps : 0
            return workA != workB ? workA > workB : a < b
        }
    }

    func run() throws -> TrainingOutcome {
        var outcome: TrainingOutcome
        if let groups = Self.dataParallelGroups(plan: plan, worldSize: communicator.size, finished: Set(finished.keys)) {
            outcome = try endingTheJobOnError { try runGroups(groups) }
        } else if communicator.size == 1 {
            outcome = TrainingOutcome(taskCount: plan.tasks.count)
            for index in queueOrder where outcome.failures.isEmpty || plan.onTaskFailure == .skip {
                let name = plan.tasks[index].name
                defer { console.progress?.remove(task: name) }
                file(try trainLocally(index, onStep: { self.show($0, of: name, on: 0) }), index: index, into: &outcome)
            }
        } else {
            outcome = try endingTheJobOnError { try rank == 0 ? coordinateQueue() : serveQueue() }
        }
        try agree(on: &outcome)
        return outcome
    }

    /// Runs a scheduling mode in which other ranks may be waiting on this one (for an assignment,
    /// a result, a gradient): an error that escapes it (a transport failure, a manifest that
    /// cannot be written) is printed here and ends the job on every rank with MPI_Abort, since
    /// the waiting ranks would otherwise hang.
    private func endingTheJobOnError<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let aborted as JobAborted {
            throw aborted.underlying
        } catch let preempted as TrainingPreempted {
            throw preempted
        } catch {
            let message = rank == 0 ? "\(error)" : "rank \(rank): \(error)"
            console.error(message)
            try communicator.abort(code: 1, message: message)
            throw error
        }
    }

    /// Rank 0's live row for `task`, trained on `rank`.
    private func show(_ progress: TrainingProgress, of task: String, on rank: Int) {
        console.progress?.update(.init(
            task: task, rank: rank, step: progress.step, steps: progress.steps, loss: progress.loss,
            orthoReg: progress.orthoReg, samplesPerSecond: progress.samplesPerSecond))
    }

    // MARK: Dynamic queue (tasks ≥ ranks)

    /// Rank 0: hands the next task (longest first) to whichever rank is free, trains tasks itself
    /// when `coordinatorTrains` (serving the queue between its own steps), and otherwise sleeps
    /// until a worker speaks (CoordinatorQueue holds the state and names a silent worker).
    private func coordinateQueue() throws -> TrainingOutcome {
        let queue = CoordinatorQueue(plan: plan, communicator: communicator, console: console, manifest: manifest,
                                     order: queueOrder)
        console.info("scheduling \(plan.tasks.count) tasks on \(trainingRanks.count) training rank(s), longest first: "
            + queueOrder.map { plan.tasks[$0].name }.joined(separator: ", "))
        // Rank 0 takes the first task itself, so with as many tasks as ranks task t runs on rank t.
        var own = plan.coordinatorTrains ? queue.nextTask() : nil
        for worker in 1..<communicator.size { try queue.assign(to: worker) }
        while true {
            if plan.coordinatorTrains, let index = own ?? queue.nextTask() {
                own = nil
                let name = plan.tasks[index].name
                defer { console.progress?.remove(task: name) }
                // The queue is served between this rank's own steps and between the chunks of its
                // evaluations and head fitting, so a worker that finishes meanwhile is not kept waiting.
                let serve = { do { try queue.service() } catch { throw TrainingInterrupted(underlying: error) } }
                let attempt = try trainLocally(index, betweenChunks: serve) { progress in
                    self.show(progress, of: name, on: 0)
                    try serve()
                }
                if case let .failure(failure) = attempt {
                    queue.failed(index, on: rank, reason: failure.reason)
                } else {
                    file(attempt, index: index, into: &queue.outcome)
                }
                try queue.service()
            } else if queue.hasBusyWorkers {
                try queue.waitAndService()
            } else {
                break
            }
        }
        return queue.outcome
    }

    /// Ranks other than 0: QueueWorker trains what rank 0 assigns until it says shut down.
    private func serveQueue() throws -> TrainingOutcome {
        var outcome = TrainingOutcome(taskCount: plan.tasks.count)
        outcome.results = try QueueWorker(tasks: plan.tasks, communicator: communicator, worker: worker,
                                          finished: finished, save: { try self.saveOutputs(of: $0, index: $1) }).serve()
        return outcome
    }

    /// Trains task `index` on this rank alone and records it; a task error is returned as the
    /// task's failure reason, a coordinator stop is rethrown.
    private func trainLocally(_ index: Int, betweenChunks: @escaping BetweenChunks = {},
                              onStep: @escaping (TrainingProgress) throws -> Void)
        throws -> Result<TrainedTask, TaskFailure> {
        do {
            let result = try worker.run(plan.tasks[index], finished: finished[index], onStep: onStep,
                                        betweenChunks: betweenChunks)
            let summary = try saveOutputs(of: result, index: index)
            try manifest?.record(plan.tasks[index], result: summary, rank: rank)
            return .success(result)
        } catch let stop as TrainingInterrupted {
            throw stop.underlying
        } catch let preempted as TrainingPreempted {
            throw preempted
        } catch let error as TransportError {
            throw error
        } catch {
            console.info("task '\(plan.tasks[index].name)' failed on rank \(rank): \(error); \(plan.afterATaskFailure)")
            return .failure(TaskFailure(reason: "\(error)"))
        }
    }

    struct TaskFailure: Error {
        var reason: String
    }

    /// Files a local attempt's outcome.
    private func file(_ attempt: Result<TrainedTask, TaskFailure>, index: Int, into outcome: inout TrainingOutcome) {
        switch attempt {
        case let .success(result):
            outcome.results[index] = result
            outcome.owners[index] = rank
        case let .failure(failure):
            outcome.failures[index] = (rank, failure.reason)
        }
    }

    // MARK: Data-parallel groups (ranks > tasks)

    /// One group per task, contiguous ranks; nil when the queue is used instead (no more training
    /// ranks than tasks). Spare ranks go, one at a time, to the task with the most work per rank,
    /// up to `finetune.micro_batches` ranks per task (a group splits each batch's micro-batches).
    static func dataParallelGroups(plan: JobPlan, worldSize: Int, finished: Set<Int>) -> [(task: Int, ranks: [Int])]? {
        let ranks = trainingRanks(plan: plan, worldSize: worldSize)
        guard ranks.count > plan.tasks.count, worldSize > 1 else { return nil }
        var sizes = [Int](repeating: 1, count: plan.tasks.count)
        let cap = max(1, plan.finetune.microBatches)
        for _ in 0..<(ranks.count - plan.tasks.count) {
            let candidates = plan.tasks.indices.filter { sizes[$0] < cap && !finished.contains($0) }
            // The most steps per rank; ties go to the earlier task.
            guard let best = candidates.max(by: { a, b in
                let perRankA = Double(plan.tasks[a].steps) / Double(sizes[a])
                let perRankB = Double(plan.tasks[b].steps) / Double(sizes[b])
                return perRankA != perRankB ? perRankA < perRankB : a > b
            }) else { break }
            sizes[best] += 1
        }
        var cursor = 0
        return plan.tasks.indices.map { index in
            defer { cursor += sizes[index] }
            return (index, Array(ranks[cursor..<(cursor + sizes[index])]))
        }
    }

    static func trainingRanks(plan: JobPlan, worldSize: Int) -> [Int] {
        plan.coordinatorTrains || worldSize == 1 ? Array(0..<worldSize) : Array(1..<worldSize)
    }

    private func runGroups(_ groups: [(task: Int, ranks: [Int])]) throws -> TrainingOutcome {
        var outcome = TrainingOutcome(taskCount: plan.tasks.count)
        if rank == 0 {
            let used = groups.reduce(0) { $0 + $1.ranks.count }
            let table = groups.map { "\(plan.tasks[$0.task].name)→\($0.ranks.count == 1 ? "\($0.ranks[0])" : "\($0.ranks.first!)–\($0.ranks.last!)")" }
            console.info("data-parallel groups (task→ranks): \(table.joined(separator: ", "))")
            if used < trainingRanks.count {
                console.info("\(trainingRanks.count - used) rank(s) idle: each task uses at most finetune.micro_batches = \(plan.finetune.microBatches) rank(s); raise it (a divisor of batch_size) to use them")
            }
        }
        let mine = groups.firstIndex { $0.ranks.contains(rank) }
        guard let group = try communicator.split(color: mine, key: rank) else { return outcome }
        let index = groups[mine!].task
        let task = plan.tasks[index]
        let leads = group.rank == 0
        do {
            // One agreement after loading (a member that cannot read the data must not leave the
            // others waiting in the gradient exchange) and one after training.
            let prepared = try PhaseAgreement.run(group) { try worker.prepare(task, finished: finished[index]) }
            let result = try PhaseAgreement.run(group) { () -> TrainedTask in
                let gradientGroup = group.size > 1 ? CommunicatorGradientGroup(communicator: group) : nil
                let result = try worker.finish(prepared, group: gradientGroup, finished: finished[index])
                if leads {
                    let summary = try saveOutputs(of: result, index: index)
                    if rank == 0 { try manifest?.record(task, result: summary, rank: rank) }
                    pendingSummaries[index] = summary
                }
                return result
            }
            if leads {
                outcome.results[index] = result
                outcome.owners[index] = rank
            }
        } catch is PeerFailure {
            // The group leader holds the reason.
        } catch let preempted as TrainingPreempted {
            throw preempted
        } catch let error as TransportError {
            throw error
        } catch {
            if leads { outcome.failures[index] = (rank, "\(error)") }
        }
        return outcome
    }

    /// Group leaders other than rank 0: their task summaries, sent to rank 0 after training.
    private var pendingSummaries: [Int: ControlMessage.TaskResult] = [:]

    // MARK: Agreement

    /// Every rank learns each task's owner and which failed; rank 0 also gets every failure's
    /// reason and every group leader's result summary (for the manifest).
    private func agree(on outcome: inout TrainingOutcome) throws {
        let count = plan.tasks.count
        // [owner + 1 | failure holder + 1 | summary holder + 1] per task, summed over ranks.
        var slots = [Double](repeating: 0, count: 3 * count)
        for (index, _) in outcome.results { slots[index] = Double(rank + 1) }
        if rank != 0 {
            for index in outcome.failures.keys { slots[count + index] = Double(rank + 1) }
            for index in pendingSummaries.keys { slots[2 * count + index] = Double(rank + 1) }
        }
        slots = try communicator.allReduce(slots, .sum)
        outcome.owners = (0..<count).map { slots[$0] > 0 ? Int(slots[$0]) - 1 : nil }
        if rank == 0 {
            for index in 0..<count where slots[count + index] > 0 {
                let source = Int(slots[count + index]) - 1
                let (_, bytes) = try communicator.receive(from: source, tag: ControlTag.endOfTraining)
                guard case let .failure(_, reason, _) = try ControlMessage.decode(bytes, from: "rank \(source)") else {
                    throw OrthofuseError("rank \(source) sent an unexpected message instead of a task failure")
                }
                outcome.failures[index] = (source, reason)
            }
            for index in 0..<count where slots[2 * count + index] > 0 {
                let source = Int(slots[2 * count + index]) - 1
                let (_, bytes) = try communicator.receive(from: source, tag: ControlTag.endOfTraining)
                guard case let .result(summary) = try ControlMessage.decode(bytes, from: "rank \(source)") else {
                    throw OrthofuseError("rank \(source) sent an unexpected message instead of a task result")
                }
                try manifest?.record(plan.tasks[index], result: summary, rank: source)
            }
        } else {
            for (index, failure) in outcome.failures.sorted(by: { $0.key < $1.key }) {
                try communicator.send(ControlMessage.failure(task: plan.tasks[index].name, reason: failure.reason,
                                                             rank: rank).encoded(), to: 0, tag: ControlTag.endOfTraining)
            }
            for (_, summary) in pendingSummaries.sorted(by: { $0.key < $1.key }) {
                try communicator.send(ControlMessage.result(summary).encoded(), to: 0, tag: ControlTag.endOfTraining)
            }
        }
        // A task is failed for everyone when no rank owns it.
        if rank != 0 { outcome.failures = [:] }
    }

    // MARK: Outputs

    /// Writes a finished task's vector and head (atomically) unless they are the verified files
    /// of an earlier run, and summarises it for the coordinator and the manifest.
    private func saveOutputs(of result: TrainedTask, index: Int) throws -> ControlMessage.TaskResult {
        let task = plan.tasks[index]
        let fileChecksums: (vector: String, head: String)
        if let finished = finished[index] {
            fileChecksums = (finished.taskVectorSHA256, finished.headSHA256)
        } else {
            let directory = RunDirectory(plan.output)
            var vectorMetadata = metadata
            vectorMetadata["orthofuse.kind"] = "task_vector"
            vectorMetadata["orthofuse.task"] = task.name
            vectorMetadata["orthofuse.mode"] = plan.mode.rawValue
            vectorMetadata["orthofuse.orthoreg_lambda"] = "\(plan.finetune.orthoReg.lambda)"
            vectorMetadata["orthofuse.orthoreg_form"] = plan.finetune.orthoReg.form.rawValue
            var headMetadata = metadata
            headMetadata["orthofuse.kind"] = "head"
            headMetadata["orthofuse.task"] = task.name
            headMetadata["orthofuse.classes"] = "\(task.classes)"
            let vectorBytes = try Safetensors.encode(plan.model.layout.records(from: result.taskVector), metadata: vectorMetadata)
            let headBytes = try Safetensors.encode(result.head.layout.records(from: result.head.parameters), metadata: headMetadata)
            try AtomicFile.write(vectorBytes, to: directory.taskVector(task.name))
            try AtomicFile.write(headBytes, to: directory.head(task.name))
            fileChecksums = (Checksum.sha256(vectorBytes), Checksum.sha256(headBytes))
        }
        return ControlMessage.TaskResult(
            task: task.name, zeroShotAccuracy: result.entry.zeroShotAccuracy, finetunedAccuracy: result.entry.finetunedAccuracy,
            taskVectorSHA256: Checksum.sha256(result.taskVector), resumedFromStep: result.entry.resumedFromStep,
            taskVectorFileSHA256: fileChecksums.vector, headFileSHA256: fileChecksums.head,
            finalLoss: result.entry.finalLoss, trainSeconds: result.entry.trainSeconds)
    }
}

extension JobPlan {
    /// The log line's ending when a task fails.
    var afterATaskFailure: String {
        onTaskFailure == .skip ? "the other tasks go on (on_task_failure: skip)" : "no new tasks start (on_task_failure: abort)"
    }
}
