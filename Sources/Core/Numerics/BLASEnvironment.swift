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
        if environment["ORTHOFUSE_BLAS_REEXEC"] != nil { return }
        if let requested = environment["OPENBLAS_CORETYPE"] {
            // Set by the user or passed on to every rank by the launcher: kernels for instructions
            // this CPU lacks would stop the process at its first GEMM with SIGILL.
            if let flags = cpuFlags(), let message = unsupportedMessage(coreType: requested, flags: flags) {
                FileHandle.standardError.write(Data("orthofuse: error: \(message)\n".utf8))
                exit(1)
            }
            return
        }
        guard let coreType = detectCoreType() else { return }
        setenv("OPENBLAS_CORETYPE", coreType, 1)
        setenv("ORTHOFUSE_BLAS_REEXEC", "1", 1)
        let arguments = CommandLine.arguments
        var cArguments = arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &cArguments)
        // execv returned: keep running with the default kernels rather than fail.
    }

    /// The kernel family for this CPU (`coreType(forFlags:)` of its flags); nil when unknown.
    public static func detectCoreType() -> String? {
        cpuFlags().flatMap(coreType(forFlags:))
    }

    /// SkylakeX with AVX-512 (F, BW, VL, DQ), Haswell with AVX2 and FMA; nil otherwise (OpenBLAS's
    /// own choice then stands). The same rule for Intel and AMD: the families are instruction sets.
    public static func coreType(forFlags flags: Set<String>) -> String? {
        if missingFeatures(coreType: "SkylakeX", flags: flags).isEmpty { return "SkylakeX" }
        if missingFeatures(coreType: "Haswell", flags: flags).isEmpty { return "Haswell" }
        return nil
    }

    /// The flags of /proc/cpuinfo's first processor; nil where there is no such file.
    public static func cpuFlags() -> Set<String>? {
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return nil }
        return Set(flagsLine.split(separator: " ").map(String.init))
    }

    /// The CPU features each x86 kernel family of OpenBLAS 0.3.21 executes (names as
    /// OPENBLAS_CORETYPE takes them, compared without case).
    private static let requiredFeatures: [String: [String]] = {
        let avx512 = ["avx512f", "avx512bw", "avx512vl", "avx512dq"]
        let avx2 = ["avx2", "fma"]
        return [
            "skylakex": avx512, "cooperlake": avx512 + ["avx512_bf16"], "sapphirerapids": avx512 + ["avx512_bf16"],
            "haswell": avx2, "zen": avx2, "skylake": avx2,
            "sandybridge": ["avx"], "bulldozer": ["avx"], "piledriver": ["avx", "fma"], "steamroller": ["avx", "fma"],
            "excavator": ["avx2", "fma"], "nehalem": ["sse4_2"], "barcelona": ["sse4a"],
        ]
    }()

    /// The features `coreType` needs that `flags` lack, in a fixed order; [] for a family this
    /// table does not know (OpenBLAS then decides).
    public static func missingFeatures(coreType: String, flags: Set<String>) -> [String] {
        (requiredFeatures[coreType.lowercased()] ?? []).filter { !flags.contains($0) }
    }

    /// One line saying why `coreType` cannot run here, or nil when it can.
    static func unsupportedMessage(coreType: String, flags: Set<String>) -> String? {
        let missing = missingFeatures(coreType: coreType, flags: flags)
        guard !missing.isEmpty else { return nil }
        let host = ProcessInfo.processInfo.hostName
        let fitting = Self.coreType(forFlags: flags).map { "set it to \($0) (this CPU's family) or " } ?? ""
        return "OPENBLAS_CORETYPE=\(coreType) needs \(missing.joined(separator: ", ")), which the CPU of \(host) lacks; "
            + "\(fitting)unset it to let orthofuse choose"
    }
}
