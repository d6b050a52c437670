// Console: line-oriented progress and status output, prefixed with the rank under MPI, copied to
// the rank's log file, and kept clear of rank 0's live progress display.
import Core
import JobSchema
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
    /// What reaches the terminal; the log file gets every line.
    public let level: Level
    public let log: RunLog?
    /// Rank 0's live view of the tasks in training, kept below the lines this console prints;
    /// nil on the other ranks, with --quiet and outside a job.
    public let progress: ProgressDisplay?

    public init(rank: Int = 0, size: Int = 1, level: Level = .normal, log: RunLog? = nil,
                progress: ProgressDisplay? = nil) {
        self.rank = rank
        self.size = size
        self.level = level
        self.log = log
        self.progress = progress
    }

    /// The same console writing its lines to `log` too.
    public func logging(to log: RunLog?) -> Console {
        Console(rank: rank, size: size, level: level, log: log, progress: progress)
    }

    /// The same console printing its lines above `progress`.
    public func showing(_ progress: ProgressDisplay?) -> Console {
        Console(rank: rank, size: size, level: level, log: log, progress: progress)
    }

    private var prefix: String { size > 1 ? "[rank \(rank)] " : "" }

    /// Status lines (phase changes, per-task progress).
    public func info(_ message: @autoclosure () -> String) {
        emit(prefix + message(), shown: level >= .normal)
    }

    public func verbose(_ message: @autoclosure () -> String) {
        emit(prefix + message(), shown: level >= .verbose)
    }

    /// Results that are shown even with --quiet (the final table).
    public func result(_ message: String) {
        emit(message, shown: true)
    }

    private func emit(_ line: String, shown: Bool) {
        log?.append(line)
        guard shown else { return }
        if let progress { progress.printAbove(line + "\n") } else { Console.write(line + "\n", to: STDOUT_FILENO) }
    }

    /// One error line to stderr, after taking the live progress block off the terminal.
    public func error(_ message: String) {
        progress?.clear()
        Console.error(message)
    }

    /// One line to stderr (errors), flushed; where no live progress is shown.
    public static func error(_ message: String) {
        write("orthofuse: error: " + message + "\n", to: STDERR_FILENO)
    }

    /// One write(2) per call: lines of different ranks, forwarded by mpirun, do not interleave.
    static func write(_ text: String, to descriptor: Int32) {
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

/// A rank's log file in the run directory (`logs/rank-N.log`), every line with a UTC time stamp.
/// Appended to, so a rerun's lines follow the interrupted run's. Opened at the first line, so a
/// run refused before it logs anything leaves no trace in the directory.
public final class RunLog: @unchecked Sendable {
    // @unchecked Sendable: the descriptor is opened and written under `lock` only.
    private var descriptor: Int32 = -1
    private var failed = false
    private let lock = NSLock()
    public let url: URL

    public init(directory: URL, rank: Int) {
        url = directory.appendingPathComponent("rank-\(rank).log")
    }

    deinit { if descriptor >= 0 { close(descriptor) } }

    /// Appends `line`; a log that cannot be opened is given up silently (the terminal still shows
    /// what matters, and a full disk must not end the job).
    public func append(_ line: String) {
        let stamp = ISO8601DateFormatter.string(from: Date(), timeZone: TimeZone(identifier: "UTC")!,
                                                formatOptions: [.withInternetDateTime])
        lock.lock()
        defer { lock.unlock() }
        if descriptor < 0, !failed {
            try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            descriptor = open(url.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            failed = descriptor < 0
        }
        guard descriptor >= 0 else { return }
        Console.write("\(stamp) \(line)\n", to: descriptor)
    }
}

/// Rank 0's live view of every task in training: a block of lines redrawn in place on a terminal,
/// or a plain summary line every `plainInterval` seconds otherwise (logs, CI). One per job on rank 0,
/// handed to the code that prints through its Console.
public final class ProgressDisplay: @unchecked Sendable {
    // @unchecked Sendable: all state is touched under `lock` only.

    public struct Row: Sendable {
        public var task: String
        public var rank: Int
        public var step: Int
        public var steps: Int
        public var loss: Double
        public var orthoReg: Double
        public var samplesPerSecond: Double
        public var updated: Date

        public init(task: String, rank: Int, step: Int, steps: Int, loss: Double, orthoReg: Double,
                    samplesPerSecond: Double, updated: Date = Date()) {
            self.task = task
            self.rank = rank
            self.step = step
            self.steps = steps
            self.loss = loss
            self.orthoReg = orthoReg
            self.samplesPerSecond = samplesPerSecond
            self.updated = updated
        }

        /// The first step this display saw, and when: the pace is measured from there, so data
        /// loading and the head fit before the first step do not inflate the ETA.
        var firstStep = 0
        var firstSeen = Date()

        /// Remaining time at the average pace since the first step seen.
        public var eta: Double? {
            let elapsed = updated.timeIntervalSince(firstSeen)
            guard step > firstStep, elapsed > 0 else { return nil }
            return elapsed / Double(step - firstStep) * Double(steps - step)
        }

        public var text: String {
            guard step > 0 else { return "\(task) (rank \(rank))  data loaded, head fitted: starting \(steps) steps" }
            let eta = self.eta.map { "ETA \(ProgressDisplay.duration($0))" } ?? "ETA –"
            return String(format: "%@ (rank %d)  step %d/%d  loss %.4f  orthoreg %.4f  %.0f samples/s  %@",
                          task, rank, step, steps, loss, orthoReg, samplesPerSecond, eta)
        }
    }

    private let lock = NSLock()
    private var rows: [String: Row] = [:]
    private var order: [String] = []
    private var enabled = true
    private let interactive: Bool
    private var drawnLines = 0
    private var lastDraw = Date.distantPast
    private var lastPlain = Date()
    public var plainInterval = 10.0

    /// `interactive`: redrawn in place (a terminal); otherwise plain summary lines.
    public init(interactive: Bool) {
        self.interactive = interactive
    }

    public func update(_ row: Row) {
        lock.lock()
        defer { lock.unlock() }
        guard enabled else { return }
        if rows[row.task] == nil { order.append(row.task) }
        rows[row.task] = Self.advance(rows[row.task], to: row)
        let now = Date()
        if interactive {
            if now.timeIntervalSince(lastDraw) >= 0.25 { redraw(now) }
        } else if now.timeIntervalSince(lastPlain) >= plainInterval {
            lastPlain = now
            let line = "progress: " + order.compactMap { rows[$0] }.map(\.text).joined(separator: " | ") + "\n"
            Console.write(line, to: STDOUT_FILENO)
        }
    }

    /// `next`, keeping where `previous` (the same task's last row) started measuring the pace.
    static func advance(_ previous: Row?, to next: Row) -> Row {
        var row = next
        row.firstStep = previous?.firstStep ?? next.step
        row.firstSeen = previous?.firstSeen ?? next.updated
        return row
    }

    /// The task is no longer in training.
    public func remove(task: String) {
        lock.lock()
        defer { lock.unlock() }
        rows[task] = nil
        order.removeAll { $0 == task }
        if enabled, interactive { redraw(Date()) }
    }

    /// Writes `text` (whole lines) above the live block.
    func printAbove(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        guard enabled, interactive, drawnLines > 0 else {
            Console.write(text, to: STDOUT_FILENO)
            return
        }
        Console.write(erase() + text + block(), to: STDOUT_FILENO)
        lastDraw = Date()
    }

    /// Removes the block from the terminal (before an error or the final table) and stops drawing.
    public func clear() {
        lock.lock()
        defer { lock.unlock() }
        if enabled, interactive, drawnLines > 0 { Console.write(erase(), to: STDOUT_FILENO) }
        drawnLines = 0
        rows = [:]
        order = []
        enabled = false
    }

    private func redraw(_ now: Date) {
        Console.write(erase() + block(), to: STDOUT_FILENO)
        lastDraw = now
    }

    /// Moves up over the drawn block and clears to the end of the screen.
    private func erase() -> String {
        defer { drawnLines = 0 }
        return drawnLines > 0 ? "\u{1B}[\(drawnLines)F\u{1B}[J" : ""
    }

    private func block() -> String {
        let lines = order.compactMap { rows[$0] }.map { "  " + $0.text }
        drawnLines = lines.count
        return lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n"
    }

    static func duration(_ seconds: Double) -> String {
        let total = Int(seconds.rounded())
        if total >= 3600 { return "\(total / 3600)h\(String(format: "%02d", total % 3600 / 60))m" }
        if total >= 60 { return "\(total / 60)m\(String(format: "%02d", total % 60))s" }
        return "\(total)s"
    }
}
