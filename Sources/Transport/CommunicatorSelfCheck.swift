// CommunicatorSelfCheck: exercises every Communicator operation with expectations derived from the world size.

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

        try comm.barrier()
        return report
    }

    private static func allToAllBlock(from source: Int, to destination: Int) -> [Float] {
        (0..<((3 * source + destination) % 4)).map { Float(source * 1000 + destination * 10 + $0) }
    }

    private static func ringPayload(from rank: Int, size: Int) -> [UInt8] {
        (0..<(64 + rank)).map { UInt8(truncatingIfNeeded: $0 &+ rank &* 31 &+ size) }
    }
}
