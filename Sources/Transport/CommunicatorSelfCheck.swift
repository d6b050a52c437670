// CommunicatorSelfCheck: exercises every Communicator operation but abort with expectations derived from the world size.
import Foundation

/// Checks a communicator end to end. Every rank must call `run` at the same time (it is made of
/// collectives). Each check's verdict is agreed on by all ranks with an allReduce, so when one
/// rank sees a wrong result every rank throws, instead of the others walking into the next
/// collective and hanging.
public enum CommunicatorSelfCheck {
    /// Returns one line per check ("allReduce sum: ok"); throws a TransportError naming the
    /// first check that failed.
    public static func run(_ comm: any Communicator) throws -> [String] {
        var report: [String] = []
        let rank = comm.rank
        let size = comm.size

        func check(_ name: String, _ body: () throws -> String?) throws {
            let localFailure: String?
            do {
                localFailure = try body()
            } catch {
                // The operation itself failed; peers may be stuck, so agreeing is not possible.
                throw TransportError("self-check \"\(name)\" failed on rank \(rank): \(error)")
            }
            let failingRanks = try comm.allReduce([localFailure == nil ? 0 : 1], .sum)
            guard failingRanks.count == 1 else {
                throw TransportError("self-check \"\(name)\": verdict allReduce returned \(failingRanks.count) values")
            }
            if let localFailure {
                throw TransportError("self-check \"\(name)\" failed on rank \(rank): \(localFailure)")
            }
            if failingRanks[0] != 0 {
                throw TransportError("self-check \"\(name)\" failed on \(Int(failingRanks[0])) other rank(s)")
            }
            report.append("\(name): ok")
        }

        func expect<Value: Equatable>(_ actual: Value, _ expected: Value) -> String? {
            actual == expected ? nil : "expected \(expected), got \(actual)"
        }

        try check("rank and size") {
            guard size >= 1, (0..<size).contains(rank) else { return "rank \(rank) of size \(size)" }
            // Every rank must report the same size and a distinct rank.
            let sizes = try comm.allReduce([Double(size), -Double(size)], .max)
            if sizes != [Double(size), -Double(size)] { return "ranks disagree on size: max/−min \(sizes)" }
            let ranks = try comm.allGather([Float(rank)])
            return expect(ranks, (0..<size).map { [Float($0)] })
        }

        try check("barrier") {
            try comm.barrier()
            try comm.barrier()
            return nil
        }

        try check("allReduce sum") {
            let sums = try comm.allReduce([Double(rank + 1), 1, Double(rank), 0.5], .sum)
            let n = Double(size)
            return expect(sums, [n * (n + 1) / 2, n, n * (n - 1) / 2, 0.5 * n])
        }

        try check("allReduce max") {
            let maxima = try comm.allReduce([Double(rank), -Double(rank)], .max)
            return expect(maxima, [Double(size - 1), 0])
        }

        try check("allReduce min") {
            let minima = try comm.allReduce([Double(rank), -Double(rank)], .min)
            return expect(minima, [0, -Double(size - 1)])
        }

        try check("allReduce empty") {
            expect(try comm.allReduce([], .sum), [])
        }

        try check("allGather") {
            // Rank r contributes r+1 copies of r.
            let blocks = try comm.allGather(Array(repeating: Float(rank), count: rank + 1))
            return expect(blocks, (0..<size).map { Array(repeating: Float($0), count: $0 + 1) })
        }

        try check("allGather empty blocks") {
            let allEmpty = try comm.allGather([])
            if let failure = expect(allEmpty, Array(repeating: [Float](), count: size)) { return "all empty: \(failure)" }
            // Even ranks contribute nothing, odd ranks their rank twice.
            let mixed = try comm.allGather(rank % 2 == 0 ? [] : [Float(rank), Float(rank)])
            let expected = (0..<size).map { $0 % 2 == 0 ? [] : [Float($0), Float($0)] }
            if let failure = expect(mixed, expected) { return "mixed: \(failure)" }
            return nil
        }

        try check("allGather into one buffer") {
            // Rank r's block holds r + 1 values (every third rank none), r·100 + i; the other
            // blocks start as −1 and must be received in place.
            let counts = (0..<size).map { $0 % 3 == 2 ? 0 : $0 + 1 }
            let offsets = BlockLayout.offsets(counts)
            let expected = (0..<size).flatMap { r in (0..<counts[r]).map { Float(r * 100 + $0) } }
            var buffer = [Float](repeating: -1, count: expected.count)
            for i in 0..<counts[rank] { buffer[offsets[rank] + i] = Float(rank * 100 + i) }
            try buffer.withUnsafeMutableBufferPointer { try comm.allGather(into: $0, counts: counts) }
            return expect(buffer, expected)
        }

        try check("allToAll") {
            // Rank s sends rank d a block of (3s + d) mod 4 values (some empty), each naming s, d and
            // its position; rank d must receive exactly the blocks addressed to it, by source.
            let received = try comm.allToAll((0..<size).map { allToAllBlock(from: rank, to: $0) })
            if let failure = expect(received, (0..<size).map { allToAllBlock(from: $0, to: rank) }) { return "mixed: \(failure)" }
            let empty = try comm.allToAll(Array(repeating: [], count: size))
            if let failure = expect(empty, Array(repeating: [Float](), count: size)) { return "all empty: \(failure)" }
            return nil
        }

        try check("byte broadcast") {
            let root = size - 1
            let expected = (0..<(1000 + size)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ size) }
            let mine = rank == root ? expected : [UInt8](repeating: 0xAB, count: rank)
            if let failure = expect(try comm.broadcast(mine, root: root), expected) {
                return "from last rank: \(failure)"
            }
            let empty = try comm.broadcast(rank == 0 ? [] : [1, 2, 3], root: 0)
            if let failure = expect(empty, []) { return "empty from rank 0: \(failure)" }
            return nil
        }

        try check("float broadcast") {
            let root = size - 1
            let expected = (0..<257).map { Float($0) * 0.5 + Float(size) }
            var values = rank == root ? expected : [Float](repeating: -1, count: expected.count)
            try values.withUnsafeMutableBufferPointer { try comm.broadcast($0, root: root) }
            return expect(values, expected)
        }

        try check("send/receive ring") {
            // Each rank sends to the next and receives from the previous (itself when alone).
            let next = (rank + 1) % size
            let previous = (rank + size - 1) % size
            try comm.send(ringPayload(from: rank, size: size), to: next, tag: 101)
            let (source, bytes) = try comm.receive(from: previous, tag: 101)
            if source != previous { return "source \(source), expected \(previous)" }
            return expect(bytes, ringPayload(from: previous, size: size))
        }

        try check("receive from any source") {
            // Every rank, rank 0 included, reports to rank 0; rank 0 takes them in any order.
            try comm.send([UInt8(truncatingIfNeeded: rank), 42], to: 0, tag: 102)
            guard rank == 0 else { return nil }
            var seen = Set<Int>()
            for _ in 0..<size {
                let (source, bytes) = try comm.receive(from: nil, tag: 102)
                if bytes != [UInt8(truncatingIfNeeded: source), 42] { return "payload \(bytes) from rank \(source)" }
                if !seen.insert(source).inserted { return "rank \(source) received twice" }
            }
            return expect(seen, Set(0..<size))
        }

        try check("message order and tags") {
            // Three messages on one tag must arrive in order; a later message on another tag
            // must be receivable first.
            let next = (rank + 1) % size
            let previous = (rank + size - 1) % size
            for sequence in 0..<3 { try comm.send([UInt8(sequence), UInt8(truncatingIfNeeded: rank)], to: next, tag: 103) }
            try comm.send([], to: next, tag: 104)
            let early = try comm.receive(from: previous, tag: 104)
            if !early.bytes.isEmpty { return "empty message on tag 104 arrived with \(early.bytes.count) bytes" }
            for sequence in 0..<3 {
                let message = try comm.receive(from: previous, tag: 103)
                if let failure = expect(message.bytes, [UInt8(sequence), UInt8(truncatingIfNeeded: previous)]) {
                    return "message \(sequence) on tag 103: \(failure)"
                }
            }
            return nil
        }

        try check("probe") {
            // Nothing is ever sent on tag 106, and nothing on tag 105 before the barrier, so a rank
            // ahead of the others cannot send before this one has looked.
            let next = (rank + 1) % size
            let previous = (rank + size - 1) % size
            let before = [try comm.probe(from: nil, tag: 105), try comm.probe(from: previous, tag: 105)]
            try comm.barrier()
            try comm.send(ringPayload(from: rank, size: size).reversed(), to: next, tag: 105)
            // MPI may take a moment to make a sent message visible: wait for it (at most 10 s).
            let found = try comm.waitForMessage(tag: 105, timeout: 10)
            let waitedInVain = try comm.waitForMessage(tag: 106, timeout: 0.01)
            let again = try comm.probe(from: previous, tag: 105)
            let otherTag = try comm.probe(from: nil, tag: 106)
            // Receive from whichever rank was found: a probe that names a rank has a message from it.
            let message = try found.map { try comm.receive(from: $0, tag: 105) }
            let after = try comm.probe(from: nil, tag: 105)
            return firstFailure([
                ("before any send", before != [nil, nil] ? "found a message from rank \(before.compactMap { $0 })" : nil),
                ("probe from any rank", expect(found, previous)),
                ("second probe (not consumed)", expect(again, previous)),
                ("other tag", otherTag.map { "found a message from rank \($0) on tag 106" }),
                ("wait on a silent tag", waitedInVain.map { "returned rank \($0) on tag 106 instead of timing out" }),
                ("receive after probe", expect(message?.source, previous)
                    ?? expect(message?.bytes, ringPayload(from: previous, size: size).reversed())),
                ("after the receive", after.map { "a message from rank \($0) is still pending" }),
            ])
        }

        try check("split into even and odd ranks") {
            // Keys reverse the order: a group's rank 0 is its highest rank here. Every operation
            // runs before any comparison, so a wrong answer cannot leave a peer waiting.
            let members = Array((0..<size).filter { $0 % 2 == rank % 2 }.reversed())
            guard let group = try comm.split(color: rank % 2, key: size - rank) else { return "no group for color \(rank % 2)" }
            let sums = try group.allReduce([Double(rank), 1], .sum)
            let gathered = try group.allGather([Float(rank)])
            // One tag on both communicators: each message arrives on the one it was sent on.
            let groupPrevious = (group.rank + group.size - 1) % group.size
            try comm.send([0, UInt8(truncatingIfNeeded: rank)], to: (rank + 1) % size, tag: 107)
            try group.send([1, UInt8(truncatingIfNeeded: rank)], to: (group.rank + 1) % group.size, tag: 107)
            let inGroup = try group.receive(from: groupPrevious, tag: 107)
            let inParent = try comm.receive(from: (rank + size - 1) % size, tag: 107)
            // A split of the group: its first half (rounded up) and the rest, each summing ranks.
            let firstHalf = group.rank < (group.size + 1) / 2
            let half = try group.split(color: firstHalf ? 0 : 1, key: group.rank)
            let halfMembers = firstHalf ? Array(members.prefix((members.count + 1) / 2)) : Array(members.dropFirst((members.count + 1) / 2))
            let halfSums = try half?.allReduce([Double(rank)], .sum)
            try group.barrier()
            let expectedRank = members.firstIndex(of: rank)
            return firstFailure([
                ("rank and size", expect([group.rank, group.size], [expectedRank ?? -1, members.count])),
                ("allReduce", expect(sums, [Double(members.reduce(0, +)), Double(members.count)])),
                ("allGather", expect(gathered, members.map { [Float($0)] })),
                ("send/receive in the group", members.indices.contains(groupPrevious)
                    ? expect(inGroup.bytes, [1, UInt8(truncatingIfNeeded: members[groupPrevious])]) : "no rank \(groupPrevious)"),
                ("send/receive alongside in the parent", expect(inParent.bytes, [0, UInt8(truncatingIfNeeded: (rank + size - 1) % size)])),
                ("nested split", expect(halfSums, [Double(halfMembers.reduce(0, +))])),
            ])
        }

        try check("split with no group") {
            // The last rank stays out; the others form one group in their order here (equal keys).
            let outside = rank == size - 1
            let group = try comm.split(color: outside ? nil : 7, key: 0)
            let sums = try group?.allReduce([Double(rank)], .sum)
            if outside { return group.map { "the rank left out got a group of \($0.size)" } }
            return firstFailure([
                ("rank and size", expect(group.map { [$0.rank, $0.size] }, [rank, size - 1])),
                ("allReduce", expect(sums, [Double((size - 1) * (size - 2) / 2)])),
            ])
        }

        try comm.barrier()
        return report
    }

    /// The first of several named checks that failed, as "name: failure".
    private static func firstFailure(_ results: [(String, String?)]) -> String? {
        results.first { $0.1 != nil }.map { "\($0.0): \($0.1!)" }
    }

    private static func allToAllBlock(from source: Int, to destination: Int) -> [Float] {
        (0..<((3 * source + destination) % 4)).map { Float(source * 1000 + destination * 10 + $0) }
    }

    private static func ringPayload(from rank: Int, size: Int) -> [UInt8] {
        (0..<(64 + rank)).map { UInt8(truncatingIfNeeded: $0 &+ rank &* 31 &+ size) }
    }
}
