// MinibatchSampler: seeded minibatches, epoch after epoch, into preallocated buffers; restorable for resume.
import Foundation

/// Draws minibatches from a seeded permutation of the data, epoch after epoch (the remainder
/// of an epoch smaller than a batch is dropped), copying rows into preallocated buffers.
public final class MinibatchSampler {
    public let data: Dataset
    public let batchSize: Int
    public let inputs: FloatBuffer
    public private(set) var labels: [Int32]
    private var order: [Int]
    private var random: RandomStream
    /// Where the sampler stands: how many epochs were shuffled and how far into the current one.
    /// Restoring it replays the shuffles, so a resumed run draws exactly the batches it would have.
    public private(set) var shuffles = 0
    public private(set) var position: Int

    public init(data: Dataset, batchSize: Int, random: RandomStream) {
        precondition(batchSize > 0 && data.count > 0)
        self.data = data
        self.batchSize = min(batchSize, data.count)
        self.random = random
        inputs = FloatBuffer(count: self.batchSize * data.featureCount)
        labels = [Int32](repeating: 0, count: self.batchSize)
        order = Array(0..<data.count)
        position = data.count  // forces a shuffle on first use
    }

    /// Moves to the state reached after `shuffles` epochs' shuffles and `position` samples of the
    /// current epoch (from a fresh sampler with the same stream).
    public func restore(shuffles target: Int, position: Int) {
        precondition(shuffles == 0 && target >= 0 && position >= 0 && position <= order.count)
        for _ in 0..<target { random.shuffle(&order) }
        shuffles = target
        self.position = position
    }

    /// Fills `inputs` and `labels` with the next batch.
    public func next() {
        if position + batchSize > order.count {
            self.random.shuffle(&order)
            shuffles += 1
            position = 0
        }
        let width = data.featureCount
        data.inputs.withUnsafeBufferPointer { source in
            labels.withUnsafeMutableBufferPointer { labelBuffer in
                for row in 0..<batchSize {
                    let sample = order[position + row]
                    (inputs.pointer + row * width).update(from: source.baseAddress! + sample * width, count: width)
                    labelBuffer[row] = data.labels[sample]
                }
            }
        }
        position += batchSize
    }
}
