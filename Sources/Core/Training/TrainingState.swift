// TrainingState: what a training run carries from step to step — the sampler, the trained vector
// and its optimizer, the head's optimizer — and how it is saved to and resumed from a checkpoint.
import Foundation

final class TrainingState {
    let sampler: MinibatchSampler
    let update: any ParameterUpdate
    let head: ClassificationHead
    let headOptimizer: Optimizer
    let trainsHead: Bool
    /// The head's gradient, filled by the batch gradient (empty when the head is frozen).
    let headGradient: FloatBuffer
    private let headRanges: [Range<Int>]

    init(sampler: MinibatchSampler, update: any ParameterUpdate, head: ClassificationHead, settings: TrainingSettings) {
        self.sampler = sampler
        self.update = update
        self.head = head
        trainsHead = settings.trainsHead
        headGradient = FloatBuffer(count: settings.trainsHead ? head.layout.totalCount : 0)
        headOptimizer = Optimizer(settings: settings.optimizer, parameterCount: headGradient.count)
        headRanges = [0..<headGradient.count]
    }

    /// One optimizer step of the head (pre-training only).
    func stepHead(rate: Float) {
        guard trainsHead else { return }
        headOptimizer.step(parameters: head.parameters.pointer, gradient: headGradient.pointer, rate: rate,
                           ranges: headRanges)
    }

    /// Restores the state of `checkpointing`'s file when it matches this run (fingerprint, sizes,
    /// at most `steps` steps); returns the step it stood at, or nil to start from step 0.
    func resume(from checkpointing: Checkpointing, steps: Int) -> Int? {
        let trained = update.trainedValues
        guard let saved = TrainingCheckpoint.read(from: checkpointing.url, fingerprint: checkpointing.fingerprint,
                                                  trainedCount: trained.count, headCount: headGradient.count),
              saved.step <= steps,
              update.optimizer.restore(steps: saved.optimizerSteps, first: saved.firstMoment, second: saved.secondMoment),
              headOptimizer.restore(steps: saved.optimizerSteps, first: saved.headFirstMoment,
                                    second: saved.headSecondMoment)
        else { return nil }
        trained.copy(from: saved.trained)
        if trainsHead { head.parameters.copy(from: saved.head) }
        sampler.restore(shuffles: saved.shuffles, position: saved.position)
        return saved.step
    }

    /// Writes the state after `step` steps to `checkpointing`'s file.
    func save(after step: Int, to checkpointing: Checkpointing) throws {
        let moments = update.optimizer.state
        let headMoments = headOptimizer.state
        try TrainingCheckpoint(
            step: step, optimizerSteps: moments.steps, shuffles: sampler.shuffles, position: sampler.position,
            trained: update.trainedValues.array, firstMoment: moments.first, secondMoment: moments.second,
            head: trainsHead ? head.parameters.array : [], headFirstMoment: headMoments.first,
            headSecondMoment: headMoments.second
        ).write(to: checkpointing.url, fingerprint: checkpointing.fingerprint)
    }
}
