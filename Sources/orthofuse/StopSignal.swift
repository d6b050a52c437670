// StopSignal: one clear line when mpirun (or Slurm) stops the job, instead of MPI's noise.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The line rank 0 writes when stopped; prepared before any signal so the handler only calls
/// write(2) and _exit(2), which are async-signal-safe.
nonisolated(unsafe) private var stopLine: UnsafeMutablePointer<CChar>?
nonisolated(unsafe) private var stopLineLength = 0

enum StopSignal {
    /// When one rank dies (killed, crashed, out of memory) mpirun stops the others with SIGTERM,
    /// as does `scancel`. `cluster/launch.sh` runs mpirun with --quiet, so rank 0 says what
    /// happened and how to go on; every rank exits with 128 + SIGTERM.
    static func install(rank: Int, output: URL?) {
        if rank == 0 {
            let rerun = output.map { " Rerun the same job to resume from \($0.path)." } ?? ""
            let text = "\northofuse: error: the job was stopped (SIGTERM): another rank died (killed, crashed or out of memory), lost its host, or the job was cancelled.\(rerun)\n"
            stopLine = strdup(text)
            stopLineLength = text.utf8.count
        }
        signal(SIGTERM) { _ in
            if let line = stopLine { _ = write(STDERR_FILENO, line, stopLineLength) }
            _exit(128 + SIGTERM)
        }
    }
}
