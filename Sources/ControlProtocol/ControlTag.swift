// ControlTag: the MPI tags the control messages travel on, all in one place. The steps they belong
// to are told in docs/architecture.md, "The coordinator/worker protocol".
public enum ControlTag {
    /// Phase agreement: after the allReduce of failure flags, each failing rank other than 0 sends
    /// rank 0 one `Failure` with its reason (PhaseAgreement.swift).
    public static let phaseFailure = 7001
    /// Dynamic queue, worker → coordinator: `Progress`, then the task's `TaskResult` or `Failure`.
    public static let toCoordinator = 7100
    /// Dynamic queue, coordinator → worker: the next `Assignment`, or `Shutdown`.
    public static let toWorker = 7101
    /// End of training, worker → coordinator, in task order: a `Failure` for each task that failed
    /// on that rank, then a `TaskResult` for each finished task rank 0 has not yet recorded (the
    /// data-parallel groups' leaders), so the manifest holds every task.
    public static let endOfTraining = 7102
}
