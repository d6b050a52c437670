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
/// makes that call throw, so a protocol bug fails a test instead of hanging it. A probe that
/// finds nothing pending throws where such a receive would throw for a failed peer, so a loop
/// polling a failed rank ends too.
///
/// `split` creates sub-worlds (also `InProcessWorld`s) with their own mailboxes and collective
/// sequence, sharing the lock and the failure record of the world `init(size:)` created: a
/// failure anywhere makes blocked calls in every sub-world throw, as in that world. Failures and
/// returns are recorded in that outermost world's rank numbers.
public final class InProcessWorld: @unchecked Sendable {
    // @unchecked Sendable: `size`, `worldRanks`, `isOutermost` and `shared` are immutable, and
    // every mutable field below (and in `shared`) is read and written only while holding
    // `shared.condition`.

    public let size: Int

    /// Each rank of this world as numbered in the outermost world (the identity there).
    private let worldRanks: [Int]
    private let isOutermost: Bool
    private let shared: SharedState
    private var condition: NSCondition { shared.condition }
    private var mailboxes: [MailboxKey: [Envelope]] = [:]
    private var rounds: [Int: CollectiveRound] = [:]
    private var nextCollectiveIndex: [Int]

    public init(size: Int) {
        precondition(size >= 1, "an in-process world needs at least one rank, got \(size)")
        self.size = size
        self.worldRanks = Array(0..<size)
        self.isOutermost = true
        self.shared = SharedState()
        self.nextCollectiveIndex = Array(repeating: 0, count: size)
    }

    /// A sub-world of `parent` made of its ranks `members`, in their new order.
    private init(splitFrom parent: InProcessWorld, members: [Int]) {
        self.size = members.count
        self.worldRanks = members.map { parent.worldRanks[$0] }
        self.isOutermost = false
        self.shared = parent.shared
        self.nextCollectiveIndex = Array(repeating: 0, count: members.count)
    }

    public func communicator(rank: Int) -> InProcessCommunicator {
        precondition((0..<size).contains(rank), "rank \(rank) outside 0..<\(size)")
        return InProcessCommunicator(world: self, rank: rank)
    }

    public var communicators: [InProcessCommunicator] {
        (0..<size).map { communicator(rank: $0) }
    }

    /// The first rank reported failed, if any, numbered in the outermost world (a sub-world
    /// shares its failures).
    public var failedRank: Int? {
        condition.lock()
        defer { condition.unlock() }
        return shared.firstFailedRank
    }

    /// Declares `rank` (of this world) dead: blocked and future blocking calls of the other ranks
    /// throw, in this world, the world it was split from and every world split from either.
    public func markFailed(rank: Int) {
        precondition((0..<size).contains(rank), "rank \(rank) outside 0..<\(size)")
        condition.lock()
        defer { condition.unlock() }
        if shared.firstFailedRank == nil { shared.firstFailedRank = worldRanks[rank] }
        shared.failedRanks.insert(worldRanks[rank])
        condition.broadcast()
    }

    /// Declares that `rank` (of this world) will make no more calls in any world (its body returned).
    public func markFinished(rank: Int) {
        precondition((0..<size).contains(rank), "rank \(rank) outside 0..<\(size)")
        condition.lock()
        defer { condition.unlock() }
        shared.finishedRanks.insert(worldRanks[rank])
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

    /// Outermost-world ranks (`run` only uses the outermost world, where they are its own).
    private func ranksThatSawPeerFailure() -> Set<Int> {
        condition.lock()
        defer { condition.unlock() }
        return shared.sawPeerFailure
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
            try throwIfSourceFailed(source, observer: destination)
            if let source {
                if shared.finishedRanks.contains(worldRanks[source]) {
                    throw TransportError("rank \(destination) waits for tag \(tag) from rank \(source), which returned without sending it")
                }
            } else if (0..<size).allSatisfy({ $0 == destination || shared.finishedRanks.contains(worldRanks[$0]) }) {
                throw TransportError("rank \(destination) waits for tag \(tag) from any rank, but every other rank has returned")
            }
            condition.wait()
        }
    }

    /// The source of the first pending message for `destination` with `tag` (from `source`, or
    /// any when nil). With none pending it throws where a receive would throw for a failed peer;
    /// it returns nil where a receive would throw because ranks returned: draining messages after
    /// the senders finished is legitimate.
    fileprivate func probe(at destination: Int, from source: Int?, tag: Int) throws -> Int? {
        if let source { try checkRank(source, role: "source") }
        try checkTag(tag)
        condition.lock()
        defer { condition.unlock() }
        if let envelope = mailboxes[MailboxKey(destination: destination, tag: tag)]?
            .first(where: { source == nil || $0.source == source }) {
            return envelope.source
        }
        try throwIfSourceFailed(source, observer: destination)
        return nil
    }

    /// Sleeps on the world's condition (every send broadcasts it) until a message is pending.
    fileprivate func waitForMessage(at destination: Int, tag: Int, timeout: Double) throws -> Int? {
        try checkTag(tag)
        let deadline = Date(timeIntervalSinceNow: max(0, timeout))
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let envelope = mailboxes[MailboxKey(destination: destination, tag: tag)]?.first {
                return envelope.source
            }
            try throwIfPeerFailed(observer: destination)
            if !condition.wait(until: deadline) { return nil }
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
            if let absent = (0..<size).first(where: { round.kinds[$0] == nil && shared.finishedRanks.contains(worldRanks[$0]) }) {
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

    // MARK: - Split

    /// Joins this rank's next collective as a split: ranks with the same color get one new
    /// sub-world, created once by the last rank to arrive, ranked by key then by rank here.
    fileprivate func split(rank: Int, color: Int?, key: Int) throws -> InProcessCommunicator? {
        let outcome = try collective(rank: rank, kind: .split, contribution: .splitRequest(color: color, key: key)) { contributions in
            var requests: [(rank: Int, color: Int, key: Int)] = []
            for (member, contribution) in contributions.enumerated() {
                guard case .splitRequest(let color, let key) = contribution else { continue }
                guard let color else { continue }
                guard color >= 0 else {
                    throw TransportError("split: rank \(member) passed color \(color); a color must be ≥ 0 (nil for no group)")
                }
                requests.append((member, color, key))
            }
            var memberships: [Membership?] = Array(repeating: nil, count: contributions.count)
            for (_, group) in Dictionary(grouping: requests, by: \.color) {
                let members = group.sorted { ($0.key, $0.rank) < ($1.key, $1.rank) }.map(\.rank)
                let world = InProcessWorld(splitFrom: self, members: members)
                for (newRank, member) in members.enumerated() {
                    memberships[member] = Membership(world: world, rank: newRank)
                }
            }
            return .split(memberships)
        }
        guard case .split(let memberships) = outcome else { throw TransportError("split produced no groups") }
        return memberships[rank].map { $0.world.communicator(rank: $0.rank) }
    }

    // MARK: - Checks (callers hold the lock where noted)

    /// Caller holds the lock. Any failure, in any world sharing this one's record, counts.
    private func throwIfPeerFailed(observer: Int) throws {
        if let failed = shared.firstFailedRank {
            shared.sawPeerFailure.insert(worldRanks[observer])
            throw TransportError("peer \(name(ofWorldRank: failed)) failed")
        }
    }

    /// Caller holds the lock. What a receive or probe that finds nothing pending must throw:
    /// any failure when the source is any rank; only its own when it is a named rank, which
    /// may still send while it runs.
    private func throwIfSourceFailed(_ source: Int?, observer: Int) throws {
        guard let source else { return try throwIfPeerFailed(observer: observer) }
        if shared.failedRanks.contains(worldRanks[source]) {
            shared.sawPeerFailure.insert(worldRanks[observer])
            throw TransportError("peer \(name(ofWorldRank: worldRanks[source])) failed")
        }
    }

    /// How errors here name a rank of the outermost world: by its number in this world, when
    /// it is a member, and in the outermost one.
    private func name(ofWorldRank worldRank: Int) -> String {
        if isOutermost { return "rank \(worldRank)" }
        if let local = worldRanks.firstIndex(of: worldRank) { return "rank \(local) (world rank \(worldRank))" }
        return "world rank \(worldRank)"
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

    public func probe(from source: Int?, tag: Int) throws -> Int? {
        try world.probe(at: rank, from: source, tag: tag)
    }

    public func waitForMessage(tag: Int, timeout: Double) throws -> Int? {
        try world.waitForMessage(at: rank, tag: tag, timeout: timeout)
    }

    /// The group's communicator is an `InProcessCommunicator` of a sub-world of `world`.
    public func split(color: Int?, key: Int) throws -> (any Communicator)? {
        try world.split(rank: rank, color: color, key: key)
    }

    /// Marks this rank failed, so the other ranks' blocked calls throw instead of waiting for
    /// it, and throws `message` (`code` has no process to end here).
    public func abort(code: Int32, message: String) throws {
        world.markFailed(rank: rank)
        throw TransportError(message)
    }
}

// MARK: - Shared state types

/// What an outermost world and every world split from it share, in outermost rank numbers.
private final class SharedState {
    let condition = NSCondition()
    var firstFailedRank: Int?
    var failedRanks: Set<Int> = []
    var finishedRanks: Set<Int> = []
    /// Ranks that were told a peer failed; their own errors are consequences, not causes.
    var sawPeerFailure: Set<Int> = []
}

/// A rank's place in a split's outcome.
private struct Membership {
    let world: InProcessWorld
    let rank: Int
}

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
    case split

    var description: String {
        switch self {
        case .barrier: "barrier"
        case .broadcastBytes(let root): "byte broadcast from rank \(root)"
        case .broadcastFloats(let root, let count): "broadcast of \(count) floats from rank \(root)"
        case .allGather: "allGather"
        case .allToAll: "allToAll"
        case .allReduce(let operation, let count): "allReduce \(operation) of \(count) values"
        case .split: "split"
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
    case splitRequest(color: Int?, key: Int)
    /// Each rank's new world and rank in it (nil: no group), by rank.
    case split([Membership?])
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
