// QueueWorker: a worker's side of the dynamic queue (protocol step 3): train what rank 0 assigns
// until it says shut down, reporting progress, each result and each failure as control messages.
import ControlProtocol
import Core
import Foundation
import Transport

public final class QueueWorker {
    /// Progress goes to rank 0 at most this often (plus at the start and end of each task).
    public static let progressInterval = 1.0

    let tasks: [TaskPlan]
    let communicator: any Communicator
    let worker: TaskWorker
    let finished: [Int: TaskWorker.FinishedTask]
    /// Writes a finished task's files and returns what rank 0 records of it.
    let save: (TrainedTask, Int) throws -> ControlMessage.TaskResult

    public init(tasks: [TaskPlan], communicator: any Communicator, worker: TaskWorker,
                finished: [Int: TaskWorker.FinishedTask],
                save: @escaping (TrainedTask, Int) throws -> ControlMessage.TaskResult) {
        self.tasks = tasks
        self.communicator = communicator
        self.worker = worker
        self.finished = finished
        self.save = save
    }

    /// Serves until Shutdown; returns the tasks this rank trained, by index. A task's error is
    /// sent as its Failure; a transport error ends the serving.
    public func serve() throws -> [Int: TrainedTask] {
        var results: [Int: TrainedTask] = [:]
        while true {
            let (_, bytes) = try communicator.receive(from: 0, tag: ControlTag.toWorker)
            switch try ControlMessage.decode(bytes, from: "rank 0") {
            case let .assignment(names, _):
                for name in names {
                    guard let index = tasks.firstIndex(where: { $0.name == name }) else {
                        throw OrthofuseError("rank 0 assigned an unknown task '\(name)'")
                    }
                    if let result = try train(index) { results[index] = result }
                }
            case .shutdown:
                return results
            default:
                throw OrthofuseError("rank 0 sent an unexpected control message during training")
            }
        }
    }

    /// Trains task `index` and sends its result, or sends its failure and returns nil.
    private func train(_ index: Int) throws -> TrainedTask? {
        let task = tasks[index]
        let report = progressReporter(for: task.name)
        do {
            // Loading the data and fitting the head can take long: report once they are done, so
            // the heartbeat measures training from here.
            let prepared = try worker.prepare(task, finished: finished[index])
            try report(TrainingProgress(step: 0, steps: task.steps, loss: .nan, orthoReg: 0, learningRate: 0,
                                        samplesPerSecond: 0, elapsedSeconds: 0))
            let result = try worker.finish(prepared, finished: finished[index], onStep: report)
            let summary = try save(result, index)
            try communicator.send(ControlMessage.result(summary).encoded(), to: 0, tag: ControlTag.toCoordinator)
            return result
        } catch let stop as TrainingInterrupted {
            throw stop.underlying
        } catch let preempted as TrainingPreempted {
            throw preempted
        } catch let error as TransportError {
            throw error
        } catch {
            try communicator.send(ControlMessage.failure(task: task.name, reason: "\(error)", rank: communicator.rank).encoded(),
                                  to: 0, tag: ControlTag.toCoordinator)
            return nil
        }
    }

    /// Sends Progress for the first step, the last, and at most every `progressInterval` between.
    private func progressReporter(for task: String) -> (TrainingProgress) throws -> Void {
        var lastReport = Date.distantPast
        return { [communicator] progress in
            let now = Date()
            guard progress.step <= 1 || progress.step == progress.steps
                || now.timeIntervalSince(lastReport) >= Self.progressInterval else { return }
            lastReport = now
            let message = ControlMessage.progress(.init(
                task: task, step: progress.step, steps: progress.steps, loss: progress.loss,
                orthoReg: progress.orthoReg, samplesPerSecond: progress.samplesPerSecond))
            do {
                try communicator.send(message.encoded(), to: 0, tag: ControlTag.toCoordinator)
            } catch {
                throw TrainingInterrupted(underlying: error)
            }
        }
    }
}

/// Thrown out of a training step's progress callback when the job must end (a control message
/// could not be sent or served): not the task's failure. The trainer's caller rethrows `underlying`.
public struct TrainingInterrupted: Error, CustomStringConvertible {
    public let underlying: any Error
    public init(underlying: any Error) { self.underlying = underlying }
    public var description: String { "\(underlying)" }
}
