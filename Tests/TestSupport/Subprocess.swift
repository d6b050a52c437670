// Subprocess: runs a program (the built orthofuse, mpirun through cluster/launch.sh, a script) and
// collects its exit status and both output streams.
import Foundation

public struct ProcessOutcome: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

public enum Subprocess {
    /// This process's environment without MPI's per-process variables: a child mpirun that
    /// inherits OMPI_/PMIX_/OPAL_/ORTE_ variables from an MPI process exits silently.
    public static var environmentWithoutMPI: [String: String] {
        ProcessInfo.processInfo.environment.filter { key, _ in
            !["OMPI_", "PMIX_", "OPAL_", "ORTE_"].contains { key.hasPrefix($0) }
        }
    }

    public struct TimedOut: Error, CustomStringConvertible {
        public let command: String
        public var description: String { "timed out: \(command)" }
    }

    /// Runs `executable` with `arguments` in `directory` and MPI's variables scrubbed; `during`
    /// runs on this thread while the child does (to disturb it). Both pipes are drained
    /// concurrently, so a chatty child cannot block on a full pipe. A child still running after
    /// `timeout` seconds is terminated and `TimedOut` thrown.
    public static func run(_ executable: URL, _ arguments: [String], in directory: URL? = nil,
                           timeout: TimeInterval = 300, during: (() throws -> Void)? = nil) throws -> ProcessOutcome {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.environment = environmentWithoutMPI
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = LockedData(), errData = LockedData()
        let group = DispatchGroup()
        for (pipe, sink) in [(out, outData), (err, errData)] {
            group.enter()
            DispatchQueue.global().async {
                sink.set(pipe.fileHandleForReading.readDataToEndOfFile())
                group.leave()
            }
        }
        try during?()
        if group.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()
            process.waitUntilExit()
            throw TimedOut(command: ([executable.path] + arguments).joined(separator: " "))
        }
        process.waitUntilExit()
        return ProcessOutcome(status: process.terminationStatus, stdout: String(decoding: outData.get(), as: UTF8.self),
                              stderr: String(decoding: errData.get(), as: UTF8.self))
    }
}

/// Data written by one thread and read by another.
private final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ value: Data) { lock.lock(); data = value; lock.unlock() }
    func get() -> Data { lock.lock(); defer { lock.unlock() }; return data }
}
