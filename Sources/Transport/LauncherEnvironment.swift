// LauncherEnvironment: what mpirun tells a process about where it runs, before MPI starts.
import Foundation

public enum LauncherEnvironment {
    /// The ranks mpirun started on this host (1 without mpirun): they share its cores and memory.
    public static var ranksOnThisHost: Int {
        max(1, ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap { Int($0) } ?? 1)
    }
}
