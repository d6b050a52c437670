// Trainer: the training loop — fine-tuning with a frozen head, or pre-training with the head —
// assembled from its parts: a batch gradient (local or group micro-batches, at θ or in tangent
// space), a parameter update (direct with OrthoReg, or LoRA), and a state that checkpoints.
import Foundation

public final class Trainer {
    public let backbone: any Backbone
    public let head: ClassificationHead
    public let settings: TrainingSettings
    private let trainedRanges: [Range<Int>]

    public init(backbone: any Backbone, head: ClassificationHead, settings: TrainingSettings) {
        precondition(settings.batchSize <= backbone.maxBatch, "batch exceeds the backbone workspace")
        precondition(settings.microBatches >= 1 && settings.batchSize % settings.microBatches == 0,
                     "\(settings.microBatches) micro-batches do not divide a batch of \(settings.batchSize)")
        self.backbone = backbone
        self.head = head
        self.settings = settings
        trainedRanges = settings.trainedParameters.sorted().map { backbone.layout.range(at: $0) }
    }

    /// Trains from θ0 = `base` for `settings.steps` steps, leaving the final θ in `parameters`
    /// (which must start equal to `base`), and returns the task vector τ = θ − θ0 (for LoRA the
    /// exact dense scale·B·A). `progress` is called about every `reportEvery` steps and after the
    /// last one. Throws when the loss stops being finite, naming the step.
    /// With `checkpointing`, a matching checkpoint is resumed from (the result is bitwise the one
    /// of an uninterrupted run) and the state is saved every `every` steps and at the end.
    /// With `group`, this rank is one member of a group training the task together: every member
    /// passes the same arguments, computes its share of each batch's micro-batches, and ends with
    /// bitwise the θ of a run without a group. Only member 0 writes checkpoints; every member
    /// resumes from the same file. A non-finite loss makes every member throw at the same step.
    /// A preemption request (Preemption) makes a run with `checkpointing` save after its current
    /// step and throw TrainingPreempted (in a group: member 0 only).
    @discardableResult
    public func run(
        parameters: FloatBuffer, base: FloatBuffer, data: Dataset, random: RandomStream, label: String,
        reportEvery: Int = 50, checkpointing: Checkpointing? = nil, group: (any MicroBatchGroup)? = nil,
        progress: (TrainingProgress) throws -> Void = { _ in }, resumed: (Int) -> Void = { _ in }
    ) throws -> FloatBuffer {
        let layout = backbone.layout
        precondition(parameters.count == layout.totalCount && base.count == layout.totalCount)
        let sampler = MinibatchSampler(data: data, batchSize: settings.batchSize, random: random)
        let update = makeUpdate(parameters: parameters, base: base, random: random)
        let state = TrainingState(sampler: sampler, update: update, head: head, settings: settings)
        let gradient = FloatBuffer(count: layout.totalCount)
        let batchGradient = makeBatchGradient(sampler: sampler, update: update, group: group, target: GradientTarget(
            gradient: gradient, headGradient: state.headGradient,
            reducedRanges: update.readRanges))
        let schedule = LearningRateSchedule(baseRate: settings.optimizer.learningRate, warmupSteps: settings.warmupSteps,
                                            totalSteps: settings.steps, decay: settings.decay)

        var firstStep = 0
        if let checkpointing, let step = state.resume(from: checkpointing, steps: settings.steps) {
            firstStep = step
            resumed(step)
        }
        // Every member of a group holds the same state; one file is enough. That member alone
        // answers a preemption request: the others stop when the job's processes are ended.
        let savesCheckpoints = (group?.memberIndex ?? 0) == 0
        let answersPreemption = checkpointing != nil && savesCheckpoints
        if answersPreemption { Preemption.runStarted() }
        defer { if answersPreemption { Preemption.runEnded() } }
        var window = ProgressWindow()
        for step in firstStep..<settings.steps {
            sampler.next()
            let rate = schedule.rate(at: step)
            update.prepare()
            let loss = try batchGradient.compute(parameters: parameters, base: base)
            guard loss.isFinite else {
                throw OrthofuseError("\(label): the loss became \(loss) at step \(step + 1); lower the learning rate")
            }
            let penalty = update.apply(gradient: gradient, rate: rate)
            guard penalty.isFinite else {
                throw OrthofuseError("\(label): the OrthoReg penalty became \(penalty) at step \(step + 1); lower λ or the learning rate")
            }
            state.stepHead(rate: rate)
            window.record(loss: loss, samples: sampler.batchSize)
            let preempted = answersPreemption && step + 1 < settings.steps && Preemption.isRequested
            if let checkpointing, savesCheckpoints, preempted || step + 1 == settings.steps
                || (checkpointing.every > 0 && (step + 1) % checkpointing.every == 0) {
                try state.save(after: step + 1, to: checkpointing)
            }
            if preempted { throw TrainingPreempted(label: label, step: step + 1, steps: settings.steps) }
            if (step + 1) % max(reportEvery, 1) == 0 || step + 1 == settings.steps {
                try progress(window.report(step: step + 1, steps: settings.steps, penalty: penalty, rate: rate))
            }
        }
        return update.taskVector()
    }

    /// LoRA trains adapters (their A drawn from the run's stream); every other parametrization θ.
    private func makeUpdate(parameters: FloatBuffer, base: FloatBuffer, random: RandomStream) -> any ParameterUpdate {
        guard case let .lora(rank, alpha, targets) = settings.parametrization else {
            return DirectUpdate(parameters: parameters, base: base, layout: backbone.layout,
                                trainedRanges: trainedRanges, settings: settings)
        }
        var stream = random
        let adapters = LoRAAdapters(layout: backbone.layout, targets: targets, rank: rank, alpha: alpha,
                                    random: RandomStream(seed: stream.next(), label: "lora-init"))
        return LoRAUpdate(adapters: adapters, parameters: parameters, base: base, settings: settings)
    }

    private func makeBatchGradient(sampler: MinibatchSampler, update: any ParameterUpdate,
                                   group: (any MicroBatchGroup)?, target: GradientTarget) -> any BatchGradient {
        let pass = MicroBatchPass(backbone: backbone, head: head,
                                  plan: MicroBatchPlan(batch: sampler.batchSize, microBatches: settings.microBatches),
                                  sampler: sampler, settings: settings)
        if let group { return GroupBatchGradient(pass: pass, target: target, group: group) }
        return LocalBatchGradient(pass: pass, target: target)
    }
}
