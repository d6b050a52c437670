// GradientReduction: the interface through which ranks training one task together combine their micro-batches.

/// The ranks that train one task together (data parallelism). Every batch is cut into M
/// micro-batches; member r computes those with m % memberCount == r, and `reduce` gives every
/// member the group's sums. The sums are added in micro-batch order, as one rank computing all M
/// micro-batches adds them, so the trained weights are bitwise the same for any group size.
/// Implemented over a communicator outside Core (Core does no messaging).
public protocol MicroBatchGroup: AnyObject {
    /// This member, in 0..<memberCount.
    var memberIndex: Int { get }
    var memberCount: Int { get }

    /// A collective: every member calls it once per step, with the same `length` and `microBatches`.
    ///
    /// `contributions` holds this member's micro-batches in order (`ownMicroBatches(of:)`), `length`
    /// floats each, one after another; `losses` their losses in the same order. Writes into `sum`
    /// (`length` floats) the element-wise Float sum ((g0 + g1) + g2) + … over all `microBatches`
    /// micro-batches of the group, and returns every micro-batch's loss, by micro-batch. Every
    /// member receives bitwise the same values.
    func reduce(contributions: UnsafeBufferPointer<Float>, length: Int, losses: [Double], microBatches: Int,
                into sum: UnsafeMutableBufferPointer<Float>) throws -> [Double]
}

extension MicroBatchGroup {
    /// The micro-batches this member computes, in order.
    public func ownMicroBatches(of microBatches: Int) -> StrideTo<Int> {
        stride(from: memberIndex, to: microBatches, by: memberCount)
    }
}
