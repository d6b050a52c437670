// InProcessCommunicatorTests: the threads-as-ranks communicator against the self-check, edge cases and failures.
import Foundation
import XCTest
@testable import Transport

final class InProcessCommunicatorTests: XCTestCase {
    private let worldSizes = [1, 2, 3, 5]

    func testSelfCheckPassesForEveryWorldSize() throws {
        for size in worldSizes {
            let reports = try runWithDeadline(size: size) { comm in try CommunicatorSelfCheck.run(comm) }
            XCTAssertEqual(reports.count, size)
            XCTAssertTrue(reports.allSatisfy { $0 == reports[0] }, "ranks disagree, size \(size)")
            for check in ["allReduce sum: ok", "probe: ok", "split into even and odd ranks: ok", "split with no group: ok"] {
                XCTAssertTrue(reports[0].contains(check), "size \(size), \(check): \(reports[0])")
            }
        }
    }

    func testAllGatherWithEmptyBlocks() throws {
        for size in worldSizes {
            let gathered = try runWithDeadline(size: size) { comm in
                (try comm.allGather([]), try comm.allGather(comm.rank == size - 1 ? [7, 8] : []))
            }
            for (allEmpty, lastOnly) in gathered {
                XCTAssertEqual(allEmpty, Array(repeating: [], count: size))
                XCTAssertEqual(lastOnly, (0..<size).map { $0 == size - 1 ? [7, 8] : [] })
            }
        }
    }

    func testAllToAllDeliversEachBlockToItsRank() throws {
        for size in worldSizes {
            // Rank s sends rank d (s + 2d) mod 3 values naming (s, d), and a long block to the last rank.
            @Sendable func block(_ source: Int, _ destination: Int) -> [Float] {
                let count = destination == size - 1 ? 10_000 + source : (source + 2 * destination) % 3
                return (0..<count).map { Float(source * 100_000 + destination * 10_000 + $0) }
            }
            let received = try runWithDeadline(size: size) { comm in
                try comm.allToAll((0..<size).map { block(comm.rank, $0) })
            }
            for (rank, blocks) in received.enumerated() {
                XCTAssertEqual(blocks, (0..<size).map { block($0, rank) }, "size \(size), rank \(rank)")
            }
        }
    }

    func testAllToAllWithTheWrongBlockCountFailsEveryRank() throws {
        let error = try runExpectingErrorWithDeadline(size: 3) { comm in
            _ = try comm.allToAll(Array(repeating: [1], count: comm.rank == 1 ? 2 : 3))
        }
        XCTAssertTrue("\(error)".contains("one block per rank"), "\(error)")
    }

    func testByteBroadcastOfEmptyAndLargePayloads() throws {
        let large = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        for size in worldSizes {
            let received = try runWithDeadline(size: size) { comm in
                let root = size / 2
                let empty = try comm.broadcast(comm.rank == root ? [] : [9, 9], root: root)
                let big = try comm.broadcast(comm.rank == 0 ? large : [], root: 0)
                return (empty, big == large)
            }
            XCTAssertTrue(received.allSatisfy { $0.0.isEmpty }, "size \(size)")
            XCTAssertTrue(received.allSatisfy { $0.1 }, "size \(size)")
        }
    }

    func testFloatBroadcastFillsNonRootBuffers() throws {
        let values = try runWithDeadline(size: 3) { comm in
            var buffer: [Float] = comm.rank == 2 ? [1.5, -2, 3] : [0, 0, 0]
            try buffer.withUnsafeMutableBufferPointer { try comm.broadcast($0, root: 2) }
            return buffer
        }
        XCTAssertEqual(values, Array(repeating: [1.5, -2, 3], count: 3))
    }

    func testReceiveMatchesSourceAndKeepsPerSourceOrder() throws {
        let received = try runWithDeadline(size: 3) { comm -> [[UInt8]] in
            if comm.rank != 0 {
                for sequence in 0..<3 { try comm.send([UInt8(comm.rank), UInt8(sequence)], to: 0, tag: 5) }
                return []
            }
            // Drain rank 2 first although rank 1 may have sent earlier; then rank 1.
            var messages: [[UInt8]] = []
            for source in [2, 1] {
                for _ in 0..<3 {
                    let message = try comm.receive(from: source, tag: 5)
                    messages.append([UInt8(message.source)] + message.bytes)
                }
            }
            return messages
        }
        XCTAssertEqual(received[0], [[2, 2, 0], [2, 2, 1], [2, 2, 2], [1, 1, 0], [1, 1, 1], [1, 1, 2]])
    }

    func testFailingRankUnblocksReceiveAndBarrier() throws {
        let observed = ObservedErrors()
        let error = try runExpectingErrorWithDeadline(size: 3) { comm in
            do {
                switch comm.rank {
                case 0: _ = try comm.receive(from: 1, tag: 1)
                case 1:
                    Thread.sleep(forTimeInterval: 0.05)  // let the others block first
                    throw TransportError("rank 1 broke")
                default: try comm.barrier()
                }
            } catch {
                observed.record(comm.rank, error)
                throw error
            }
        }
        XCTAssertEqual("\(error)", "rank 1 broke", "the cause, not a peer's reaction, is rethrown")
        XCTAssertEqual(observed.message(of: 0), "peer rank 1 failed")
        XCTAssertEqual(observed.message(of: 2), "peer rank 1 failed")
    }

    func testCallsAfterFailureThrowImmediately() throws {
        let world = InProcessWorld(size: 2)
        world.markFailed(rank: 1)
        XCTAssertThrowsError(try world.communicator(rank: 0).barrier()) { error in
            XCTAssertEqual("\(error)", "peer rank 1 failed")
        }
        XCTAssertEqual(world.failedRank, 1)
    }

    func testReceiveFromReturnedRankThrowsInsteadOfHanging() throws {
        let error = try runExpectingErrorWithDeadline(size: 2) { comm in
            if comm.rank == 0 { _ = try comm.receive(from: 1, tag: 3) }
        }
        XCTAssertTrue("\(error)".contains("returned without sending"), "\(error)")
    }

    func testMismatchedCollectivesThrowOnEveryRank() throws {
        let error = try runExpectingErrorWithDeadline(size: 2) { comm in
            if comm.rank == 0 { try comm.barrier() } else { _ = try comm.allReduce([1], .sum) }
        }
        XCTAssertTrue("\(error)".contains("mismatch"), "\(error)")
    }

    func testInvalidArgumentsThrow() throws {
        let comm = InProcessWorld(size: 2).communicator(rank: 0)
        XCTAssertThrowsError(try comm.send([1], to: 2, tag: 0))
        XCTAssertThrowsError(try comm.send([1], to: 1, tag: -1))
        XCTAssertThrowsError(try comm.broadcast([1], root: 5))
        XCTAssertThrowsError(try InProcessWorld.run(size: 0) { _ in 0 })
    }

    // MARK: - Deadline helpers: a bug must fail the test, not hang the suite.

    private func runWithDeadline<T: Sendable>(
        size: Int, seconds: Double = 10, _ body: @escaping @Sendable (any Communicator) throws -> T
    ) throws -> [T] {
        try InProcessDeadline.run(size: size, seconds: seconds, body)
    }

    private func runExpectingErrorWithDeadline(
        size: Int, seconds: Double = 10, _ body: @escaping @Sendable (any Communicator) throws -> Void
    ) throws -> any Error {
        try InProcessDeadline.runExpectingError(size: size, seconds: seconds, body)
    }
}

/// Runs in-process worlds with a deadline, for every communicator test of this target.
enum InProcessDeadline {
    static func run<T: Sendable>(
        size: Int, seconds: Double = 10, _ body: @escaping @Sendable (any Communicator) throws -> T
    ) throws -> [T] {
        let outcome = try wait(seconds: seconds) { try InProcessWorld.run(size: size, body) }
        return try outcome.get()
    }

    static func runExpectingError(
        size: Int, seconds: Double = 10, _ body: @escaping @Sendable (any Communicator) throws -> Void
    ) throws -> any Error {
        let outcome = try wait(seconds: seconds) { try InProcessWorld.run(size: size, body) }
        switch outcome {
        case .success: throw TransportError("expected the world to fail, but every rank succeeded")
        case .failure(let error): return error
        }
    }

    /// Runs `work` on its own thread and waits at most `seconds`; a timeout throws (and leaves
    /// the stuck thread behind, which is acceptable in a failing test run).
    static func wait<T: Sendable>(
        seconds: Double, _ work: @escaping @Sendable () throws -> T
    ) throws -> Result<T, any Error> {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Thread {
            box.value = Result { try work() }
            done.signal()
        }.start()
        guard done.wait(timeout: .now() + seconds) == .success else {
            throw TransportError("timed out after \(seconds) s: a rank is blocked forever")
        }
        return box.value!
    }
}

private final class ResultBox<T: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: written once by the worker thread before it signals the semaphore,
    // read only after the wait succeeded, which orders the two accesses.
    var value: Result<T, any Error>?
}

/// Each rank's error message, recorded by the rank threads.
final class ObservedErrors: @unchecked Sendable {
    // @unchecked Sendable: `messages` is only touched while holding `lock`.
    private let lock = NSLock()
    private var messages: [Int: String] = [:]

    func record(_ rank: Int, _ error: any Error) {
        lock.lock()
        defer { lock.unlock() }
        messages[rank] = "\(error)"
    }

    func message(of rank: Int) -> String? {
        lock.lock()
        defer { lock.unlock() }
        return messages[rank]
    }
}
