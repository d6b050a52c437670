// DatasetSplit: the seeded hold-out of a validation split from a training split.
import Foundation

extension Dataset {
    /// Holds out ⌊fraction·count⌋ samples (capped at `maxValidation` when > 0) chosen by a
    /// permutation from `random` and returns them; the rest stay, compacted in place (a large
    /// split is not copied a second time). Both parts keep the original sample order.
    public mutating func holdOutValidation(fraction: Double, maxValidation: Int, random: RandomStream) -> Dataset {
        var validationCount = Int((fraction * Double(count)).rounded(.down))
        if maxValidation > 0 { validationCount = min(validationCount, maxValidation) }
        validationCount = min(validationCount, count - 1)
        guard validationCount > 0 else { return subset([]) }
        var stream = random
        let validationIndices = stream.permutation(count)[0..<validationCount].sorted()
        let validation = subset(validationIndices)
        keepAll(except: validationIndices)
        return validation
    }

    /// Removes the samples at `sortedIndices` (ascending, distinct), moving each run of kept
    /// samples down over the gaps.
    private mutating func keepAll(except sortedIndices: [Int]) {
        let featureCount = featureCount, total = count
        var kept = 0
        var runStart = 0
        inputs.withUnsafeMutableBufferPointer { values in
            labels.withUnsafeMutableBufferPointer { labels in
                for end in sortedIndices + [total] {
                    let run = end - runStart
                    if run > 0, kept != runStart {
                        memmove(values.baseAddress! + kept * featureCount, values.baseAddress! + runStart * featureCount,
                                run * featureCount * MemoryLayout<Float>.stride)
                        memmove(labels.baseAddress! + kept, labels.baseAddress! + runStart, run * MemoryLayout<Int32>.stride)
                    }
                    kept += run
                    runStart = end + 1
                }
            }
        }
        inputs.removeLast((total - kept) * featureCount)
        labels.removeLast(total - kept)
        count = kept
    }
}
