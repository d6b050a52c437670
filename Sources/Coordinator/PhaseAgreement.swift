// PhaseAgreement: every rank learns whether a phase failed anywhere, and rank 0 learns why.
import ControlProtocol
import Core
import Transport

public enum PhaseAgreement {
    /// Runs `body`, then agrees with all ranks on success: if any rank threw, every rank throws
    /// (rank 0 an OrthofuseError with the failing ranks' messages, sent as control-protocol
    /// `Failure` messages; the others PeerFailure).
    /// Without this, one rank's bad file would leave the others waiting in the next collective.
    public static func run<T>(_ communicator: any Communicator, _ body: () throws -> T) throws -> T {
        var result: T?
        var failure: String?
        var peerFailure = false
        do {
            result = try body()
        } catch let preempted as TrainingPreempted {
            // The job's processes end now (Launch); the other ranks are not waited for.
            throw preempted
        } catch is PeerFailure {
            // Another rank's failure, reported by rank 0 already: fail here without a message.
            failure = ""
            peerFailure = true
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
                    if !peerFailure { messages.append(failure ?? "unknown failure") }
                } else {
                    let (_, bytes) = try communicator.receive(from: rank, tag: ControlTag.phaseFailure)
                    guard case let .failure(_, reason, _) = try ControlMessage.decode(bytes, from: "rank \(rank)") else {
                        throw OrthofuseError("rank \(rank) sent an unexpected message instead of its failure")
                    }
                    // The same failure as rank 0's (every rank reading one bad file) is said once.
                    if !reason.isEmpty, reason != failure { messages.append(communicator.size > 1 ? "rank \(rank): \(reason)" : reason) }
                }
            }
            if messages.isEmpty { throw PeerFailure() }
            throw OrthofuseError(messages.joined(separator: "; "))
        }
        if let failure {
            try communicator.send(ControlMessage.failure(task: "", reason: failure, rank: communicator.rank).encoded(),
                                  to: 0, tag: ControlTag.phaseFailure)
        }
        throw PeerFailure()
    }
}
