// RunLock: one run at a time per output directory (an advisory flock held by rank 0), and the
// rule for which folders a run may write into at all.
import Core
import Reporting
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Held by rank 0 from before the first write into the output until the run ends; the kernel
/// drops it when the process dies, so a crashed run never leaves a stale lock behind.
final class RunLock {
    static let fileName = ".orthofuse.lock"
    private var descriptor: Int32

    private init(descriptor: Int32) { self.descriptor = descriptor }

    deinit { release() }

    func release() {
        if descriptor >= 0 {
            close(descriptor)
            descriptor = -1
        }
    }

    /// Creates `output` if needed and locks it; refuses, naming the holder, when another run has it.
    static func acquire(_ output: URL) throws -> RunLock {
        try FileSystemMessage.createDirectory(output)
        let path = output.appendingPathComponent(fileName).path
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw OrthofuseError("\(output.path): cannot create \(fileName) (\(String(cString: strerror(errno))))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(descriptor)
            throw OrthofuseError("\(output.path): another orthofuse run is writing here (\(holder.isEmpty ? "holder unknown" : holder)); wait for it to end or choose another output directory")
        }
        let holder = "pid \(getpid()) on \(ProcessInfo.processInfo.hostName), since \(ISO8601DateFormatter().string(from: Date()))\n"
        _ = ftruncate(descriptor, 0)
        _ = holder.withCString { pwrite(descriptor, $0, strlen($0), 0) }
        return RunLock(descriptor: descriptor)
    }

    /// Removes the temporary files (`.NAME.tmp-PID`, AtomicFile) that a run killed mid-write left
    /// in the output; only safe while holding the lock.
    static func removeStaleTemporaries(in output: URL) {
        for folder in ["", "checkpoints", "task_vectors", "heads", "merged"] {
            let directory = folder.isEmpty ? output : output.appendingPathComponent(folder)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            for name in names where name.hasPrefix(".") && name.contains(".tmp-") {
                try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
            }
        }
    }

    /// A run writes only into a folder that is new, empty, or already an orthofuse run (it holds
    /// a manifest, or the lock file every run leaves): never a user's folder (`output: .` next to
    /// the job file, `output: /`).
    static func checkWritable(_ output: URL) throws {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? []).sorted()
        guard !names.contains(RunManifest.fileName), !names.contains(fileName) else { return }
        // Our own log files and θ0 cached by `orthofuse pretrain` may come before the manifest.
        let foreign = names.filter { name in
            name != "logs" && !(name == "base.safetensors" && isPretrainCache(output.appendingPathComponent(name)))
        }
        if let example = foreign.first {
            throw OrthofuseError("\(output.path): exists and holds files that are not an orthofuse run (\(example)\(foreign.count > 1 ? " and \(foreign.count - 1) more" : "")); choose a new or empty output directory")
        }
    }

    private static func isPretrainCache(_ url: URL) -> Bool {
        (try? Safetensors.readHeader(url))?.metadata[Pretrainer.fingerprintKey] != nil
    }
}
