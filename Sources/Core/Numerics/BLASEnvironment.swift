// BLASEnvironment: selects OpenBLAS's kernels for this CPU before the library initialises; the one
// place that decides the core type (every executable calls it first; scripts set nothing).
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public enum BLASEnvironment {
    /// Debian's OpenBLAS 0.3.21 does not recognise recent AVX-512 CPUs and falls back to its
    /// slowest kernels (about 5× slower sgemm). The core type is read when the library loads, so
    /// setting it later is too late: when unset, set it from the CPU flags and re-execute this
    /// process once (before MPI_Init, so the MPI launcher sees the same process).
    public static func ensureCoreType() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OPENBLAS_CORETYPE"] == nil, environment["ORTHOFUSE_BLAS_REEXEC"] == nil else { return }
        guard let coreType = detectCoreType() else { return }
        setenv("OPENBLAS_CORETYPE", coreType, 1)
        setenv("ORTHOFUSE_BLAS_REEXEC", "1", 1)
        let arguments = CommandLine.arguments
        var cArguments = arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &cArguments)
        // execv returned: keep running with the default kernels rather than fail.
    }

    /// SkylakeX with AVX-512 (F, BW, VL, DQ), Haswell with AVX2 and FMA; nil otherwise.
    public static func detectCoreType() -> String? {
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return nil }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        return nil
    }
}
