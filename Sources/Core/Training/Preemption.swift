// Preemption: a request to stop training soon and resume later (a batch system's warning before
// its time limit, SIGUSR1): each training run saves its checkpoint at its next step and throws
// TrainingPreempted, which no layer treats as the task's failure.
import Synchronization

public enum Preemption {
    /// Process-wide, as the signal that sets it; lock-free, so a signal handler may set it.
    private static let requested = Atomic<Bool>(false)
    /// How many training runs with a checkpoint are going in this process (they will save).
    private static let savingRuns = Atomic<Int>(0)

    public static var isRequested: Bool { requested.load(ordering: .acquiring) }

    /// Async-signal-safe.
    public static func request() { requested.store(true, ordering: .releasing) }

    /// Withdraws a request (tests; a process that goes on after a preempted run).
    public static func withdraw() { requested.store(false, ordering: .releasing) }

    /// Whether a run in this process will still save a checkpoint: a stop signal arriving
    /// meanwhile should wait for it. Async-signal-safe.
    public static var checkpointPending: Bool { savingRuns.load(ordering: .acquiring) > 0 }

    static func runStarted() { savingRuns.add(1, ordering: .acquiringAndReleasing) }
    static func runEnded() { savingRuns.subtract(1, ordering: .acquiringAndReleasing) }
}

/// A training run stopped by a preemption request after saving its state at `step`; a rerun of
/// the job resumes there.
public struct TrainingPreempted: Error, CustomStringConvertible {
    public let label: String
    public let step: Int
    public let steps: Int
    public var description: String {
        "\(label): preempted at step \(step) of \(steps); its checkpoint is saved, a rerun resumes there"
    }
}
