// CrossEntropy: fused softmax cross-entropy loss and its gradient, with label smoothing.
//
// Legend: B batch rows, C classes.
import Foundation

public enum CrossEntropy {
    /// Mean over the batch of −Σ_c q_c log softmax(logits)_c with q = (1 − ε)·onehot(label) + ε/C
    /// (PyTorch's `label_smoothing`). Writes d(loss)/d(logits) [B, C] into `logitGradient`
    /// when given. Returns the loss; accumulation in Double keeps it exact enough to compare.
    @discardableResult
    public static func forwardBackward(
        logitGradient: UnsafeMutablePointer<Float>?, logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
        batch: Int, classes: Int, labelSmoothing: Float = 0
    ) -> Double {
        var total = 0.0
        let smoothing = Double(labelSmoothing)
        let offTarget = smoothing / Double(classes)
        let onTarget = 1 - smoothing + offTarget
        let inverseBatch = 1 / Float(batch)
        for row in 0..<batch {
            let z = logits + row * classes
            let label = Int(labels[row])
            var maximum = -Float.infinity
            for c in 0..<classes { maximum = max(maximum, z[c]) }
            var sum = 0.0
            for c in 0..<classes { sum += Double(expf(z[c] - maximum)) }
            let logSum = Double(maximum) + log(sum)
            var rowLoss = 0.0
            if smoothing > 0 {
                var sumLogProbability = 0.0
                for c in 0..<classes { sumLogProbability += Double(z[c]) - logSum }
                rowLoss = -(1 - smoothing) * (Double(z[label]) - logSum) - offTarget * sumLogProbability
            } else {
                rowLoss = logSum - Double(z[label])
            }
            total += rowLoss
            if let logitGradient {
                let g = logitGradient + row * classes
                for c in 0..<classes {
                    let probability = Float(exp(Double(z[c]) - logSum))
                    let target = Float(c == label ? onTarget : offTarget)
                    g[c] = (probability - target) * inverseBatch
                }
            }
        }
        return total / Double(batch)
    }

    /// Index of the largest logit in each row (ties: the first).
    public static func argmax(_ logits: UnsafePointer<Float>, row: Int, classes: Int) -> Int {
        let z = logits + row * classes
        var best = 0
        for c in 1..<classes where z[c] > z[best] { best = c }
        return best
    }
}
