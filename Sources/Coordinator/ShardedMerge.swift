// ShardedMerge: merging T task vectors over R ranks, each rank holding only its slice of every one.
//
// The protocol, step by step (every rank runs it; P parameters, rank r owns slice r):
//  1. Partition. Every rank computes the same contiguous slices of the flattened layout: equal
//     shares for element-wise methods, whole tensors when a method works per tensor.
//  2. Exchange.  One allToAll round per task of the busiest rank: in round k every rank sends its
//     k-th own task vector (job order), slice i to rank i (keeping its own slice). Rank r ends with
//     τt[slice r] for all t (T·P/R floats) and never holds another rank's whole vector.
//  3. Merge.     Each rank merges its slice (TaskVectorMerger.mergedSlice); what spans slices goes
//     through allReduce: the first non-finite entry, TIES' majority sign (an integer count) and
//     global top-k threshold (histograms of |τ|'s bits, exact). A failure is agreed on before 4.
//  4. Gather.    Each rank broadcasts its Δ slice into place: every rank holds the full Δ, which
//     it needs to evaluate its own tasks.
// The result is bitwise that of TaskVectorMerger.mergedTaskVector over all task vectors: each
// entry is computed by the same code at the same global index, summing over tasks in task order,
// and the cross-slice quantities are exact. (TSV's SVDs also need the same OpenBLAS kernels and
// thread count on every rank, as the unsharded merge does across runs.)
import Core
import Transport

/// Contiguous slices of the flattened parameters, one per rank in rank order (some may be empty).
public struct ShardPartition: Sendable, Equatable {
    public let ranges: [Range<Int>]
    /// Every slice starts and ends on a tensor boundary, as per-tensor methods need.
    public let holdsWholeTensors: Bool

    /// Equal shares; the first (count mod ranks) slices are one longer. Element-wise methods only
    /// (unless the cuts happen to fall on tensor boundaries).
    public static func even(_ layout: ParameterLayout, ranks: Int) -> ShardPartition {
        precondition(ranks >= 1)
        let count = layout.totalCount
        let (share, extra) = count.quotientAndRemainder(dividingBy: ranks)
        var ranges: [Range<Int>] = []
        var start = 0
        for rank in 0..<ranks {
            let end = start + share + (rank < extra ? 1 : 0)
            ranges.append(start..<end)
            start = end
        }
        return ShardPartition(ranges: ranges, layout: layout)
    }

    /// Whole tensors: slice r ends at the tensor boundary nearest to (r + 1)·P/R (the earlier one
    /// on a tie), never before slice r − 1 ends. One tensor larger than P/R unbalances the ranks.
    public static func wholeTensors(_ layout: ParameterLayout, ranks: Int) -> ShardPartition {
        precondition(ranks >= 1)
        let count = layout.totalCount
        let boundaries = layout.offsets + [count]
        var ranges: [Range<Int>] = []
        var start = 0
        for rank in 0..<ranks {
            let target = rank == ranks - 1 ? count : (rank + 1) * count / ranks
            var end = start
            for boundary in boundaries where boundary >= start {
                if abs(boundary - target) < abs(end - target) { end = boundary }
            }
            ranges.append(start..<end)
            start = end
        }
        return ShardPartition(ranges: ranges, layout: layout)
    }

    /// One partition for all of `settings` (the exchange is done once per run): whole tensors if
    /// any of them works per tensor, else equal shares.
    public static func forMerging(_ settings: [MergeSettings], layout: ParameterLayout, ranks: Int) -> ShardPartition {
        settings.contains(where: \.needsWholeTensors) ? wholeTensors(layout, ranks: ranks) : even(layout, ranks: ranks)
    }

    private init(ranges: [Range<Int>], layout: ParameterLayout) {
        self.ranges = ranges
        let boundaries = Set(layout.offsets + [layout.totalCount])
        holdsWholeTensors = ranges.allSatisfy { boundaries.contains($0.lowerBound) && boundaries.contains($0.upperBound) }
    }
}

/// This rank's slice of every task vector, in job order: what a sharded merge holds instead of
/// T full task vectors.
public struct TaskVectorShards {
    public let partition: ShardPartition
    public let layout: ParameterLayout
    public let rank: Int
    /// slices[t] is τt over `region`.
    public let slices: [FloatBuffer]

    public var region: Range<Int> { partition.ranges[rank] }

    /// Steps 1–2 (collective). `own` holds this rank's task vectors by task index, exactly the
    /// tasks `assignment` gives it. Beyond those and its slices, a rank holds one task vector's
    /// outgoing blocks and one round's incoming slices at a time.
    public static func exchange(
        own: [Int: FloatBuffer], assignment: [Int], layout: ParameterLayout, partition: ShardPartition,
        communicator: any Communicator
    ) throws -> TaskVectorShards {
        let size = communicator.size
        let rank = communicator.rank
        precondition(partition.ranges.count == size, "one slice per rank")
        precondition(assignment.allSatisfy { (0..<size).contains($0) }, "every task assigned to a rank")
        let tasksOf = (0..<size).map { owner in assignment.indices.filter { assignment[$0] == owner } }
        precondition(Set(own.keys) == Set(tasksOf[rank]), "own task vectors must be exactly this rank's tasks")
        let region = partition.ranges[rank]
        var slices = [FloatBuffer?](repeating: nil, count: assignment.count)
        let rounds = tasksOf.map(\.count).max() ?? 0
        for round in 0..<rounds {
            var blocks = [[Float]](repeating: [], count: size)
            if round < tasksOf[rank].count {
                let task = tasksOf[rank][round]
                let vector = own[task]!
                precondition(vector.count == layout.totalCount, "task vector size differs from the layout")
                // This rank's own slice is copied here, not sent to itself.
                let slice = FloatBuffer(count: region.count)
                slice.pointer.update(from: vector.pointer + region.lowerBound, count: region.count)
                slices[task] = slice
                for (destination, range) in partition.ranges.enumerated() where destination != rank {
                    blocks[destination] = Array(UnsafeBufferPointer(rebasing: vector.buffer[range]))
                }
            }
            let received = try communicator.allToAll(blocks)
            for source in 0..<size where source != rank && round < tasksOf[source].count {
                guard received[source].count == region.count else {
                    throw TransportError("rank \(source) sent \(received[source].count) values of a slice of \(region.count)")
                }
                slices[tasksOf[source][round]] = FloatBuffer(received[source])
            }
        }
        return TaskVectorShards(partition: partition, layout: layout, rank: rank, slices: slices.map { $0! })
    }

    /// Steps 3–4 (collective): Δ of `settings` over the whole layout, on every rank. If the merge
    /// fails anywhere, every rank throws: a failing rank its error (only rank 0 when all failed
    /// alike, as for a non-finite entry, which every rank reports the same), the others PeerFailure.
    public func mergedTaskVector(_ settings: MergeSettings, communicator: any Communicator) throws -> FloatBuffer {
        precondition(communicator.rank == rank && communicator.size == partition.ranges.count)
        if settings.needsWholeTensors, !partition.holdsWholeTensors {
            throw OrthofuseError("merge \(settings.method.rawValue): works per tensor, but the task vectors were split inside tensors")
        }
        let collectives = MergeCollectives.over(communicator)
        let local = Result {
            try TaskVectorMerger.mergedSlice(slices, region: region, layout: layout, settings: settings, collectives: collectives)
        }
        let failed = Int(try communicator.allReduce([(try? local.get()) == nil ? 1 : 0], .sum)[0])
        if failed > 0 {
            if case .failure(let error) = local, failed < communicator.size || rank == 0 { throw error }
            throw PeerFailure()
        }
        let merged = FloatBuffer(count: layout.totalCount)
        let slice = try local.get()
        (merged.pointer + region.lowerBound).update(from: slice.pointer, count: region.count)
        // An all-gather as one broadcast per slice, received in place: no staging copy of Δ.
        for (root, range) in partition.ranges.enumerated() where !range.isEmpty {
            try communicator.broadcast(UnsafeMutableBufferPointer(rebasing: merged.buffer[range]), root: root)
        }
        return merged
    }
}

extension MergeCollectives {
    /// A merge's cross-slice sums and minima as all-reduces over `communicator`'s ranks, one slice each.
    public static func over(_ communicator: any Communicator) -> MergeCollectives {
        MergeCollectives(slot: communicator.rank, slotCount: communicator.size,
                         sum: { try communicator.allReduce($0, .sum) }, minimum: { try communicator.allReduce($0, .min) })
    }
}

public enum ShardedMerge {
    /// Δ of `settings` from this rank's own task vectors (by task index, as `assignment` gives
    /// them), on every rank: exchange, merge, gather (collective). Bitwise equal to
    /// TaskVectorMerger.mergedTaskVector over all task vectors in job order.
    public static func mergedTaskVector(
        own: [Int: FloatBuffer], assignment: [Int], layout: ParameterLayout, settings: MergeSettings,
        communicator: any Communicator
    ) throws -> FloatBuffer {
        let partition = ShardPartition.forMerging([settings], layout: layout, ranks: communicator.size)
        let shards = try TaskVectorShards.exchange(own: own, assignment: assignment, layout: layout,
                                                   partition: partition, communicator: communicator)
        return try shards.mergedTaskVector(settings, communicator: communicator)
    }
}

extension JobPlan {
    /// `merge.sharded: auto` shards when there is more than one rank and the T task vectors
    /// together exceed this (1 GiB): below it every rank holding all of them is cheap, and the
    /// all-gather path keeps the task-vector analyses, which need every vector.
    public static let autoShardingBytes = 1 << 30

    /// Whether steps 5 and 7 exchange and merge slices instead of gathering every task vector.
    public func shardsMerging(worldSize: Int) -> Bool {
        switch mergeSharding {
        case .on: return true
        case .off: return false
        case .auto: return worldSize > 1 && tasks.count * model.layout.totalCount * MemoryLayout<Float>.size > Self.autoShardingBytes
        }
    }
}

extension TaskVectorShards {
    /// The task vector analyses of a sharded run (collective; the result on rank 0, nil elsewhere):
    /// one tensor at a time, every rank sends rank 0 its part of that tensor for every task (an
    /// allToAll with empty blocks to the other ranks). Rank 0 holds T copies of one tensor at a
    /// time, never a whole task vector.
    public func analysis(tasks: [String], communicator: any Communicator) throws -> TaskVectorAnalysis? {
        var builder = communicator.rank == 0 ? TaskVectorAnalysis.Builder(tasks: tasks, layout: layout) : nil
        let region = self.region
        var failure: (any Error)?
        for index in layout.specs.indices {
            let tensor = layout.range(at: index)
            let part = tensor.clamped(to: region)
            var block: [Float] = []
            block.reserveCapacity(part.count * slices.count)
            for slice in slices {
                block.append(contentsOf: UnsafeBufferPointer(rebasing: slice.buffer[(part.lowerBound - region.lowerBound)..<(part.upperBound - region.lowerBound)]))
            }
            var blocks = [[Float]](repeating: [], count: communicator.size)
            blocks[0] = block
            let received = try communicator.allToAll(blocks)
            guard communicator.rank == 0, failure == nil else { continue }
            // A failure here (an SVD that does not converge) must not leave the other ranks in
            // the next round: keep exchanging, report it at the end.
            do {
                let values = try assemble(tensor: index, from: received, tasks: tasks.count)
                try withExtendedLifetime(values) {
                    try builder?.add(tensor: index, slices: values.map { UnsafeBufferPointer($0.buffer) })
                }
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return builder?.finish()
    }

    /// Tensor `index` of every task from the ranks' pieces: rank r's piece holds, task after task,
    /// the tensor's entries inside slice r; slices are contiguous and ascending, so concatenating
    /// by rank rebuilds the tensor.
    private func assemble(tensor index: Int, from pieces: [[Float]], tasks: Int) throws -> [FloatBuffer] {
        let tensor = layout.range(at: index)
        let values = (0..<tasks).map { _ in FloatBuffer(count: tensor.count) }
        var filled = 0
        for (rank, piece) in pieces.enumerated() {
            let count = partition.ranges[rank].clamped(to: tensor).count
            guard piece.count == count * tasks else {
                throw OrthofuseError("rank \(rank) sent \(piece.count) values of tensor \(layout.specs[index].name), expected \(count * tasks)")
            }
            for task in 0..<tasks where count > 0 {
                piece.withUnsafeBufferPointer {
                    (values[task].pointer + filled).update(from: $0.baseAddress! + task * count, count: count)
                }
            }
            filled += count
        }
        return values
    }
}
