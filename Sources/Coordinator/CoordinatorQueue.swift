// CoordinatorQueue: rank 0's side of the dynamic queue (protocol step 3) as one state: the tasks
// still waiting, what each worker trains and when it was last heard, and what training has left.
import ControlProtocol
import Core
import Foundation
import Reporting
import Transport
import Worker

final class CoordinatorQueue {
    /// A worker's current task, and the last word from it.
    struct Assignment {
        let task: Int
        var heard: Date
        var step: Int
        let steps: Int
    }

    let plan: JobPlan
    let communicator: any Communicator
    let console: Console
    let manifest: ManifestKeeper?
    /// What rank 0 has learned so far: results it owns, workers' owners, every failure.
    var outcome: TrainingOutcome
    private var pending: [Int]
    private var busy: [Int: Assignment] = [:]
    /// No new task starts (a task failed under on_task_failure: abort).
    private var stopping = false

    init(plan: JobPlan, communicator: any Communicator, console: Console, manifest: ManifestKeeper?, order: [Int]) {
        self.plan = plan
        self.communicator = communicator
        self.console = console
        self.manifest = manifest
        outcome = TrainingOutcome(taskCount: plan.tasks.count)
        pending = order
    }

    var hasBusyWorkers: Bool { !busy.isEmpty }

    /// The next task to start, longest first; nil once the queue is empty or stopping.
    func nextTask() -> Int? { stopping || pending.isEmpty ? nil : pending.removeFirst() }

    /// Sends `worker` its next task, or Shutdown when there is none.
    func assign(to worker: Int) throws {
        guard let index = nextTask() else {
            try communicator.send(ControlMessage.shutdown(success: !stopping).encoded(), to: worker, tag: ControlTag.toWorker)
            return
        }
        let task = plan.tasks[index]
        try communicator.send(ControlMessage.assignment(tasks: [task.name], rank: worker).encoded(),
                              to: worker, tag: ControlTag.toWorker)
        busy[worker] = Assignment(task: index, heard: Date(), step: 0, steps: task.steps)
        console.verbose("\(task.name) → rank \(worker)")
    }

    /// A task failed (on `rank`): recorded, and under on_task_failure: abort no new task starts.
    func failed(_ index: Int, on rank: Int, reason: String) {
        outcome.failures[index] = (rank, reason)
        if plan.onTaskFailure == .abort { stopping = true }
    }

    /// Handles every pending message without blocking, then checks the heartbeats.
    func service() throws {
        while let source = try communicator.probe(from: nil, tag: ControlTag.toCoordinator) {
            try receive(from: source)
        }
        try checkHeartbeats()
    }

    /// With nothing to train itself: sleeps until a worker speaks (at most until the next
    /// heartbeat check is due), then serves.
    func waitAndService() throws {
        let checkEvery = plan.heartbeatTimeout > 0 ? min(1, plan.heartbeatTimeout / 2) : 1
        if let source = try communicator.waitForMessage(tag: ControlTag.toCoordinator, timeout: checkEvery) {
            try receive(from: source)
        }
        try service()
    }

    private func receive(from source: Int) throws {
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
            console.info("task '\(task)' failed on rank \(source): \(reason); \(plan.afterATaskFailure)")
            failed(index, on: source, reason: reason)
            busy[source] = nil
            try assign(to: source)
        default:
            throw OrthofuseError("rank \(source) sent an unexpected control message during training")
        }
    }

    private func taskIndex(_ name: String, from source: Int) throws -> Int {
        guard let index = plan.tasks.firstIndex(where: { $0.name == name }), busy[source]?.task == index else {
            throw OrthofuseError("rank \(source) reported on task '\(name)', which it was not assigned")
        }
        return index
    }

    /// MPI_Abort's code when a worker went silent: cluster/launch.sh --max-restarts retries on it.
    static let hungWorkerAbortCode: Int32 = 3

    /// Names a worker silent past the heartbeat timeout and ends the job (a hung rank cannot join
    /// any collective; the rerun resumes). After its last step a worker evaluates without
    /// reporting (a large test split can take long), so only training is timed.
    private func checkHeartbeats() throws {
        guard plan.heartbeatTimeout > 0 else { return }
        let now = Date()
        for (worker, state) in busy.sorted(by: { $0.key < $1.key })
        where state.step < state.steps && now.timeIntervalSince(state.heard) > plan.heartbeatTimeout {
            let message = String(
                format: "rank %d sent nothing for %.3g s while fine-tuning '%@' (last at step %d/%d): it is hung or its host is unreachable (runtime.heartbeat_timeout: %g); ending the job, rerun to resume",
                worker, now.timeIntervalSince(state.heard), plan.tasks[state.task].name, state.step, state.steps,
                plan.heartbeatTimeout)
            console.error(message)
            do {
                try communicator.abort(code: Self.hungWorkerAbortCode, message: message)
            } catch {
                throw JobAborted(underlying: error)
            }
        }
    }
}
