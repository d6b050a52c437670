// Communicator: the message-passing interface the coordinator and workers are written against.

/// A failure of the transport itself (a peer vanished, a message was malformed).
public struct TransportError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum ReduceOperation: Sendable {
    case sum, max, min
}

/// A group of `size` ranks running the same program (SPMD). Collective calls must be made by
/// every rank of the group in the same order. Implementations: MPI (one process per rank) and
/// in-process (one thread per rank, for tests).
public protocol Communicator: Sendable {
    /// This rank, in 0..<size. Rank 0 is the coordinator.
    var rank: Int { get }
    var size: Int { get }

    /// Blocks until every rank has entered the barrier.
    func barrier() throws

    /// Every rank receives `root`'s bytes; the other ranks' arguments are ignored.
    func broadcast(_ bytes: [UInt8], root: Int) throws -> [UInt8]

    /// Every rank receives `root`'s values into `values`; all ranks pass the same count.
    func broadcast(_ values: UnsafeMutableBufferPointer<Float>, root: Int) throws

    /// Every rank contributes a block of any length; every rank receives all blocks, by rank.
    func allGather(_ block: [Float]) throws -> [[Float]]

    /// The same, in place and without copies: `buffer` holds every rank's block back to back in
    /// rank order (rank r's is `counts[r]` values); on entry this rank's block is filled, on return
    /// every block is. Every rank passes the same counts (checked), summing to `buffer.count`.
    func allGather(into buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws

    /// Personalised exchange: every rank passes `size` blocks of any length, `blocks[i]` going to
    /// rank i (its own included), and receives one block from each rank, by rank.
    func allToAll(_ blocks: [[Float]]) throws -> [[Float]]

    /// Element-wise reduction over ranks; every rank passes the same count and gets the result.
    func allReduce(_ values: [Double], _ operation: ReduceOperation) throws -> [Double]

    /// Point-to-point: delivers `bytes` to rank `destination`, matched by `tag` (tag ≥ 0).
    func send(_ bytes: [UInt8], to destination: Int, tag: Int) throws

    /// Receives the next message with `tag`, from `source` or from any rank when nil.
    func receive(from source: Int?, tag: Int) throws -> (source: Int, bytes: [UInt8])

    /// Non-blocking: the source rank of a pending message with `tag` (from `source`, or from any
    /// rank when nil), left in place; nil when none is pending. `receive(from:tag:)` with that
    /// source and tag then returns that message. Lets a coordinator serve its queue between
    /// other work instead of blocking in a receive.
    func probe(from source: Int?, tag: Int) throws -> Int?

    /// Waits until a message with `tag` from any rank is pending, or `timeout` seconds have
    /// passed; returns its source (left in place, as `probe`) or nil after the timeout. Lets a
    /// coordinator with nothing else to do sleep until a worker speaks, yet wake for heartbeats.
    func waitForMessage(tag: Int, timeout: Double) throws -> Int?

    /// Collective over every rank: ranks passing the same `color` (≥ 0) form a new communicator,
    /// ranked by `key`, then by rank here. A rank passing nil joins no group and gets nil.
    /// The new communicator's messages and collectives never match this one's (nor another
    /// group's), so groups can run their own collectives concurrently.
    func split(color: Int?, key: Int) throws -> (any Communicator)?

    /// Ends the job because this rank cannot go on and its peers may be blocked waiting for it.
    /// The caller reports `message` first; the MPI implementation aborts every rank with exit
    /// status `code` and never returns. The in-process one marks this rank failed (blocked calls
    /// of the other ranks throw) and throws a TransportError carrying `message`.
    func abort(code: Int32, message: String) throws
}

extension Communicator {
    /// `allGather(into:counts:)` through the copying `allGather(_:)`, for implementations
    /// without a zero-copy path (the in-process one).
    public func allGather(into buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        let offsets = try BlockLayout.offsets(counts, total: buffer.count, ranks: size)
        let own = Array(buffer[offsets[rank]..<(offsets[rank] + counts[rank])])
        let blocks = try allGather(own)
        for (r, block) in blocks.enumerated() {
            guard block.count == counts[r] else {
                throw TransportError("allGather(into:): rank \(r) sent \(block.count) values, the counts say \(counts[r])")
            }
            block.withUnsafeBufferPointer { source in
                if let base = source.baseAddress { (buffer.baseAddress! + offsets[r]).update(from: base, count: block.count) }
            }
        }
    }

}

/// Where each rank's block starts in an `allGather(into:counts:)` buffer.
public enum BlockLayout {
    /// Running sums of `counts`: block r starts at offsets[r].
    public static func offsets(_ counts: [Int]) -> [Int] {
        var offsets: [Int] = []
        var running = 0
        for count in counts {
            offsets.append(running)
            running += count
        }
        return offsets
    }

    /// The offsets, after checking that there is one non-negative count per rank and that the
    /// counts fill the buffer exactly.
    public static func offsets(_ counts: [Int], total: Int, ranks: Int) throws -> [Int] {
        guard counts.count == ranks, counts.allSatisfy({ $0 >= 0 }), counts.reduce(0, +) == total else {
            throw TransportError("allGather(into:): \(counts.count) block counts \(counts) for \(ranks) ranks and a buffer of \(total) values")
        }
        return offsets(counts)
    }
}
