// ProcessMemory: this process's peak resident memory, which every benchmark reports.
import Foundation

enum ProcessMemory {
    /// VmHWM of /proc/self/status, the peak resident set of this process, in bytes (0 where unreadable).
    static func peakResidentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kilobytes = Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "")
        else { return 0 }
        return kilobytes * 1024
    }
}
