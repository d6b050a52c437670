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
    var results: [Int: TaskResult]
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
private struct JobAborted: Error {
    let underlying: any Error
}

/// Thrown out of a training step when the coordinator must end the job (not a task failure).
private struct SchedulerStop: Error, CustomStringConvertible {
    let underlying: any Error
    var description: String { "\(underlying)" }
}

final class TaskScheduler {
    /// Workers report progress at most this often (plus at the start and end of each task).
    static let progressInterval = 1.0

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
        } catch {
            let message = rank == 0 ? "\(error)" : "rank \(rank): \(error)"
            console.error(message)
            try communicator.abort(code: 1, message: message)
            throw error
        }
    }

    /// The log line's ending when a task fails.
    private var afterAFailure: String {
        plan.onTaskFailure == .skip ? "the other tasks go on (on_task_failure: skip)" : "no new tasks start (on_task_failure: abort)"
    }

    /// Rank 0's live row for `task`, trained on `rank`.
    private func show(_ progress: TrainingProgress, of task: String, on rank: Int) {
        console.progress?.update(.init(
            task: task, rank: rank, step: progress.step, steps: progress.steps, loss: progress.loss,
            orthoReg: progress.orthoReg, samplesPerSecond: progress.samplesPerSecond))
    }

    // MARK: Dynamic queue (tasks ≥ ranks)

    /// Rank 0: hands the next task (longest first) to whichever rank is free, trains tasks itself
    /// when `coordinatorTrains` (serving the queue between its own steps), records results, and
    /// names a worker that stays silent past the heartbeat timeout.
    private func coordinateQueue() throws -> TrainingOutcome {
        var outcome = TrainingOutcome(taskCount: plan.tasks.count)
        var pending = queueOrder
        var busy: [Int: (task: Int, heard: Date, step: Int, steps: Int)] = [:]
        var stopping = false
        console.info("scheduling \(plan.tasks.count) tasks on \(trainingRanks.count) training rank(s), longest first: "
            + pending.map { plan.tasks[$0].name }.joined(separator: ", "))

        func nextTask() -> Int? { stopping || pending.isEmpty ? nil : pending.removeFirst() }
        func assign(to worker: Int) throws {
            if let index = nextTask() {
                try communicator.send(ControlMessage.assignment(tasks: [plan.tasks[index].name], rank: worker).encoded(),
                                      to: worker, tag: ControlTag.toWorker)
                busy[worker] = (index, Date(), 0, plan.tasks[index].steps)
                console.verbose("\(plan.tasks[index].name) → rank \(worker)")
            } else {
                try communicator.send(ControlMessage.shutdown(success: !stopping).encoded(), to: worker, tag: ControlTag.toWorker)
            }
        }
        func taskIndex(_ name: String, from source: Int) throws -> Int {
            guard let index = plan.tasks.firstIndex(where: { $0.name == name }), busy[source]?.task == index else {
                throw OrthofuseError("rank \(source) reported on task '\(name)', which it was not assigned")
            }
            return index
        }
        func failed(_ index: Int, on source: Int, reason: String) {
            outcome.failures[index] = (source, reason)
            console.info("task '\(plan.tasks[index].name)' failed on rank \(source): \(reason); \(afterAFailure)")
            if plan.onTaskFailure == .abort { stopping = true }
        }
        /// Handles every pending message without blocking; then checks the heartbeats.
        func service() throws {
            while let source = try communicator.probe(from: nil, tag: ControlTag.toCoordinator) {
                let (_, bytes) = try communicator.receive(from: source, tag: ControlTag.toCoordinator)
                switch try ControlMessage.decode(bytes, from: "rank \(source)") {
                case let .progress(progress):
                    _ = try taskIndex(progress.task, from: source)
                    busy[source]?.heard = Date()
                    busy[source]?.step = progress.step
                    console.progress?.update(.init(
                        task: progress.task, rank: source, step: progress.step, steps: progress.steps, loss: progress.loss,
                        orthoReg: progress.orthoReg, samplesPerSecond: progress.samplesPerSecond))
                    console.verbose(String(format: "rank %d %@: step %d/%d loss %.4f %.0f samples/s", source, progress.task,
                                           progress.step, progress.steps, progress.loss, progress.samplesPerSecond))
                case let .result(result):
                    let index = try taskIndex(result.task, from: source)
                    outcome.owners[index] = source
                    try manifest?.record(plan.tasks[index], result: result, rank: source)
                    console.progress?.remove(task: result.task)
                    console.info(String(format: "%@ finished on rank %d: fine-tuned test accuracy %.2f%% (zero-shot %.2f%%), %.1f s",
                                        result.task, source, 100 * result.finetunedAccuracy, 100 * result.zeroShotAccuracy,
                                        result.trainSeconds))
                    busy[source] = nil
                    try assign(to: source)
                case let .failure(task, reason, _):
                    let index = try taskIndex(task, from: source)
                    console.progress?.remove(task: task)
                    failed(index, on: source, reason: reason)
                    busy[source] = nil
                    try assign(to: source)
                default:
                    throw OrthofuseError("rank \(source) sent an unexpected control message during training")
                }
            }
            try checkHeartbeats()
        }
        func checkHeartbeats() throws {
            guard plan.heartbeatTimeout > 0 else { return }
            let now = Date()
            // After its last step a worker evaluates without reporting (a large test split can
            // take long), so only training is timed.
            for (worker, state) in busy.sorted(by: { $0.key < $1.key })
            where state.step < state.steps && now.timeIntervalSince(state.heard) > plan.heartbeatTimeout {
                let message = String(
                    format: "rank %d sent nothing for %.3g s while fine-tuning '%@' (last at step %d/%d): it is hung or its host is unreachable (runtime.heartbeat_timeout: %g); ending the job, rerun to resume",
                    worker, now.timeIntervalSince(state.heard), plan.tasks[state.task].name, state.step, state.steps,
                    plan.heartbeatTimeout)
                console.error(message)
                do {
                    try communicator.abort(code: 3, message: message)
                } catch {
                    throw JobAborted(underlying: error)
                }
            }
        }

        // Rank 0 takes the first task itself, so with as many tasks as ranks task t runs on rank t.
        var own = plan.coordinatorTrains ? nextTask() : nil
        for worker in 1..<communicator.size { try assign(to: worker) }
        while true {
            if plan.coordinatorTrains, let index = own ?? nextTask() {
                own = nil
                let name = plan.tasks[index].name
                let onStep: (TrainingProgress) throws -> Void = { progress in
                    self.show(progress, of: name, on: 0)
                    do { try service() } catch { throw SchedulerStop(underlying: error) }
                }
                defer { console.progress?.remove(task: name) }
                let attempt = try trainLocally(index, onStep: onStep)
                file(attempt, index: index, into: &outcome)
                if case .failure = attempt, plan.onTaskFailure == .abort { stopping = true }
                try service()
            } else if busy.isEmpty {
                break
            } else {
                try service()
                usleep(1000)
            }
        }
        return outcome
    }

    /// Ranks other than 0: trains what rank 0 assigns until it says shut down; reports progress,
    /// results and failures as control messages.
    private func serveQueue() throws -> TrainingOutcome {
        var outcome = TrainingOutcome(taskCount: plan.tasks.count)
        while true {
            let (_, bytes) = try communicator.receive(from: 0, tag: ControlTag.toWorker)
            switch try ControlMessage.decode(bytes, from: "rank 0") {
            case let .assignment(names, _):
                for name in names {
                    guard let index = plan.tasks.firstIndex(where: { $0.name == name }) else {
                        throw OrthofuseError("rank 0 assigned an unknown task '\(name)'")
                    }
                    var lastReport = Date.distantPast
                    let onStep: (TrainingProgress) throws -> Void = { progress in
                        let now = Date()
                        guard progress.step <= 1 || progress.step == progress.steps
                            || now.timeIntervalSince(lastReport) >= Self.progressInterval else { return }
                        lastReport = now
                        let message = ControlMessage.progress(.init(
                            task: name, step: progress.step, steps: progress.steps, loss: progress.loss,
                            orthoReg: progress.orthoReg, samplesPerSecond: progress.samplesPerSecond))
                        do {
                            try self.communicator.send(message.encoded(), to: 0, tag: ControlTag.toCoordinator)
                        } catch {
                            throw SchedulerStop(underlying: error)
                        }
                    }
                    do {
                        // Loading the data and fitting the head can take long: report once they are
                        // done, so the heartbeat measures training from here.
                        let prepared = try worker.prepare(plan.tasks[index], finished: finished[index])
                        try onStep(TrainingProgress(step: 0, steps: plan.tasks[index].steps, loss: .nan, orthoReg: 0,
                                                    learningRate: 0, samplesPerSecond: 0, elapsedSeconds: 0))
                        let result = try worker.finish(prepared, finished: finished[index], onStep: onStep)
                        let summary = try saveOutputs(of: result, index: index)
                        outcome.results[index] = result
                        try communicator.send(ControlMessage.result(summary).encoded(), to: 0, tag: ControlTag.toCoordinator)
                    } catch let stop as SchedulerStop {
                        throw stop.underlying
                    } catch let error as TransportError {
                        throw error
                    } catch {
                        try communicator.send(ControlMessage.failure(task: name, reason: "\(error)", rank: rank).encoded(),
                                              to: 0, tag: ControlTag.toCoordinator)
                    }
                }
            case .shutdown:
                return outcome
            default:
                throw OrthofuseError("rank 0 sent an unexpected control message during training")
            }
        }
    }

    /// Trains task `index` on this rank alone and records it; a task error is returned as the
    /// task's failure reason, a coordinator stop is rethrown.
    private func trainLocally(_ index: Int, onStep: @escaping (TrainingProgress) throws -> Void)
        throws -> Result<TaskResult, TaskFailure> {
        do {
            let result = try worker.run(plan.tasks[index], finished: finished[index], onStep: onStep)
            let summary = try saveOutputs(of: result, index: index)
            try manifest?.record(plan.tasks[index], result: summary, rank: rank)
            return .success(result)
        } catch let stop as SchedulerStop {
            throw stop.underlying
        } catch let error as TransportError {
            throw error
        } catch {
            console.info("task '\(plan.tasks[index].name)' failed on rank \(rank): \(error); \(afterAFailure)")
            return .failure(TaskFailure(reason: "\(error)"))
        }
    }

    struct TaskFailure: Error {
        var reason: String
    }

    /// Files a local attempt's outcome.
    private func file(_ attempt: Result<TaskResult, TaskFailure>, index: Int, into outcome: inout TrainingOutcome) {
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
            let result = try PhaseAgreement.run(group) { () -> TaskResult in
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
    private func saveOutputs(of result: TaskResult, index: Int) throws -> ControlMessage.TaskResult {
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

    func record(_ task: TaskSpec, result: ControlMessage.TaskResult, rank: Int) throws {
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
