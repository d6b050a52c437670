// InProcessCommunicator: threads as ranks sharing one in-memory world, for tests of distributed code.
import Foundation

/// A group of `size` ranks living in one process. Each rank is driven by its own thread and talks
/// to the others through an `InProcessCommunicator` obtained from `communicator(rank:)`.
///
/// Semantics follow MPI: collectives are matched by their position in each rank's sequence of
/// collective calls; point-to-point messages go to a mailbox per (destination, tag), are matched
/// by source (or any source), and arrive in order per source. Sends never block (as if buffered).
///
/// Unlike MPI, a rank that fails does not take the process down: once `markFailed(rank:)` has been
/// called, every collective or any-source receive that would otherwise block throws
/// `TransportError("peer rank N failed")`. A receive from one named rank waits on as long as
/// that rank runs: it may still send (a rank reporting its failure to rank 0 after another rank
/// already gave up must not be cut off by that other rank's exit).
/// A rank that has returned (`markFinished(rank:)`) and can no longer satisfy a blocked call also
/// makes that call throw, so a protocol bug fails a test instead of hanging it.
public final class InProcessWorld: @unchecked Sendable {
    // @unchecked Sendable: `size` is immutable, and every mutable field below is read and
    // written only while holding `condition`.

    public let size: Int

    private let condition = NSCondition()
    private var mailboxes: [MailboxKey: [Envelope]] = [:]
    private var rounds: [Int: CollectiveRound] = [:]
    private var nextCollectiveIndex: [Int]
    private var firstFailedRank: Int?
    private var failedRanks: Set<Int> = []
    private var finishedRanks: Set<Int> = []
    /// Ranks that were told a peer failed; their own errors are consequences, not causes.
    private var sawPeerFailure: [Bool]

    public init(size: Int) {
        precondition(size >= 1, "an in-process world needs at least one rank, got \(size)")
        self.size = size
        self.nextCollectiveIndex = Array(repeating: 0, count: size)
        self.sawPeerFailure = Array(repeating: false, count: size)
    }

    public func communicator(rank: Int) -> InProcessCommunicator {
        precondition((0..<size).contains(rank), "rank \(rank) outside 0..<\(size)")
        return InProcessCommunicator(world: self, rank: rank)
    }

    public var communicators: [InProcessCommunicator] {
        (0..<size).map { communicator(rank: $0) }
    }

    /// The first rank reported failed, if any.
    public var failedRank: Int? {
        condition.lock()
        defer { condition.unlock() }
        return firstFailedRank
    }

    /// Declares `rank` dead: blocked and future blocking calls of the other ranks throw.
    public func markFailed(rank: Int) {
        condition.lock()
        defer { condition.unlock() }
        if firstFailedRank == nil { firstFailedRank = rank }
        failedRanks.insert(rank)
        condition.broadcast()
    }

    /// Declares that `rank` will make no more calls (its body returned).
    public func markFinished(rank: Int) {
        condition.lock()
        defer { condition.unlock() }
        finishedRanks.insert(rank)
        condition.broadcast()
    }

    /// Runs `body` once per rank, each on its own thread, and returns the results by rank.
    ///
    /// Threads rather than Swift concurrency tasks: ranks block on each other, and blocking the
    /// cooperative pool (two threads on a two-core machine) would deadlock.
    ///
    /// If any rank throws, the world is marked failed so the other ranks' blocked calls throw,
    /// and this function rethrows the error of the lowest rank whose failure was its own (not
    /// a reaction to a peer's failure); if every error was such a reaction, the lowest rank's.
    public static func run<T: Sendable>(
        size: Int, _ body: @escaping @Sendable (any Communicator) throws -> T
    ) throws -> [T] {
        guard size >= 1 else { throw TransportError("in-process world size must be at least 1, got \(size)") }
        let world = InProcessWorld(size: size)
        let outcomes = OutcomeSlots<T>(count: size)
        let allDone = DispatchGroup()
        for rank in 0..<size {
            allDone.enter()
            let thread = Thread {
                let communicator = world.communicator(rank: rank)
                do {
                    let value = try body(communicator)
                    outcomes.set(rank, .success(value))
                    world.markFinished(rank: rank)
                } catch {
                    outcomes.set(rank, .failure(error))
                    world.markFailed(rank: rank)
                    world.markFinished(rank: rank)
                }
                allDone.leave()
            }
            thread.name = "in-process rank \(rank)"
            thread.stackSize = 8 << 20  // ranks may run model code; match a main thread's stack
            thread.start()
        }
        allDone.wait()

        let results = outcomes.all()
        let errors: [(rank: Int, error: any Error)] = results.enumerated().compactMap { rank, result in
            if case .failure(let error) = result { return (rank, error) }
            return nil
        }
        if !errors.isEmpty {
            let reactions = world.ranksThatSawPeerFailure()
            let cause = errors.first { !reactions.contains($0.rank) } ?? errors[0]
            throw cause.error
        }
        return results.map { result in
            guard case .success(let value) = result else { preconditionFailure("missing rank result") }
            return value
        }
    }

    private func ranksThatSawPeerFailure() -> Set<Int> {
        condition.lock()
        defer { condition.unlock() }
        return Set(sawPeerFailure.indices.filter { sawPeerFailure[$0] })
    }

    // MARK: - Point-to-point

    fileprivate func send(_ bytes: [UInt8], from source: Int, to destination: Int, tag: Int) throws {
        try checkRank(destination, role: "destination")
        try checkTag(tag)
        condition.lock()
        defer { condition.unlock() }
        mailboxes[MailboxKey(destination: destination, tag: tag), default: []]
            .append(Envelope(source: source, bytes: bytes))
        condition.broadcast()
    }

    fileprivate func receive(at destination: Int, from source: Int?, tag: Int) throws -> (source: Int, bytes: [UInt8]) {
        if let source { try checkRank(source, role: "source") }
        try checkTag(tag)
        let key = MailboxKey(destination: destination, tag: tag)
        condition.lock()
        defer { condition.unlock() }
        while true {
            // Messages already delivered are still received, even in a failed world.
            if let index = mailboxes[key]?.firstIndex(where: { source == nil || $0.source == source }) {
                let envelope = mailboxes[key]!.remove(at: index)
                return (envelope.source, envelope.bytes)
            }
            if let source {
                if failedRanks.contains(source) {
                    sawPeerFailure[destination] = true
                    throw TransportError("peer rank \(source) failed")
                }
                if finishedRanks.contains(source) {
                    throw TransportError("rank \(destination) waits for tag \(tag) from rank \(source), which returned without sending it")
                }
            } else {
                try throwIfPeerFailed(observer: destination)
                if (0..<size).allSatisfy({ $0 == destination || finishedRanks.contains($0) }) {
                    throw TransportError("rank \(destination) waits for tag \(tag) from any rank, but every other rank has returned")
                }
            }
            condition.wait()
        }
    }

    // MARK: - Collectives

    /// Joins this rank's next collective and returns its outcome once every rank has joined.
    /// The last rank to arrive computes the outcome once, from every rank's contribution.
    fileprivate func collective(
        rank: Int, kind: CollectiveKind, contribution: Payload,
        combine: ([Payload]) throws -> Payload
    ) throws -> Payload {
        condition.lock()
        defer { condition.unlock() }
        let index = nextCollectiveIndex[rank]
        nextCollectiveIndex[rank] += 1
        let round: CollectiveRound
        if let existing = rounds[index] {
            round = existing
        } else {
            round = CollectiveRound(size: size)
            rounds[index] = round
        }
        round.kinds[rank] = kind
        round.contributions[rank] = contribution
        round.arrived += 1
        if round.arrived == size {
            round.outcome = Self.outcome(of: round, index: index, combine: combine)
            condition.broadcast()
        }
        while round.outcome == nil {
            try throwIfPeerFailed(observer: rank)
            if let absent = finishedRanks.sorted().first(where: { round.kinds[$0] == nil }) {
                throw TransportError("rank \(rank) waits in collective #\(index) (\(kind)), but rank \(absent) returned without joining it")
            }
            condition.wait()
        }
        round.departed += 1
        if round.departed == size { rounds[index] = nil }
        return try round.outcome!.get()
    }

    private static func outcome(
        of round: CollectiveRound, index: Int, combine: ([Payload]) throws -> Payload
    ) -> Result<Payload, TransportError> {
        let kinds = round.kinds.map { $0! }
        if kinds.contains(where: { $0 != kinds[0] }) {
            let calls = kinds.enumerated().map { "rank \($0.offset): \($0.element)" }.joined(separator: ", ")
            return .failure(TransportError("collective #\(index) mismatch: \(calls)"))
        }
        do {
            return .success(try combine(round.contributions.map { $0! }))
        } catch let error as TransportError {
            return .failure(error)
        } catch {
            return .failure(TransportError("collective #\(index) (\(kinds[0])) failed: \(error)"))
        }
    }

    // MARK: - Checks (callers hold the lock where noted)

    /// Caller holds the lock.
    private func throwIfPeerFailed(observer: Int) throws {
        if let failed = firstFailedRank {
            sawPeerFailure[observer] = true
            throw TransportError("peer rank \(failed) failed")
        }
    }

    fileprivate func checkRank(_ rank: Int, role: String) throws {
        guard (0..<size).contains(rank) else {
            throw TransportError("\(role) rank \(rank) outside 0..<\(size)")
        }
    }

    private func checkTag(_ tag: Int) throws {
        guard tag >= 0 else { throw TransportError("tag must be ≥ 0, got \(tag)") }
    }
}

/// One rank's view of an `InProcessWorld`.
public struct InProcessCommunicator: Communicator {
    public let world: InProcessWorld
    public let rank: Int
    public var size: Int { world.size }

    public func barrier() throws {
        _ = try world.collective(rank: rank, kind: .barrier, contribution: .none) { _ in .none }
    }

    public func broadcast(_ bytes: [UInt8], root: Int) throws -> [UInt8] {
        try world.checkRank(root, role: "root")
        let outcome = try world.collective(
            rank: rank, kind: .broadcastBytes(root: root),
            contribution: rank == root ? .bytes(bytes) : .none
        ) { contributions in contributions[root] }
        guard case .bytes(let received) = outcome else { throw TransportError("byte broadcast produced no bytes") }
        return received
    }

    public func broadcast(_ values: UnsafeMutableBufferPointer<Float>, root: Int) throws {
        try world.checkRank(root, role: "root")
        let outcome = try world.collective(
            rank: rank, kind: .broadcastFloats(root: root, count: values.count),
            contribution: rank == root ? .floats(Array(values)) : .none
        ) { contributions in contributions[root] }
        guard case .floats(let received) = outcome else { throw TransportError("float broadcast produced no values") }
        if rank != root {
            _ = values.update(fromContentsOf: received)
        }
    }

    public func allGather(_ block: [Float]) throws -> [[Float]] {
        let outcome = try world.collective(rank: rank, kind: .allGather, contribution: .floats(block)) { contributions in
            .gathered(contributions.map { contribution -> [Float] in
                guard case .floats(let values) = contribution else { return [] }
                return values
            })
        }
        guard case .gathered(let blocks) = outcome else { throw TransportError("allGather produced no blocks") }
        return blocks
    }

    public func allToAll(_ blocks: [[Float]]) throws -> [[Float]] {
        let size = self.size
        let outcome = try world.collective(rank: rank, kind: .allToAll, contribution: .gathered(blocks)) { contributions in
            var exchanged: [[[Float]]] = []
            for (source, contribution) in contributions.enumerated() {
                guard case .gathered(let outgoing) = contribution, outgoing.count == size else {
                    throw TransportError("allToAll: rank \(source) did not pass one block per rank (\(size))")
                }
                exchanged.append(outgoing)
            }
            return .exchanged(exchanged)
        }
        guard case .exchanged(let all) = outcome else { throw TransportError("allToAll produced no blocks") }
        return all.map { $0[rank] }
    }

    public func allReduce(_ values: [Double], _ operation: ReduceOperation) throws -> [Double] {
        let outcome = try world.collective(
            rank: rank, kind: .allReduce(operation, count: values.count), contribution: .doubles(values)
        ) { contributions in
            var reduced: [Double]? = nil
            // Ranks combined in rank order, so every rank gets the same floating-point result.
            for contribution in contributions {
                guard case .doubles(let next) = contribution else { continue }
                guard var accumulated = reduced else { reduced = next; continue }
                for i in accumulated.indices {
                    switch operation {
                    case .sum: accumulated[i] += next[i]
                    case .max: accumulated[i] = Swift.max(accumulated[i], next[i])
                    case .min: accumulated[i] = Swift.min(accumulated[i], next[i])
                    }
                }
                reduced = accumulated
            }
            return .doubles(reduced ?? [])
        }
        guard case .doubles(let reduced) = outcome else { throw TransportError("allReduce produced no values") }
        return reduced
    }

    public func send(_ bytes: [UInt8], to destination: Int, tag: Int) throws {
        try world.send(bytes, from: rank, to: destination, tag: tag)
    }

    public func receive(from source: Int?, tag: Int) throws -> (source: Int, bytes: [UInt8]) {
        try world.receive(at: rank, from: source, tag: tag)
    }
}

// MARK: - Shared state types

private struct MailboxKey: Hashable {
    let destination: Int
    let tag: Int
}

private struct Envelope {
    let source: Int
    let bytes: [UInt8]
}

/// What a rank asked for; every rank of a round must ask for the same thing.
private enum CollectiveKind: Equatable, CustomStringConvertible {
    case barrier
    case broadcastBytes(root: Int)
    case broadcastFloats(root: Int, count: Int)
    case allGather
    case allToAll
    case allReduce(ReduceOperation, count: Int)

    var description: String {
        switch self {
        case .barrier: "barrier"
        case .broadcastBytes(let root): "byte broadcast from rank \(root)"
        case .broadcastFloats(let root, let count): "broadcast of \(count) floats from rank \(root)"
        case .allGather: "allGather"
        case .allToAll: "allToAll"
        case .allReduce(let operation, let count): "allReduce \(operation) of \(count) values"
        }
    }
}

private enum Payload {
    case none
    case bytes([UInt8])
    case floats([Float])
    case doubles([Double])
    case gathered([[Float]])
    /// allToAll: every rank's outgoing blocks, by source rank.
    case exchanged([[[Float]]])
}

/// One collective call, shared by the ranks taking part. Guarded by the world's lock.
private final class CollectiveRound {
    var kinds: [CollectiveKind?]
    var contributions: [Payload?]
    var arrived = 0
    var departed = 0
    var outcome: Result<Payload, TransportError>?

    init(size: Int) {
        kinds = Array(repeating: nil, count: size)
        contributions = Array(repeating: nil, count: size)
    }
}

/// Per-rank results written by the rank threads and read after all have finished.
private final class OutcomeSlots<T: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `slots` is only touched while holding `lock`.
    private let lock = NSLock()
    private var slots: [Result<T, any Error>?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ rank: Int, _ outcome: Result<T, any Error>) {
        lock.lock()
        defer { lock.unlock() }
        slots[rank] = outcome
    }

    func all() -> [Result<T, any Error>] {
        lock.lock()
        defer { lock.unlock() }
        return slots.map { $0! }
    }
}
