// RegionPasses: a merge over a vector too large to hold, region by region (a checkpoint's
// tensors, read one at a time), for methods with quantities that span regions (TIES' sign
// election and global top-k). Each region's merge is the same code as a sharded merge's slice
// (TaskVectorMerger.mergedSlice); its collectives are answered in passes over the regions:
// pass k runs every region up to its k-th collective and sums (or takes the minimum of) their
// contributions, which every later pass answers with. Once every collective is known a region's
// merge runs through: bitwise the whole-vector merge, as a sharded one is.
import Foundation

public final class RegionPasses {
    /// Thrown out of a region's merge at a collective whose result is not known yet.
    public struct Unanswered: Error {}

    private enum Reduction { case sum, minimum }
    public let regionCount: Int
    private var answers: [[Double]] = []
    private var pending: [Double]?
    private var pendingReduction: Reduction?

    public init(regionCount: Int) {
        precondition(regionCount >= 1)
        self.regionCount = regionCount
    }

    /// How many collectives are answered so far.
    public var answered: Int { answers.count }

    /// The collectives for region `index` (slot `index` of `regionCount`) in this pass: answered
    /// ones return their result; the first unanswered one records this region's contribution and
    /// throws Unanswered.
    public func collectives(forRegion index: Int) -> MergeCollectives {
        var call = 0
        func reduce(_ values: [Double], _ reduction: Reduction) throws -> [Double] {
            defer { call += 1 }
            if call < answers.count { return answers[call] }
            precondition(call == answers.count, "a region skipped a collective")
            if let pending {
                precondition(pending.count == values.count && pendingReduction == reduction, "regions disagree on a collective")
                self.pending = zip(pending, values).map { reduction == .sum ? $0 + $1 : min($0, $1) }
            } else {
                pending = values
                pendingReduction = reduction
            }
            throw Unanswered()
        }
        return MergeCollectives(slot: index, slotCount: regionCount,
                                sum: { try reduce($0, .sum) }, minimum: { try reduce($0, .minimum) })
    }

    /// Ends a pass in which every region contributed: its collective is answered from now on.
    private func endPass() {
        precondition(pending != nil, "a pass without an unanswered collective")
        answers.append(pending!)
        pending = nil
        pendingReduction = nil
    }

    /// Runs passes of `merge` over every region until the collectives are all answered, then
    /// returns; `merge(index, collectives)` is the region's merge (its result is discarded here:
    /// the caller runs it once more per region with `collectives(forRegion:)` to use it).
    public func answerAll(_ merge: (Int, MergeCollectives) throws -> Void) throws {
        while true {
            for index in 0..<regionCount {
                do {
                    try merge(index, collectives(forRegion: index))
                    // Every region makes the same calls: one that runs through means all do.
                    precondition(pending == nil, "regions disagree on the collectives")
                    return
                } catch is Unanswered {
                    continue
                }
            }
            endPass()
        }
    }
}
