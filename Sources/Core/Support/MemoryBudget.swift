// MemoryBudget: how much memory this process may use, and the one check every large allocation
// passes first, so that a size from a file header or a job is an error line, not a trap.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public enum MemoryBudget {
    /// The smallest of physical memory, the address-space and data rlimits, and the cgroup's
    /// memory.max (containers, Slurm): what this process can really get.
    public static var availableBytes: Int {
        var limits = [Int(clamping: ProcessInfo.processInfo.physicalMemory)]
        for resource in [RLIMIT_AS, RLIMIT_DATA] {
            var limit = rlimit()
            if getrlimit(__rlimit_resource_t(resource.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max {  // RLIM_INFINITY
                limits.append(Int(clamping: limit.rlim_cur))
            }
        }
        if let text = try? String(contentsOfFile: "/sys/fs/cgroup/memory.max", encoding: .utf8),
           let bytes = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
            limits.append(bytes)
        }
        return limits.min()!
    }

    /// Throws unless `bytes` fit in the budget; `what` names the allocation ("x.npy inflated").
    public static func check(_ bytes: Int, for what: String) throws {
        let available = availableBytes
        guard bytes > available else { return }
        throw OrthofuseError("\(what) needs \(format(bytes)), more than the \(format(available)) this process may use")
    }

    public static func format(_ bytes: Int) -> String {
        let gib = Double(bytes) / Double(1 << 30)
        return gib >= 1 ? String(format: "%.1f GiB", gib) : String(format: "%.1f MiB", Double(bytes) / Double(1 << 20))
    }
}
