// ProgressWindow: the mean loss and the pace since the last progress report of a training run.
import Foundation

struct ProgressWindow {
    private let start = Date()
    private var windowStart: Date
    private var lossSum = 0.0
    private var lossCount = 0
    private var samples = 0

    init() { windowStart = start }

    mutating func record(loss: Double, samples batch: Int) {
        lossSum += loss
        lossCount += 1
        samples += batch
    }

    /// The report after `step` of `steps`; the next window starts now.
    mutating func report(step: Int, steps: Int, penalty: Double, rate: Float) -> TrainingProgress {
        let now = Date()
        let window = now.timeIntervalSince(windowStart)
        let progress = TrainingProgress(
            step: step, steps: steps, loss: lossSum / Double(lossCount), orthoReg: penalty, learningRate: rate,
            samplesPerSecond: window > 0 ? Double(samples) / window : 0, elapsedSeconds: now.timeIntervalSince(start))
        lossSum = 0
        lossCount = 0
        samples = 0
        windowStart = now
        return progress
    }
}
