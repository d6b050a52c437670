// StopSignal: one clear line when mpirun (or Slurm) stops the job, instead of MPI's noise; and
// SIGUSR1, a batch system's warning before its time limit, as a preemption request.
import Core
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The lines rank 0 writes when stopped; prepared before any signal so the handlers only call
/// write(2) and _exit(2), which are async-signal-safe, and load atomics.
nonisolated(unsafe) private var stopLine: UnsafeMutablePointer<CChar>?
nonisolated(unsafe) private var stopLineLength = 0
nonisolated(unsafe) private var preemptedLine: UnsafeMutablePointer<CChar>?
nonisolated(unsafe) private var preemptedLineLength = 0
/// The exit code of a process that is already failing (StopSignal.exitingWithError).
nonisolated(unsafe) private var exitCode: Int32 = 1

enum StopSignal {
    /// The exit code of a preempted job (EX_TEMPFAIL): cluster/slurm.sbatch requeues on it and
    /// cluster/launch.sh passes it on without restarting.
    static let preemptedExitCode: Int32 = 75

    /// SIGUSR1 asks every training run of this process to checkpoint after its current step and
    /// stop (Preemption); the process then exits with `preemptedExitCode`.
    static func installPreemption() {
        signal(SIGUSR1) { _ in Preemption.request() }
    }

    /// When one rank dies (killed, crashed, out of memory) mpirun stops the others with SIGTERM,
    /// as does `scancel`. `cluster/launch.sh` runs mpirun with --quiet, so rank 0 says what
    /// happened and how to go on; every rank exits with 128 + SIGTERM. After a preemption request
    /// the SIGTERM is the end of a preempted job: a process whose training run still has to save
    /// lets it finish (it exits itself), the others exit with `preemptedExitCode`.
    static func install(rank: Int, output: URL?) {
        if rank == 0 {
            let rerun = output.map { " Rerun the same job to resume from \($0.path)." } ?? ""
            let text = "\northofuse: error: the job was stopped (SIGTERM): another rank died (killed, crashed or out of memory), lost its host, or the job was cancelled.\(rerun)\n"
            stopLine = strdup(text)
            stopLineLength = text.utf8.count
            let preempted = "\n" + preemptionLine(output: output) + "\n"
            preemptedLine = strdup(preempted)
            preemptedLineLength = preempted.utf8.count
        }
        signal(SIGTERM) { _ in
            if Preemption.isRequested {
                if Preemption.checkpointPending { return }
                if let line = preemptedLine { _ = write(STDERR_FILENO, line, preemptedLineLength) }
                _exit(StopSignal.preemptedExitCode)
            }
            if let line = stopLine { _ = write(STDERR_FILENO, line, stopLineLength) }
            _exit(128 + SIGTERM)
        }
    }

    /// This process has said why it fails and is about to exit with `code`: a SIGTERM from now on
    /// is mpirun ending the job because another rank exited first, so it must not add the
    /// "another rank died" line to the one error line already printed.
    static func exitingWithError(code: Int32) {
        exitCode = code
        signal(SIGTERM) { _ in _exit(exitCode) }
    }

    /// What rank 0 says of a preempted job.
    static func preemptionLine(output: URL?) -> String {
        let resume = output.map { " Requeue or rerun the same job to resume from \($0.path)." } ?? ""
        return "orthofuse: the job was preempted (SIGUSR1): every task in training saved a checkpoint.\(resume)"
    }
}
