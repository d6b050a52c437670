// PhaseAgreement: every rank learns whether a phase failed anywhere, and rank 0 learns why.
import Core
import Transport

/// Thrown on ranks other than 0 when a phase failed somewhere: rank 0 reports the reason, the
/// others exit non-zero without adding per-rank noise.
public struct PeerFailure: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "another rank failed (reported by rank 0)" }
}

enum PhaseAgreement {
    static let messageTag = 7001

    /// Runs `body`, then agrees with all ranks on success: if any rank threw, every rank throws
    /// (rank 0 an OrthofuseError with the failing ranks' messages, the others PeerFailure).
    /// Without this, one rank's bad file would leave the others waiting in the next collective.
    static func run<T>(_ communicator: any Communicator, _ body: () throws -> T) throws -> T {
        var result: T?
        var failure: String?
        do {
            result = try body()
        } catch {
            failure = "\(error)"
        }
        var flags = [Double](repeating: 0, count: communicator.size)
        if failure != nil { flags[communicator.rank] = 1 }
        flags = try communicator.allReduce(flags, .sum)
        let failedRanks = flags.indices.filter { flags[$0] > 0 }
        if failedRanks.isEmpty, let result { return result }

        if communicator.rank == 0 {
            var messages: [String] = []
            for rank in failedRanks {
                if rank == 0 {
                    messages.append(failure ?? "unknown failure")
                } else {
                    let (_, bytes) = try communicator.receive(from: rank, tag: messageTag)
                    let text = String(decoding: bytes, as: UTF8.self)
                    messages.append(communicator.size > 1 ? "rank \(rank): \(text)" : text)
                }
            }
            throw OrthofuseError(messages.joined(separator: "; "))
        }
        if let failure {
            try communicator.send(Array(failure.utf8), to: 0, tag: messageTag)
        }
        throw PeerFailure()
    }
}
