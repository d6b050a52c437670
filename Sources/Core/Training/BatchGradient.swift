// BatchGradient: a batch's gradient as the ordered sum of its micro-batches' — on this rank alone,
// or shared out over a data-parallel group — bitwise the same either way.
import Foundation

/// Computes the batch's mean loss (after the step's parameters are prepared) and leaves its gradient
/// in `gradient` and `headGradient`. Only
/// the entries of `reducedRanges` (then the head) are summed: the trained ranges, or LoRA's target
/// weights; nothing else is read afterwards.
protocol BatchGradient {
    func compute(parameters: FloatBuffer, base: FloatBuffer) throws -> Double
}

/// The gradient buffers a step fills, and which of their entries count.
struct GradientTarget {
    let gradient: FloatBuffer
    let headGradient: FloatBuffer
    let reducedRanges: [Range<Int>]
    /// The floats one micro-batch contributes: the reduced ranges, then the head.
    var reducedLength: Int { reducedRanges.reduce(0) { $0 + $1.count } + headGradient.count }
}

/// One rank computes every micro-batch: micro-batch 0 into the gradient, each later one into
/// scratch and then added, ((g0 + g1) + g2) + ….
final class LocalBatchGradient: BatchGradient {
    let pass: MicroBatchPass
    let target: GradientTarget
    private let microGradient: FloatBuffer
    private let microHeadGradient: FloatBuffer

    init(pass: MicroBatchPass, target: GradientTarget) {
        self.pass = pass
        self.target = target
        let sums = pass.plan.count > 1
        microGradient = FloatBuffer(count: sums ? target.gradient.count : 0)
        microHeadGradient = FloatBuffer(count: sums ? target.headGradient.count : 0)
    }

    func compute(parameters: FloatBuffer, base: FloatBuffer) throws -> Double {
        pass.prepare(parameters: parameters, base: base)
        let weights = pass.plan.lossWeights
        var loss = pass.compute(0, parameters: parameters, base: base, into: target.gradient,
                                head: target.headGradient) * weights[0]
        for m in 1..<pass.plan.count {
            loss += pass.compute(m, parameters: parameters, base: base, into: microGradient,
                                 head: microHeadGradient) * weights[m]
            // Only the entries read afterwards, as a group reduces them.
            for range in target.reducedRanges {
                ElementWise.add(target.gradient.pointer + range.lowerBound, microGradient.pointer + range.lowerBound,
                                count: range.count)
            }
            ElementWise.add(target.headGradient.pointer, microHeadGradient.pointer, count: target.headGradient.count)
        }
        return loss
    }
}

/// This rank is one member of a group: it computes its own micro-batches, packs their reduced
/// entries one after another, and the group's reduction returns the ordered sum to every member.
final class GroupBatchGradient: BatchGradient {
    let pass: MicroBatchPass
    let target: GradientTarget
    let group: any MicroBatchGroup
    private let ownMicroBatches: [Int]
    private let contributions: FloatBuffer
    private let reducedSum: FloatBuffer
    private var ownLosses: [Double]

    init(pass: MicroBatchPass, target: GradientTarget, group: any MicroBatchGroup) {
        precondition(group.memberCount >= 1 && (0..<group.memberCount).contains(group.memberIndex),
                     "member \(group.memberIndex) of a group of \(group.memberCount)")
        self.pass = pass
        self.target = target
        self.group = group
        ownMicroBatches = Array(group.ownMicroBatches(of: pass.plan.count))
        contributions = FloatBuffer(count: ownMicroBatches.count * target.reducedLength)
        reducedSum = FloatBuffer(count: target.reducedLength)
        ownLosses = [Double](repeating: 0, count: ownMicroBatches.count)
    }

    func compute(parameters: FloatBuffer, base: FloatBuffer) throws -> Double {
        pass.prepare(parameters: parameters, base: base)
        let length = target.reducedLength
        for (slot, m) in ownMicroBatches.enumerated() {
            ownLosses[slot] = pass.compute(m, parameters: parameters, base: base, into: target.gradient,
                                           head: target.headGradient)
            var packed = contributions.pointer + slot * length
            for range in target.reducedRanges {
                packed.update(from: target.gradient.pointer + range.lowerBound, count: range.count)
                packed += range.count
            }
            packed.update(from: target.headGradient.pointer, count: target.headGradient.count)
        }
        let microBatches = pass.plan.count
        let losses = try group.reduce(contributions: UnsafeBufferPointer(contributions.buffer), length: length,
                                      losses: ownLosses, microBatches: microBatches, into: reducedSum.buffer)
        precondition(losses.count == microBatches, "the group returned \(losses.count) of \(microBatches) losses")
        var packed = UnsafePointer(reducedSum.pointer)
        for range in target.reducedRanges {
            (target.gradient.pointer + range.lowerBound).update(from: packed, count: range.count)
            packed += range.count
        }
        target.headGradient.pointer.update(from: packed, count: target.headGradient.count)
        var loss = 0.0
        for m in 0..<microBatches { loss += losses[m] * pass.plan.lossWeights[m] }
        return loss
    }
}
