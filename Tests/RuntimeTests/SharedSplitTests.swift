// SharedSplitTests: every task's split spread over the ranks in whole chunks: loads balanced to a
// chunk, every row evaluated exactly once whatever the number of ranks, the data intact.
import Foundation
import XCTest
@testable import Coordinator
@testable import Core
import Transport

final class SharedSplitTests: XCTestCase {
    private func loads(_ holders: [[Int]], sizes: [Int], chunk: Int, ranks: Int) -> [Int] {
        var load = [Int](repeating: 0, count: ranks)
        for (t, chunks) in holders.enumerated() {
            for (k, rank) in chunks.enumerated() { load[rank] += min(chunk, sizes[t] - k * chunk) }
        }
        return load
    }

    func testLoadsAreBalancedToAChunkAndOwnersKeepTheirFirstChunks() {
        // The demo job's validation splits on 2 ranks (mnist, fashion, animal, digits), then 2 tasks on 4 ranks.
        for (sizes, owners, chunk, ranks) in [([5000, 5000, 800, 143], [0, 1, 0, 1], 8, 2), ([1000, 10], [0, 1], 8, 4),
                                              ([300, 300, 300], [0, 1, 2], 16, 3), ([0, 77], [1, 0], 8, 3)] {
            let holders = SharedSplit.holders(sizes: sizes, owners: owners, chunk: chunk, ranks: ranks)
            XCTAssertEqual(holders.map(\.count), sizes.map { ($0 + chunk - 1) / chunk })
            let load = loads(holders, sizes: sizes, chunk: chunk, ranks: ranks)
            XCTAssertEqual(load.reduce(0, +), sizes.reduce(0, +))
            XCTAssertLessThanOrEqual(load.max()! - load.min()!, chunk, "\(sizes) on \(ranks) ranks: loads \(load)")
            for (t, chunks) in holders.enumerated() where !chunks.isEmpty {
                XCTAssertEqual(chunks[0], owners[t], "task \(t): its owner keeps its first chunk")
            }
        }
        XCTAssertEqual(SharedSplit.holders(sizes: [40, 40], owners: [0, 1], chunk: 8, ranks: 2), [[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]],
                       "balanced owners keep everything")
    }

    /// Task t's split: sample i has label i and inputs (t, i, i + 0.5).
    private static func split(_ t: Int, size: Int) -> Dataset {
        Dataset(inputs: (0..<size).flatMap { [Float(t), Float($0), Float($0) + 0.5] }, labels: (0..<size).map(Int32.init),
                sampleShape: [3])
    }

    func testEveryRowIsEvaluatedOnceOnAnyNumberOfRanksWithItsData() throws {
        let sizes = [53, 9, 120, 0]
        for ranks in 1...4 {
            let owners = sizes.indices.map { $0 % ranks }
            let held = try InProcessWorld.run(size: ranks) { communicator -> [[Int]] in
                let shared = try SharedSplit(sizes: sizes, owners: owners, chunk: 8, featureCount: 3, communicator: communicator) {
                    owners[$0] == communicator.rank ? Self.split($0, size: sizes[$0]) : nil
                }
                return try sizes.indices.map { t in
                    try shared.pieces[t].flatMap { piece -> [Int] in
                        try piece.rows.map { row in
                            let label = Int(piece.data.labels[row])
                            let inputs = Array(piece.data.inputs[(row * 3)..<(row * 3 + 3)])
                            guard inputs == [Float(t), Float(label), Float(label) + 0.5] else {
                                throw OrthofuseError("task \(t) row \(label) arrived as \(inputs)")
                            }
                            XCTAssertEqual(row % 8 == 0, label % 8 == 0, "chunks keep their alignment")
                            return label
                        }
                    }
                }
            }
            for t in sizes.indices {
                XCTAssertEqual(held.flatMap { $0[t] }.sorted(), Array(0..<sizes[t]), "task \(t) on \(ranks) ranks")
            }
        }
    }
}
