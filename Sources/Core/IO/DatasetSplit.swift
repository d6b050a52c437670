// DatasetSplit: the seeded hold-out of a validation split from a training split.

extension Dataset {
    /// Holds out ⌊fraction·count⌋ samples (capped at `maxValidation` when > 0) chosen by a
    /// permutation from `random`; both parts keep the original sample order.
    public func splitValidation(fraction: Double, maxValidation: Int, random: RandomStream)
        -> (train: Dataset, validation: Dataset)
    {
        var validationCount = Int((fraction * Double(count)).rounded(.down))
        if maxValidation > 0 { validationCount = min(validationCount, maxValidation) }
        validationCount = min(validationCount, count - 1)
        guard validationCount > 0 else { return (self, subset([])) }
        var stream = random
        let order = stream.permutation(count)
        let validation = order[0..<validationCount].sorted()
        let train = order[validationCount...].sorted()
        return (subset(train), subset(validation))
    }
}
