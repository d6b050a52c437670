// JobAnnouncement: step 1 of the protocol: rank 0 announces the checked job, every rank verifies
// that it runs the same binary version and the same job before any work.
import ControlProtocol
import Core
import JobSchema
import Foundation
import Transport

public enum JobAnnouncer {
    /// The job as rank 0 read it: its text, where it came from, and the directory its relative
    /// paths resolve against.
    public struct Source: Sendable {
        public var text: String
        public var origin: String
        public var baseDirectory: URL

        public init(text: String, origin: String, baseDirectory: URL) {
            self.text = text
            self.origin = origin
            self.baseDirectory = baseDirectory
        }
    }

    /// Rank 0 parses and checks `source` (every named file exists) and broadcasts a
    /// `JobAnnouncement` (or a `Failure` with the reason); every rank parses the announced text,
    /// recomputes its configuration hash, and compares it and its own `binaryVersion` with the
    /// announcement. Any mismatch or error ends the job on every rank, with one line from rank 0
    /// naming the rank and both values.
    ///
    /// `source` is only read on rank 0. `configHash` is how a rank hashes a parsed job (tests
    /// inject a different one to exercise the check).
    public static func announce(
        _ source: @autoclosure () throws -> Source, communicator: any Communicator,
        binaryVersion: String = JobRunner.version, configHash: (JobConfig) -> String = { $0.configHash }
    ) throws -> JobPlan {
        var message: ControlMessage
        if communicator.rank == 0 {
            do {
                let job = try source()
                let config = try JobConfig.parse(job.text, origin: job.origin, baseDirectory: job.baseDirectory)
                try config.checkFiles()
                _ = try JobPlan(config: config)
                message = .job(ControlMessage.JobAnnouncement(
                    binaryVersion: binaryVersion, configHash: configHash(config), jobText: job.text,
                    baseDirectory: job.baseDirectory.path, origin: job.origin, worldSize: communicator.size))
            } catch {
                message = .failure(task: "", reason: "\(error)", rank: 0)
            }
        } else {
            message = .shutdown(success: false)  // replaced by the broadcast
        }
        let bytes = try communicator.broadcast(communicator.rank == 0 ? message.encoded() : [], root: 0)

        return try PhaseAgreement.run(communicator) { () -> JobPlan in
            message = try ControlMessage.decode(bytes, from: "job announcement from rank 0")
            switch message {
            case let .job(announcement):
                guard announcement.binaryVersion == binaryVersion else {
                    throw OrthofuseError("rank \(communicator.rank) runs orthofuse \(binaryVersion), rank 0 runs \(announcement.binaryVersion); use one build on every host")
                }
                guard announcement.worldSize == communicator.size else {
                    throw OrthofuseError("rank \(communicator.rank) sees \(communicator.size) ranks, rank 0 announced \(announcement.worldSize)")
                }
                let config = try JobConfig.parse(announcement.jobText, origin: announcement.origin,
                                                 baseDirectory: URL(fileURLWithPath: announcement.baseDirectory))
                let hash = configHash(config)
                guard hash == announcement.configHash else {
                    throw OrthofuseError("rank \(communicator.rank) reads the job as configuration \(hash.prefix(12)), rank 0 as \(announcement.configHash.prefix(12)); the ranks would run different jobs")
                }
                return try JobPlan(config: config)
            case let .failure(_, reason, _):
                // Rank 0's own error: only rank 0 reports it.
                if communicator.rank == 0 { throw OrthofuseError(reason) }
                throw PeerFailure()
            default:
                throw OrthofuseError("rank 0 sent an unexpected message instead of the job announcement")
            }
        }
    }
}
