// CommunicatorGradientGroup: the micro-batch reduction of ranks training one task together, over a Communicator.
import Core
import Transport

/// A `MicroBatchGroup` whose members are the ranks of `communicator` (a communicator of the
/// group alone, e.g. from `split`). The gradient vector is cut into `memberCount` contiguous
/// chunks, member i owning chunk i. One reduction is three collectives: an `allReduce` of the
/// micro-batch losses; an `allToAll` that sends chunk i of every own micro-batch's gradient to
/// member i; after each owner has summed its chunk over all micro-batches in micro-batch order
/// (the order one rank adds them in, hence the same bits), an `allGather` of the summed chunks.
/// Each member sends and receives about (own micro-batches + 1) gradient lengths per step.
public final class CommunicatorGradientGroup: MicroBatchGroup {
    public let communicator: any Communicator

    public init(communicator: any Communicator) {
        self.communicator = communicator
    }

    public var memberIndex: Int { communicator.rank }
    public var memberCount: Int { communicator.size }

    public func reduce(contributions: UnsafeBufferPointer<Float>, length: Int, losses: [Double], microBatches: Int,
                       into sum: UnsafeMutableBufferPointer<Float>) throws -> [Double] {
        let members = memberCount
        let own = Array(ownMicroBatches(of: microBatches))
        precondition(contributions.count == own.count * length && losses.count == own.count && sum.count == length,
                     "reduce: \(contributions.count) floats, \(losses.count) losses for \(own.count) micro-batches of \(length)")

        // Each loss slot has one contributor and zeros elsewhere: the sum is that loss exactly.
        var slots = [Double](repeating: 0, count: microBatches)
        for (slot, m) in own.enumerated() { slots[m] = losses[slot] }
        let allLosses = try communicator.allReduce(slots, .sum)
        guard allLosses.count == microBatches else {
            throw TransportError("micro-batch reduction: \(allLosses.count) losses arrived, expected \(microBatches)")
        }

        // Member i owns entries bounds[i]..<bounds[i + 1].
        let bounds = (0...members).map { $0 * length / members }
        let blocks = (0..<members).map { owner -> [Float] in
            let chunk = bounds[owner]..<bounds[owner + 1]
            var block: [Float] = []
            block.reserveCapacity(own.count * chunk.count)
            for slot in own.indices {
                let start = slot * length
                block.append(contentsOf: contributions[(start + chunk.lowerBound)..<(start + chunk.upperBound)])
            }
            return block
        }
        let received = try communicator.allToAll(blocks)

        // received[s] holds member s's micro-batches s, s + members, … of this member's chunk.
        let mine = bounds[memberIndex]..<bounds[memberIndex + 1]
        let width = mine.count
        for (source, block) in received.enumerated() {
            let expected = Array(stride(from: source, to: microBatches, by: members)).count * width
            guard block.count == expected else {
                throw TransportError("micro-batch reduction: member \(source) sent \(block.count) floats, expected \(expected)")
            }
        }
        var chunkSum = [Float](repeating: 0, count: width)
        if width > 0 {
            chunkSum.withUnsafeMutableBufferPointer { total in
                for m in 0..<microBatches {
                    received[m % members].withUnsafeBufferPointer { block in
                        let part = block.baseAddress! + (m / members) * width
                        if m == 0 {
                            total.baseAddress!.update(from: part, count: width)
                        } else {
                            ElementWise.add(total.baseAddress!, part, count: width)
                        }
                    }
                }
            }
        }

        let gathered = try communicator.allGather(chunkSum)
        guard gathered.count == members else {
            throw TransportError("micro-batch reduction: \(gathered.count) chunks arrived, expected \(members)")
        }
        for (owner, chunk) in gathered.enumerated() {
            let start = bounds[owner]
            let expected = bounds[owner + 1] - start
            guard chunk.count == expected else {
                throw TransportError("micro-batch reduction: member \(owner) returned \(chunk.count) floats, expected \(expected)")
            }
            _ = UnsafeMutableBufferPointer(rebasing: sum[start..<(start + chunk.count)]).update(fromContentsOf: chunk)
        }
        return allLosses
    }
}
