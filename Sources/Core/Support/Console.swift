// Console: line-oriented progress and status output, prefixed with the rank under MPI.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct Console: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case quiet = 0, normal = 1, verbose = 2
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    public let rank: Int
    public let size: Int
    public let level: Level

    public init(rank: Int = 0, size: Int = 1, level: Level = .normal) {
        self.rank = rank
        self.size = size
        self.level = level
    }

    private var prefix: String { size > 1 ? "[rank \(rank)] " : "" }

    /// Status lines (phase changes, per-task progress).
    public func info(_ message: @autoclosure () -> String) {
        guard level >= .normal else { return }
        emit(prefix + message())
    }

    public func verbose(_ message: @autoclosure () -> String) {
        guard level >= .verbose else { return }
        emit(prefix + message())
    }

    /// Results that are shown even with --quiet (the final table).
    public func result(_ message: String) {
        emit(message)
    }

    private func emit(_ line: String) {
        Self.write(line + "\n", to: STDOUT_FILENO)
    }

    /// One line to stderr (errors), flushed.
    public static func error(_ message: String) {
        write("orthofuse: error: " + message + "\n", to: STDERR_FILENO)
    }

    /// One write(2) per line: lines of different ranks, forwarded by mpirun, do not interleave.
    private static func write(_ text: String, to descriptor: Int32) {
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if written <= 0 { return }
                offset += written
            }
        }
    }
}
