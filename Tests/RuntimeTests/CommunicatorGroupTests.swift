// CommunicatorGroupTests: probe, split and abort of the threads-as-ranks communicator, including failures inside groups.
import Foundation
import XCTest
@testable import Transport

final class CommunicatorGroupTests: XCTestCase {
    // MARK: - Probe

    func testProbeFindsPendingMessagesWithoutConsumingThem() throws {
        struct Seen: Sendable {
            var before: [Int?] = []
            var probes: [Int?] = []
            var received: [UInt8] = []
            var afterReceive: Int?
            var otherTag: [UInt8] = []
        }
        let seen = try InProcessDeadline.run(size: 3) { comm -> Seen in
            var seen = Seen()
            seen.before = [try comm.probe(from: nil, tag: 9), try comm.probe(from: 1, tag: 9)]
            try comm.barrier()
            if comm.rank == 1 { try comm.send([1, 11], to: 0, tag: 9) }
            if comm.rank == 2 { try comm.send([2, 22], to: 0, tag: 10) }
            try comm.barrier()
            guard comm.rank == 0 else { return seen }
            seen.probes = [
                try comm.probe(from: nil, tag: 9),
                try comm.probe(from: 1, tag: 9),   // still pending: probing does not consume
                try comm.probe(from: 2, tag: 9),   // rank 2 sent on another tag
                try comm.probe(from: nil, tag: 10),
                try comm.probe(from: nil, tag: 11),
            ]
            seen.received = try comm.receive(from: seen.probes[0] ?? 1, tag: 9).bytes
            seen.afterReceive = try comm.probe(from: nil, tag: 9)
            seen.otherTag = try comm.receive(from: nil, tag: 10).bytes
            return seen
        }
        XCTAssertTrue(seen.allSatisfy { $0.before == [nil, nil] }, "nothing pending before any send")
        XCTAssertEqual(seen[0].probes, [1, 1, nil, 2, nil])
        XCTAssertEqual(seen[0].received, [1, 11])
        XCTAssertNil(seen[0].afterReceive, "the receive consumed the probed message")
        XCTAssertEqual(seen[0].otherTag, [2, 22])
    }

    func testProbeRejectsInvalidArguments() throws {
        let comm = InProcessWorld(size: 2).communicator(rank: 0)
        XCTAssertThrowsError(try comm.probe(from: 2, tag: 0))
        XCTAssertThrowsError(try comm.probe(from: nil, tag: -1))
        XCTAssertNil(try comm.probe(from: 1, tag: 0))
    }

    /// Rank 0 serves a task queue by polling, as a coordinator that also trains does: every task
    /// is done exactly once and each worker is told to stop.
    func testProbeDrivenQueueServesEveryWorker() throws {
        let taskCount = 20
        let done = try InProcessDeadline.run(size: 4) { comm -> [Int] in
            if comm.rank == 0 {
                var next = 0
                var finished: [Int] = []
                var working = comm.size - 1
                for worker in 1..<comm.size {
                    try comm.send([UInt8(next)], to: worker, tag: 2)
                    next += 1
                }
                while working > 0 {
                    guard let source = try comm.probe(from: nil, tag: 1) else {
                        usleep(100)  // the coordinator's own work would go here
                        continue
                    }
                    finished.append(Int(try comm.receive(from: source, tag: 1).bytes[0]))
                    if next < taskCount {
                        try comm.send([UInt8(next)], to: source, tag: 2)
                        next += 1
                    } else {
                        try comm.send([], to: source, tag: 2)
                        working -= 1
                    }
                }
                return finished.sorted()
            }
            var mine: [Int] = []
            while true {
                let assignment = try comm.receive(from: 0, tag: 2).bytes
                guard let task = assignment.first else { return mine }
                mine.append(Int(task))
                try comm.send([task], to: 0, tag: 1)
            }
        }
        XCTAssertEqual(done[0], Array(0..<taskCount))
        XCTAssertEqual(done.dropFirst().flatMap { $0 }.sorted(), Array(0..<taskCount))
    }

    func testPollingProbeThrowsOnceAPeerFails() throws {
        let observed = ObservedErrors()
        let error = try InProcessDeadline.runExpectingError(size: 3) { comm in
            do {
                switch comm.rank {
                case 0: while try comm.probe(from: nil, tag: 1) == nil { usleep(100) }
                case 1: while try comm.probe(from: 2, tag: 1) == nil { usleep(100) }
                default:
                    Thread.sleep(forTimeInterval: 0.05)
                    throw TransportError("rank 2 broke")
                }
            } catch {
                observed.record(comm.rank, error)
                throw error
            }
        }
        XCTAssertEqual("\(error)", "rank 2 broke")
        XCTAssertEqual(observed.message(of: 0), "peer rank 2 failed")
        XCTAssertEqual(observed.message(of: 1), "peer rank 2 failed")
    }

    func testProbeStillFindsMessagesDeliveredBeforeAFailureAndReturnsNilAfterReturns() throws {
        let world = InProcessWorld(size: 3)
        try world.communicator(rank: 1).send([5], to: 0, tag: 4)
        world.markFailed(rank: 1)
        let comm = world.communicator(rank: 0)
        XCTAssertEqual(try comm.probe(from: nil, tag: 4), 1)
        XCTAssertEqual(try comm.receive(from: 1, tag: 4).bytes, [5])
        XCTAssertThrowsError(try comm.probe(from: nil, tag: 4)) { XCTAssertEqual("\($0)", "peer rank 1 failed") }
        XCTAssertThrowsError(try comm.probe(from: 1, tag: 4))

        // Ranks that returned normally: draining what they left is legitimate, so nil, not an error.
        let finished = InProcessWorld(size: 2)
        finished.markFinished(rank: 1)
        XCTAssertNil(try finished.communicator(rank: 0).probe(from: nil, tag: 4))
        XCTAssertNil(try finished.communicator(rank: 0).probe(from: 1, tag: 4))
    }

    // MARK: - Split

    /// Groups of 4, 2 and 1 ranks (the first in reverse order by key) run collectives and
    /// point-to-point on the same tags concurrently, alongside messages in the parent.
    func testSplitGroupsOfDifferentSizesRunConcurrentlyWithoutInterfering() throws {
        let colors = [0, 1, 0, 2, 0, 1, 0]
        let size = colors.count
        // Expected groups by color: members' parent ranks in new-rank order.
        let groups: [Int: [Int]] = [0: [6, 4, 2, 0], 1: [1, 5], 2: [3]]
        let rounds = 40
        struct Record: Sendable {
            var rank = 0, size = 0
            var sums: [[Double]] = []
            var gathered: [[Float]] = []
            var broadcasts: [[UInt8]] = []
            var ring: [[UInt8]] = []
            var anySource: Set<Int> = []
            var parent: [UInt8] = []
        }
        let records = try InProcessDeadline.run(size: size, seconds: 20) { comm -> Record in
            let color = colors[comm.rank]
            let key = color == 0 ? -comm.rank : 0
            guard let group = try comm.split(color: color, key: key) else { throw TransportError("no group") }
            var record = Record(rank: group.rank, size: group.size)
            // A parent message on the tag the groups use; received only after all group traffic.
            try comm.send([200, UInt8(comm.rank)], to: (comm.rank + 1) % size, tag: 5)
            let next = (group.rank + 1) % group.size
            let previous = (group.rank + group.size - 1) % group.size
            for round in 0..<rounds {
                record.sums.append(try group.allReduce([Double(comm.rank), Double(round)], .sum))
                if round % 8 == 0 { record.gathered = try group.allGather([Float(comm.rank)]) }
                record.broadcasts.append(try group.broadcast([UInt8(color), UInt8(round), UInt8(comm.rank)], root: group.size - 1))
                try group.send([UInt8(color), UInt8(round), UInt8(comm.rank)], to: next, tag: 5)
                record.ring.append(try group.receive(from: previous, tag: 5).bytes)
                if round % 5 == comm.rank % 5 { usleep(200) }  // vary the interleaving between groups
            }
            // Every member reports to the group's rank 0 on the parent's tag; it takes them in any order.
            try group.send([UInt8(comm.rank)], to: 0, tag: 5)
            if group.rank == 0 {
                for _ in 0..<group.size { record.anySource.insert(try group.receive(from: nil, tag: 5).source) }
            }
            if try group.probe(from: nil, tag: 5) != nil { throw TransportError("group message left over") }
            record.parent = try comm.receive(from: (comm.rank + size - 1) % size, tag: 5).bytes
            try comm.barrier()
            return record
        }
        for (rank, record) in records.enumerated() {
            let members = groups[colors[rank]]!
            let groupRank = members.firstIndex(of: rank)!
            let label = "rank \(rank)"
            XCTAssertEqual(record.rank, groupRank, label)
            XCTAssertEqual(record.size, members.count, label)
            XCTAssertEqual(record.sums, (0..<rounds).map { [Double(members.reduce(0, +)), Double($0 * members.count)] }, label)
            XCTAssertEqual(record.gathered, members.map { [Float($0)] }, label)
            XCTAssertEqual(record.broadcasts, (0..<rounds).map { [UInt8(colors[rank]), UInt8($0), UInt8(members.last!)] }, label)
            let previous = members[(groupRank + members.count - 1) % members.count]
            XCTAssertEqual(record.ring, (0..<rounds).map { [UInt8(colors[rank]), UInt8($0), UInt8(previous)] }, label)
            XCTAssertEqual(record.anySource, groupRank == 0 ? Set(0..<members.count) : [], label)
            XCTAssertEqual(record.parent, [200, UInt8((rank + size - 1) % size)], label)
        }
    }

    /// The self-check, made of collectives and messages on fixed tags, in two groups at once.
    func testSelfCheckPassesInConcurrentGroups() throws {
        let reports = try InProcessDeadline.run(size: 5, seconds: 30) { comm -> [String] in
            guard let group = try comm.split(color: comm.rank < 3 ? 0 : 1, key: 0) else { return [] }
            let report = try CommunicatorSelfCheck.run(group)
            try comm.barrier()
            return report
        }
        XCTAssertTrue(reports.allSatisfy { $0 == reports[0] && !$0.isEmpty }, "\(reports)")
        XCTAssertTrue(reports[0].contains("split into even and odd ranks: ok"), "\(reports[0])")
    }

    func testNilColorLeavesARankOutAndANegativeColorFailsEveryRank() throws {
        let results = try InProcessDeadline.run(size: 4) { comm -> [Double]? in
            let group = try comm.split(color: comm.rank == 2 ? nil : 3, key: 0)
            return try group.map { try $0.allReduce([Double(comm.rank), Double($0.rank)], .sum) }
        }
        XCTAssertNil(results[2])
        for rank in [0, 1, 3] { XCTAssertEqual(results[rank], [4, 3], "rank \(rank)") }

        let everyoneOut = try InProcessDeadline.run(size: 3) { comm in try comm.split(color: nil, key: 0) == nil }
        XCTAssertEqual(everyoneOut, [true, true, true])

        let observed = ObservedErrors()
        let error = try InProcessDeadline.runExpectingError(size: 3) { comm in
            do {
                _ = try comm.split(color: comm.rank == 1 ? -1 : 0, key: 0)
            } catch {
                observed.record(comm.rank, error)
                throw error
            }
        }
        XCTAssertTrue("\(error)".contains("rank 1 passed color -1"), "\(error)")
        for rank in 0..<3 { XCTAssertEqual(observed.message(of: rank), "\(error)", "every rank throws, rank \(rank)") }
    }

    func testSplitMismatchedWithAnotherCollectiveThrows() throws {
        let error = try InProcessDeadline.runExpectingError(size: 2) { comm in
            if comm.rank == 0 { _ = try comm.split(color: 0, key: 0) } else { try comm.barrier() }
        }
        XCTAssertTrue("\(error)".contains("mismatch"), "\(error)")
    }

    /// 8 ranks → halves → quarters; each level's collectives and the parent's interleave.
    func testNestedSplit() throws {
        struct Levels: Sendable { var half: [Int], quarter: [Int], sums: [Double], worldSum: Double }
        let levels = try InProcessDeadline.run(size: 8) { comm -> Levels in
            guard let half = try comm.split(color: comm.rank / 4, key: comm.rank) else { throw TransportError("no half") }
            // Quarters in reverse order within each half.
            guard let quarter = try half.split(color: half.rank % 2, key: -half.rank) else { throw TransportError("no quarter") }
            let quarterSum = try quarter.allReduce([Double(comm.rank)], .sum)[0]
            let worldSum = try comm.allReduce([Double(comm.rank)], .sum)[0]
            let halfSum = try half.allReduce([Double(comm.rank)], .sum)[0]
            let again = try quarter.allGather([Float(comm.rank)]).map { Double($0[0]) }.reduce(0, +)
            return Levels(half: [half.rank, half.size], quarter: [quarter.rank, quarter.size],
                          sums: [quarterSum, halfSum, again], worldSum: worldSum)
        }
        for (rank, level) in levels.enumerated() {
            // Quarter members: same half, same parity of the rank within it; higher ranks first.
            let members = (0..<8).filter { $0 / 4 == rank / 4 && ($0 % 4) % 2 == (rank % 4) % 2 }.reversed()
            let quarterSum = Double(members.reduce(0, +))
            let halfSum = Double((0..<8).filter { $0 / 4 == rank / 4 }.reduce(0, +))
            XCTAssertEqual(level.half, [rank % 4, 4], "rank \(rank)")
            XCTAssertEqual(level.quarter, [Array(members).firstIndex(of: rank)!, 2], "rank \(rank)")
            XCTAssertEqual(level.sums, [quarterSum, halfSum, quarterSum], "rank \(rank)")
            XCTAssertEqual(level.worldSum, 28, "rank \(rank)")
        }
    }

    // MARK: - Failures in groups

    /// Group {0, 1}: rank 1 fails while rank 0 waits in the group's barrier. Group {2, 3}: rank 2
    /// waits for a message from its group's rank 1 (world rank 3), which waits in the world's
    /// barrier. Nobody hangs; the cause is rethrown and each rank names the failed peer.
    func testFailureInAGroupUnblocksEveryWorld() throws {
        let observed = ObservedErrors()
        let error = try InProcessDeadline.runExpectingError(size: 4) { comm in
            do {
                guard let group = try comm.split(color: comm.rank / 2, key: comm.rank) else { return }
                switch comm.rank {
                case 0: try group.barrier()
                case 1:
                    Thread.sleep(forTimeInterval: 0.05)  // let the others block first
                    throw TransportError("rank 1 broke")
                case 2: _ = try group.receive(from: 1, tag: 1)
                default: try comm.barrier()
                }
            } catch {
                observed.record(comm.rank, error)
                throw error
            }
        }
        XCTAssertEqual("\(error)", "rank 1 broke", "the cause, not a peer's reaction, is rethrown")
        XCTAssertEqual(observed.message(of: 0), "peer rank 1 (world rank 1) failed")
        XCTAssertEqual(observed.message(of: 3), "peer rank 1 failed")
        // Rank 3's reaction ends it, failed too: the named receive from it gives up then.
        XCTAssertEqual(observed.message(of: 2), "peer rank 1 (world rank 3) failed")
    }

    /// A failure outside a group still unblocks the group's waiting collectives and any-source receives.
    func testFailureOutsideAGroupUnblocksItsCalls() throws {
        let observed = ObservedErrors()
        let error = try InProcessDeadline.runExpectingError(size: 4) { comm in
            do {
                let group = try comm.split(color: comm.rank == 0 ? nil : 1, key: 0)
                switch comm.rank {
                case 0:
                    Thread.sleep(forTimeInterval: 0.05)
                    throw TransportError("rank 0 broke")
                case 1: try group!.barrier()
                case 2: try group!.barrier()
                default: _ = try group!.receive(from: nil, tag: 1)
                }
            } catch {
                observed.record(comm.rank, error)
                throw error
            }
        }
        XCTAssertEqual("\(error)", "rank 0 broke")
        for rank in 1...3 { XCTAssertEqual(observed.message(of: rank), "peer world rank 0 failed", "rank \(rank)") }
    }

    /// A rank whose group members already returned cannot wait for them forever.
    func testGroupCollectiveWithAReturnedMemberThrows() throws {
        let error = try InProcessDeadline.runExpectingError(size: 3) { comm in
            guard let group = try comm.split(color: comm.rank == 0 ? nil : 0, key: 0) else { return }
            if group.rank == 0 { try group.barrier() }
        }
        XCTAssertTrue("\(error)".contains("returned without joining it"), "\(error)")
    }

    // MARK: - Abort

    func testAbortFailsThisRankAndUnblocksTheOthers() throws {
        let observed = ObservedErrors()
        let error = try InProcessDeadline.runExpectingError(size: 3) { comm in
            do {
                switch comm.rank {
                case 0: _ = try comm.receive(from: nil, tag: 1)
                case 1: try comm.barrier()
                default:
                    Thread.sleep(forTimeInterval: 0.05)
                    try comm.abort(code: 3, message: "rank 2 sent nothing for 30 s")
                    throw TransportError("abort returned")
                }
            } catch {
                observed.record(comm.rank, error)
                throw error
            }
        }
        XCTAssertEqual("\(error)", "rank 2 sent nothing for 30 s")
        XCTAssertEqual(observed.message(of: 0), "peer rank 2 failed")
        XCTAssertEqual(observed.message(of: 1), "peer rank 2 failed")
    }

    func testAbortInAGroupMarksTheWorldRankFailed() throws {
        let world = InProcessWorld(size: 2)
        let outcome = try InProcessDeadline.wait(seconds: 10) { () throws -> [String] in
            let messages = MessageSlots(count: 2)
            let threads = (0..<2).map { rank in
                Thread {
                    let comm = world.communicator(rank: rank)
                    do {
                        // Reverse order: the group's rank 0 is world rank 1.
                        let group = try comm.split(color: 0, key: -rank)!
                        if group.rank == 0 { try group.abort(code: 1, message: "giving up") }
                        try comm.barrier()
                    } catch {
                        messages.set(rank, "\(error)")
                    }
                    world.markFinished(rank: rank)
                }
            }
            threads.forEach { $0.start() }
            while !messages.complete { usleep(1000) }
            return messages.all
        }
        XCTAssertEqual(try outcome.get(), ["peer rank 1 failed", "giving up"])
        XCTAssertEqual(world.failedRank, 1)
    }
}

/// One message per rank, written by the rank threads.
private final class MessageSlots: @unchecked Sendable {
    // @unchecked Sendable: `slots` is only touched while holding `lock`.
    private let lock = NSLock()
    private var slots: [String?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ message: String) {
        lock.lock()
        defer { lock.unlock() }
        slots[index] = message
    }

    var complete: Bool {
        lock.lock()
        defer { lock.unlock() }
        return slots.allSatisfy { $0 != nil }
    }

    var all: [String] {
        lock.lock()
        defer { lock.unlock() }
        return slots.map { $0 ?? "" }
    }
}
