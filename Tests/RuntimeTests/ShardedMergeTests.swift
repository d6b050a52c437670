// ShardedMergeTests: merging with each in-process rank holding only its slice of every task vector
// gives, bit for bit, the unsharded merge, for every method and world sizes 1, 2, 3.
import Foundation
import XCTest
@testable import Coordinator
@testable import Core
import TestSupport
import Transport

final class ShardedMergeTests: XCTestCase {
    private let worldSizes = [1, 2, 3]

    /// Matrices, vectors and a scalar of uneven sizes, so slices cut tensors anywhere.
    static let layout = ParameterLayout([
        ParameterSpec(name: "embed.weight", shape: [7, 5]),
        ParameterSpec(name: "embed.bias", shape: [7]),
        ParameterSpec(name: "block.weight", shape: [9, 4]),
        ParameterSpec(name: "scale", shape: []),
        ParameterSpec(name: "head.weight", shape: [4, 8]),
        ParameterSpec(name: "norm", shape: [5]),
    ])

    /// Task vectors whose entries take few values (multiples of 1/4, zeros included, some −0),
    /// so magnitudes tie at every threshold and across slice boundaries; the last task is Gaussian.
    static func taskVectors(_ count: Int, seed: UInt64) -> [FloatBuffer] {
        var random = RandomStream(seed: seed)
        return (0..<count).map { task in
            FloatBuffer((0..<layout.totalCount).map { _ in
                if task == count - 1 { return Float(random.nextGaussian()) }
                let step = random.nextInt(below: 9) - 4
                return step == 0 && random.nextInt(below: 2) == 0 ? -0.0 : Float(step) * 0.25
            })
        }
    }

    static let methods: [MergeSettings] = [
        MergeSettings(method: .average),
        MergeSettings(method: .taskArithmetic),
        MergeSettings(method: .ties),
        MergeSettings(method: .ties, density: 0.37),
        MergeSettings(method: .ties, density: 1),
        MergeSettings(method: .ties, density: 0.3, trim: .perTensor),
        MergeSettings(method: .dare, density: 0.4, seed: 9),
        MergeSettings(method: .dareTies, density: 0.6, seed: 2),
        MergeSettings(method: .breadcrumbs, density: 0.5, gamma: 0.1),
        MergeSettings(method: .tsv),
        MergeSettings(method: .consensus, consensusLambda: 0.4, consensusK: 2),
    ]

    /// Bit patterns: −0 and +0 differ, as they do in a file.
    private func bits(_ buffer: FloatBuffer) -> [UInt32] { buffer.array.map(\.bitPattern) }

    func testShardedDeltaEqualsUnshardedForEveryMethodAndWorldSize() throws {
        let vectors = Self.taskVectors(5, seed: 41)
        let layout = Self.layout
        for settings in Self.methods {
            let expected = bits(try TaskVectorMerger.mergedTaskVector(vectors, layout: layout, settings: settings))
            for size in worldSizes {
                // Round-robin, and (from 3 ranks) rank 0 training nothing.
                var assignments = [vectors.indices.map { $0 % size }]
                if size == 3 { assignments.append(vectors.indices.map { 1 + $0 % 2 }) }
                for assignment in assignments {
                    let deltas = try InProcessWorld.run(size: size) { comm in
                        let own = Dictionary(uniqueKeysWithValues: vectors.indices.filter { assignment[$0] == comm.rank }
                            .map { ($0, vectors[$0]) })
                        return try ShardedMerge.mergedTaskVector(own: own, assignment: assignment, layout: layout,
                                                                 settings: settings, communicator: comm).array
                    }
                    for (rank, delta) in deltas.enumerated() {
                        XCTAssertEqual(delta.map(\.bitPattern), expected,
                                       "\(settings.method.rawValue) \(settings.knobSummary), \(size) ranks \(assignment), rank \(rank)")
                    }
                }
            }
        }
    }

    func testGlobalTopKCutOverSlicesEqualsTheWholeVectorsIncludingTies() throws {
        // Magnitudes that differ only in their lowest bits exercise every digit of the search.
        let near = Float(bitPattern: 0x3f80_0000)
        let values = Self.taskVectors(2, seed: 5) + [
            FloatBuffer((0..<Self.layout.totalCount).map { i in
                Float(bitPattern: near.bitPattern + UInt32(i % 5)) * (i % 3 == 0 ? -1 : 1)
            }),
            FloatBuffer(count: Self.layout.totalCount),  // all zeros: every entry ties
        ]
        let count = Self.layout.totalCount
        let scratch = FloatBuffer(count: count)
        for k in [0, 1, 7, count / 3, count / 2, count - 1, count] {
            let expected = values.map { TopMagnitudeCut.top(k, of: $0.pointer, in: 0..<count, scratch: scratch.pointer) }
            XCTAssertTrue(k == 0 || expected.contains { cut in
                cut != .none && values.contains { v in v.array.filter { abs($0) == cut.threshold }.count > 1 }
            }, "k \(k): the test must cut through ties")
            for size in worldSizes {
                let partition = ShardPartition.even(Self.layout, ranks: size)
                let cuts = try InProcessWorld.run(size: size) { comm in
                    let region = partition.ranges[comm.rank]
                    let slices = values.map { FloatBuffer(Array(UnsafeBufferPointer(rebasing: $0.buffer[region]))) }
                    let collectives = MergeCollectives(
                        slot: comm.rank, slotCount: size,
                        sum: { try comm.allReduce($0, .sum) }, minimum: { try comm.allReduce($0, .min) })
                    return try SlicedTopMagnitude.cuts(slices, region: region, keep: k, collectives: collectives)
                        .map { [Double($0.threshold), Double($0.tieIndexLimit)] }
                }
                let wanted = expected.map { [Double($0.threshold), Double($0.tieIndexLimit)] }
                for rankCuts in cuts { XCTAssertEqual(rankCuts, wanted, "k \(k), \(size) ranks") }
            }
        }
    }

    func testNonFiniteEntryIsTheSameErrorAsUnsharded() throws {
        let vectors = Self.taskVectors(3, seed: 7)
        let layout = Self.layout
        vectors[2][1] = .infinity                                       // task 2, embed.weight
        vectors[1][layout.range(of: "norm")!.lowerBound + 2] = .nan      // task 1, norm: reported first
        let settings = MergeSettings(method: .ties)
        var unsharded = ""
        do {
            _ = try TaskVectorMerger.mergedTaskVector(vectors, layout: layout, settings: settings)
            XCTFail("a non-finite entry must be refused")
        } catch {
            unsharded = "\(error)"
        }
        XCTAssertTrue(unsharded.contains("task vector 1 has a non-finite value in 'norm'"), unsharded)
        for size in worldSizes {
            do {
                _ = try InProcessWorld.run(size: size) { comm in
                    let own = Dictionary(uniqueKeysWithValues: vectors.indices.filter { $0 % size == comm.rank }
                        .map { ($0, vectors[$0]) })
                    return try ShardedMerge.mergedTaskVector(own: own, assignment: vectors.indices.map { $0 % size },
                                                             layout: layout, settings: settings, communicator: comm).count
                }
                XCTFail("\(size) ranks: a non-finite entry must be refused")
            } catch {
                XCTAssertEqual("\(error)", unsharded, "\(size) ranks")
            }
        }
    }

    func testPartitionsCoverTheLayoutInRankOrder() {
        let layout = Self.layout
        for ranks in [1, 2, 3, 5, 8] {
            for partition in [ShardPartition.even(layout, ranks: ranks), .wholeTensors(layout, ranks: ranks)] {
                XCTAssertEqual(partition.ranges.count, ranks)
                XCTAssertEqual(partition.ranges.first?.lowerBound, 0)
                XCTAssertEqual(partition.ranges.last?.upperBound, layout.totalCount)
                for (a, b) in zip(partition.ranges, partition.ranges.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
            }
            XCTAssertTrue(ShardPartition.wholeTensors(layout, ranks: ranks).holdsWholeTensors)
            let even = ShardPartition.even(layout, ranks: ranks).ranges.map(\.count)
            XCTAssertLessThanOrEqual((even.max() ?? 0) - (even.min() ?? 0), 1, "equal shares")
        }
        XCTAssertEqual(ShardPartition.forMerging([MergeSettings(method: .ties)], layout: layout, ranks: 3),
                       .even(layout, ranks: 3))
        XCTAssertEqual(ShardPartition.forMerging([MergeSettings(method: .ties), MergeSettings(method: .tsv)], layout: layout, ranks: 3),
                       .wholeTensors(layout, ranks: 3))
    }

    func testPerTensorMethodRefusesSlicesThatCutTensors() throws {
        let vectors = Self.taskVectors(2, seed: 3)
        let partition = ShardPartition.even(Self.layout, ranks: 2)
        XCTAssertFalse(partition.holdsWholeTensors)
        XCTAssertThrowsError(try InProcessWorld.run(size: 2) { comm in
            let shards = try TaskVectorShards.exchange(own: [comm.rank: vectors[comm.rank]], assignment: [0, 1],
                                                       layout: Self.layout, partition: partition, communicator: comm)
            return try shards.mergedTaskVector(MergeSettings(method: .tsv), communicator: comm).count
        }) { error in
            XCTAssertTrue("\(error)".contains("split inside tensors"), "\(error)")
        }
    }
}

/// A whole job with `merge.sharded: true` on in-process ranks writes what `false` writes.
final class ShardedJobTests: XCTestCase {
    private var workspace: SyntheticWorkspace!

    override func setUpWithError() throws {
        workspace = try syntheticWorkspace("sharded")
    }

    func testShardedJobWritesTheSameFilesAsGathered() throws {
        let methods = """
            methods: [task_arithmetic, ties, dare_ties, tsv, breadcrumbs, {name: ties, trim: per-tensor}]
              sharded: SHARDED
            """
        func plan(_ sharded: String) throws -> JobPlan {
            try workspace.plan(workspace.jobText(output: sharded) {
                $0.replacingOccurrences(of: "methods: [task_arithmetic]", with: methods.replacingOccurrences(of: "SHARDED", with: sharded))
                    .replacingOccurrences(of: "count: 9", with: "count: 3")
            })
        }
        let shardedPlan = try plan("true"), gatheredPlan = try plan("false")
        XCTAssertTrue(shardedPlan.shardsMerging(worldSize: 1))
        XCTAssertFalse(gatheredPlan.shardsMerging(worldSize: 3))
        let sharded = try workspace.run(shardedPlan, ranks: 3)
        let gathered = try workspace.run(gatheredPlan, ranks: 3)
        XCTAssertEqual(sharded.merges.map(\.label), gathered.merges.map(\.label))
        XCTAssertEqual(sharded.merges.map(\.alpha), gathered.merges.map(\.alpha))
        XCTAssertEqual(sharded.merges.map(\.perTask), gathered.merges.map(\.perTask))
        XCTAssertEqual(sharded.tasks.map(\.finetunedAccuracy), gathered.tasks.map(\.finetunedAccuracy))
        var files = ["base.safetensors"] + gathered.merges.map(\.file)
        for name in workspace.taskNames { files += ["task_vectors/\(name).safetensors", "heads/\(name).safetensors"] }
        for file in files {
            XCTAssertEqual(try workspace.values("true/\(file)"), try workspace.values("false/\(file)"), file)
        }
    }

    /// The analyses of a sharded run (gathered one tensor at a time, slices that cut tensors)
    /// equal those from whole task vectors.
    func testShardedRunAnalysesEqualTheGatheredOnes() throws {
        func plan(_ sharded: String) throws -> JobPlan {
            try workspace.plan(workspace.jobText(output: "analysis-\(sharded)") {
                $0.replacingOccurrences(of: "methods: [task_arithmetic]", with: "methods: [task_arithmetic]\n  sharded: \(sharded)")
                    .replacingOccurrences(of: "count: 9", with: "count: 2")
            })
        }
        let shardedPlan = try plan("true")
        XCTAssertFalse(ShardPartition.forMerging(shardedPlan.merges.map(\.settings), layout: shardedPlan.model.layout,
                                                 ranks: 2).holdsWholeTensors, "the slices cut tensors")
        let sharded = try workspace.run(shardedPlan, ranks: 2)
        let gathered = try workspace.run(plan("false"), ranks: 2)
        let cosine = try XCTUnwrap(sharded.cosineSimilarity), reference = try XCTUnwrap(gathered.cosineSimilarity)
        XCTAssertEqual(cosine.tasks, reference.tasks)
        for (row, expected) in zip(cosine.matrix, reference.matrix) {
            for (value, want) in zip(row, expected) { XCTAssertEqual(value, want, accuracy: 1e-12) }
        }
        XCTAssertEqual(sharded.signConflict, gathered.signConflict)
        XCTAssertEqual(sharded.orthoRegPenaltyPerLayer, gathered.orthoRegPenaltyPerLayer)
        XCTAssertEqual(sharded.singularValues, gathered.singularValues)
        XCTAssertEqual(sharded.cosineSimilarityPerLayer, gathered.cosineSimilarityPerLayer)
        XCTAssertFalse(sharded.singularValues?.isEmpty ?? true)
    }

    func testAutoShardsOnlyPastTheSizeThresholdWithSeveralRanks() throws {
        var plan = try workspace.plan(workspace.jobText(output: "auto"))
        XCTAssertEqual(plan.mergeSharding, .auto)
        XCTAssertFalse(plan.shardsMerging(worldSize: 4), "a small model gathers")
        // A model whose T task vectors exceed 1 GiB: 3 tasks × 100 M floats.
        plan.model = .mlp(MLPConfiguration(inputCount: 10_000, hidden: [10_000], activation: .relu))
        XCTAssertTrue(plan.shardsMerging(worldSize: 2))
        XCTAssertFalse(plan.shardsMerging(worldSize: 1), "one rank has nothing to shard over")
    }
}
