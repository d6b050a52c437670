// Trainer: the training loop (fine-tuning with a frozen head, or pre-training with the head),
// the minibatch sampler, the linear probe and accuracy evaluation.
import Foundation

/// How the trained quantity relates to the backbone's parameters θ.
public enum Parametrization: Sendable, Equatable {
    /// The optimizer updates θ's trained entries directly.
    case direct
    /// θ = θ0 + (alpha/rank)·B·A on each target weight [out, in]; A [rank, in] starts random
    /// (uniform ±1/√in), B [out, rank] at zero; only A and B train.
    case lora(rank: Int, alpha: Float, targets: [Int])
    /// The model is f(x; θ0) + J(x; θ0)(θ − θ0) (tangent space); θ's trained entries train.
    case linearized
}

/// What one training run does; built from the job's `finetune:` or `pretrain:` section.
public struct TrainingSettings: Sendable, Equatable {
    public var steps: Int
    public var batchSize: Int
    /// Each batch's gradient is the ordered sum of this many micro-batches' gradients (which a
    /// group of ranks can share out); it must divide `batchSize`. 1 computes the batch at once.
    public var microBatches: Int
    public var optimizer: OptimizerSettings
    public var warmupSteps: Int
    public var decay: LearningRateDecay
    /// Global-norm clipping of the trained gradient; 0 turns it off.
    public var gradientClip: Float
    public var labelSmoothing: Float
    public var orthoReg: OrthoRegSettings
    /// Layout indices of the backbone parameters that train (direct and linearized); the others stay at θ0.
    public var trainedParameters: [Int]
    /// Layout indices (2-D) whose update ΔW OrthoReg acts on.
    public var regularizedParameters: [Int]
    /// Pre-training also trains the head; fine-tuning keeps it frozen.
    public var trainsHead: Bool
    public var parametrization: Parametrization

    public init(steps: Int, batchSize: Int, microBatches: Int = 1, optimizer: OptimizerSettings, warmupSteps: Int = 0,
                decay: LearningRateDecay = .constant, gradientClip: Float = 0, labelSmoothing: Float = 0,
                orthoReg: OrthoRegSettings = OrthoRegSettings(lambda: 0), trainedParameters: [Int],
                regularizedParameters: [Int] = [], trainsHead: Bool = false, parametrization: Parametrization = .direct) {
        self.steps = steps
        self.batchSize = batchSize
        self.microBatches = microBatches
        self.optimizer = optimizer
        self.warmupSteps = warmupSteps
        self.decay = decay
        self.gradientClip = gradientClip
        self.labelSmoothing = labelSmoothing
        self.orthoReg = orthoReg
        self.trainedParameters = trainedParameters
        self.regularizedParameters = regularizedParameters
        self.trainsHead = trainsHead
        self.parametrization = parametrization
    }
}

/// Progress of a training run, reported every few steps.
public struct TrainingProgress: Sendable {
    public var step: Int
    public var steps: Int
    /// Mean task loss since the previous report.
    public var loss: Double
    /// OrthoReg penalty Σ‖G − I‖ (without λ) at the last step; 0 when off.
    public var orthoReg: Double
    public var learningRate: Float
    public var samplesPerSecond: Double
    public var elapsedSeconds: Double

    public init(step: Int, steps: Int, loss: Double, orthoReg: Double, learningRate: Float, samplesPerSecond: Double,
                elapsedSeconds: Double) {
        self.step = step
        self.steps = steps
        self.loss = loss
        self.orthoReg = orthoReg
        self.learningRate = learningRate
        self.samplesPerSecond = samplesPerSecond
        self.elapsedSeconds = elapsedSeconds
    }
}

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

/// LoRA adapters of one run: A and B of every target in one flat buffer, with the scratch the
/// chain rule needs. ΔW = scale·B·A.
final class LoRAAdapters {
    struct Target {
        let offset: Int  // of W in the backbone layout
        let rows: Int  // out
        let columns: Int  // in
        let a: Int  // offset of A [rank, in] in `values`
        let b: Int  // offset of B [out, rank] in `values`
    }

    let rank: Int
    let scale: Float
    let targets: [Target]
    let values: FloatBuffer
    let gradient: FloatBuffer
    /// ΔW of the largest target, and OrthoReg's gradient w.r.t. it.
    let delta: FloatBuffer
    let deltaGradient: FloatBuffer
    let gram: FloatBuffer

    init(layout: ParameterLayout, targets indices: [Int], rank: Int, alpha: Float, random: RandomStream) {
        self.rank = rank
        scale = alpha / Float(rank)
        var offset = 0
        var targets: [Target] = []
        for index in indices {
            let spec = layout.specs[index]
            precondition(spec.isMatrix, "LoRA adapts 2-D weights only (\(spec.name))")
            let target = Target(offset: layout.offsets[index], rows: spec.shape[0], columns: spec.shape[1],
                                a: offset, b: offset + rank * spec.shape[1])
            offset += rank * (spec.shape[0] + spec.shape[1])
            targets.append(target)
        }
        self.targets = targets
        values = FloatBuffer(count: offset)
        gradient = FloatBuffer(count: offset)
        let largest = targets.map { $0.rows * $0.columns }.max() ?? 0
        let largestGram = targets.map { min($0.rows, $0.columns) }.map { $0 * $0 }.max() ?? 0
        delta = FloatBuffer(count: largest)
        deltaGradient = FloatBuffer(count: largest)
        gram = FloatBuffer(count: largestGram)
        var stream = random
        for target in targets {
            let bound = 1 / Double(target.columns).squareRoot()
            for i in 0..<(rank * target.columns) {
                values[target.a + i] = Float((2 * stream.nextDouble() - 1) * bound)
            }
        }
    }

    /// delta = scale · B · A for `target`.
    func computeDelta(_ target: Target) {
        sgemm(transposeA: false, transposeB: false, m: target.rows, n: target.columns, k: rank, alpha: scale,
              a: values.pointer + target.b, lda: rank, b: values.pointer + target.a, ldb: target.columns,
              beta: 0, c: delta.pointer, ldc: target.columns)
    }

    /// θ[target] = θ0[target] + scale·B·A for every target.
    func materialize(parameters: FloatBuffer, base: FloatBuffer) {
        for target in targets {
            computeDelta(target)
            let count = target.rows * target.columns
            (parameters.pointer + target.offset).update(from: base.pointer + target.offset, count: count)
            ElementWise.add(parameters.pointer + target.offset, delta.pointer, count: count)
        }
    }

    /// From the backbone gradient dW of each target (plus λ·∂R/∂ΔW when OrthoReg is on):
    /// dA = scale·Bᵀ·dW, dB = scale·dW·Aᵀ. Returns Σ R.
    func backpropagate(backboneGradient: FloatBuffer, orthoReg: OrthoRegSettings) -> Double {
        var penalty = 0.0
        for target in targets {
            let dW = backboneGradient.pointer + target.offset
            if orthoReg.isActive {
                computeDelta(target)
                penalty += OrthoRegularizer.penaltyAndGradient(
                    delta: delta.pointer, rows: target.rows, columns: target.columns, form: orthoReg.form,
                    gram: gram.pointer, gradientOut: deltaGradient.pointer)
                ElementWise.axpy(dW, orthoReg.lambda, deltaGradient.pointer, count: target.rows * target.columns)
            }
            // dA [rank, in] = scale · Bᵀ [rank, out] · dW [out, in]
            sgemm(transposeA: true, transposeB: false, m: rank, n: target.columns, k: target.rows, alpha: scale,
                  a: values.pointer + target.b, lda: rank, b: dW, ldb: target.columns,
                  beta: 0, c: gradient.pointer + target.a, ldc: target.columns)
            // dB [out, rank] = scale · dW [out, in] · Aᵀ [in, rank]
            sgemm(transposeA: false, transposeB: true, m: target.rows, n: rank, k: target.columns, alpha: scale,
                  a: dW, lda: target.columns, b: values.pointer + target.a, ldb: target.columns,
                  beta: 0, c: gradient.pointer + target.b, ldc: rank)
        }
        return penalty
    }

    /// The dense task vector: scale·B·A on the targets, exactly zero elsewhere.
    func taskVector(count: Int) -> FloatBuffer {
        let result = FloatBuffer(count: count)
        for target in targets {
            computeDelta(target)
            (result.pointer + target.offset).update(from: delta.pointer, count: target.rows * target.columns)
        }
        return result
    }
}

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
    @discardableResult
    public func run(
        parameters: FloatBuffer, base: FloatBuffer, data: Dataset, random: RandomStream, label: String,
        reportEvery: Int = 50, checkpointing: Checkpointing? = nil, group: (any MicroBatchGroup)? = nil,
        progress: (TrainingProgress) throws -> Void = { _ in }, resumed: (Int) -> Void = { _ in }
    ) throws -> FloatBuffer {
        let layout = backbone.layout
        precondition(parameters.count == layout.totalCount && base.count == layout.totalCount)
        if let group {
            precondition(group.memberCount >= 1 && (0..<group.memberCount).contains(group.memberIndex),
                         "member \(group.memberIndex) of a group of \(group.memberCount)")
        }
        let sampler = MinibatchSampler(data: data, batchSize: settings.batchSize, random: random)
        let batch = sampler.batchSize
        let classes = head.classes
        let features = backbone.featureCount

        // Micro-batch m is the batch rows microBatchRows[m]. A training split smaller than the
        // batch size shrinks the batch; its rows are then split as evenly as they go.
        let microBatchCount = min(settings.microBatches, batch)
        let microBatchRows = (0..<microBatchCount).map { m in
            (m * batch / microBatchCount)..<((m + 1) * batch / microBatchCount)
        }
        // Each micro-batch's share of the batch mean, which its mean loss and gradient are scaled by.
        let gradientWeights = microBatchRows.map { Float($0.count) / Float(batch) }
        let lossWeights = microBatchRows.map { Double($0.count) / Double(batch) }

        var adapters: LoRAAdapters?
        if case let .lora(rank, alpha, targets) = settings.parametrization {
            var stream = random
            adapters = LoRAAdapters(layout: layout, targets: targets, rank: rank, alpha: alpha,
                                    random: RandomStream(seed: stream.next(), label: "lora-init"))
        }
        let linearized = settings.parametrization == .linearized
        let tangent = FloatBuffer(count: linearized ? layout.totalCount : 0)
        let featureTangent = FloatBuffer(count: linearized ? batch * features : 0)

        let gradient = FloatBuffer(count: layout.totalCount)
        let headGradient = FloatBuffer(count: settings.trainsHead ? head.layout.totalCount : 0)
        let logits = FloatBuffer(count: batch * classes)
        let logitGradient = FloatBuffer(count: batch * classes)
        let featureGradient = FloatBuffer(count: batch * features)
        // One rank summing several micro-batches computes micro-batch m > 0 here, then adds it.
        let sumsLocally = group == nil && microBatchCount > 1
        let microGradient = FloatBuffer(count: sumsLocally ? gradient.count : 0)
        let microHeadGradient = FloatBuffer(count: sumsLocally ? headGradient.count : 0)
        // Only these gradient entries are read afterwards (the trained ranges, or LoRA's target
        // weights; then the head): a group reduces them, packed one own micro-batch after another,
        // and one rank adds them.
        let reducedRanges = adapters.map { $0.targets.map { $0.offset..<($0.offset + $0.rows * $0.columns) } }
            ?? trainedRanges
        let reducedLength = reducedRanges.reduce(0) { $0 + $1.count } + headGradient.count
        let ownMicroBatches = group.map { Array($0.ownMicroBatches(of: microBatchCount)) } ?? []
        let contributions = FloatBuffer(count: ownMicroBatches.count * reducedLength)
        let reducedSum = FloatBuffer(count: group == nil ? 0 : reducedLength)
        var ownLosses = [Double](repeating: 0, count: ownMicroBatches.count)

        // The optimizer's parameter vector: the adapters for LoRA, θ otherwise.
        let optimizer = Optimizer(settings: settings.optimizer, parameterCount: adapters?.values.count ?? layout.totalCount)
        let optimizerRanges = adapters.map { [0..<$0.values.count] } ?? trainedRanges
        let headOptimizer = Optimizer(settings: settings.optimizer, parameterCount: headGradient.count)
        let headRanges = [0..<headGradient.count]
        let schedule = LearningRateSchedule(baseRate: settings.optimizer.learningRate, warmupSteps: settings.warmupSteps,
                                            totalSteps: settings.steps, decay: settings.decay)
        let regularizer = settings.orthoReg.isActive && adapters == nil
            ? OrthoRegularizer(settings: settings.orthoReg, layout: layout, parameterIndices: settings.regularizedParameters)
            : nil

        // The trained vector the checkpoint holds: the adapters for LoRA, θ otherwise.
        let trainedValues = adapters?.values ?? parameters
        var firstStep = 0
        if let checkpointing,
           let saved = TrainingCheckpoint.read(from: checkpointing.url, fingerprint: checkpointing.fingerprint,
                                               trainedCount: trainedValues.count, headCount: headGradient.count),
           saved.step <= settings.steps,
           optimizer.restore(steps: saved.optimizerSteps, first: saved.firstMoment, second: saved.secondMoment),
           headOptimizer.restore(steps: saved.optimizerSteps, first: saved.headFirstMoment, second: saved.headSecondMoment)
        {
            trainedValues.copy(from: saved.trained)
            if settings.trainsHead { head.parameters.copy(from: saved.head) }
            sampler.restore(shuffles: saved.shuffles, position: saved.position)
            firstStep = saved.step
            resumed(firstStep)
        }
        // Every member of a group holds the same state; one file is enough.
        let writesCheckpoints = (group?.memberIndex ?? 0) == 0
        func saveCheckpoint(after step: Int) throws {
            guard let checkpointing, writesCheckpoints else { return }
            let moments = optimizer.state
            let headMoments = headOptimizer.state
            try TrainingCheckpoint(
                step: step, optimizerSteps: moments.steps, shuffles: sampler.shuffles, position: sampler.position,
                trained: trainedValues.array, firstMoment: moments.first, secondMoment: moments.second,
                head: settings.trainsHead ? head.parameters.array : [], headFirstMoment: headMoments.first,
                headSecondMoment: headMoments.second
            ).write(to: checkpointing.url, fingerprint: checkpointing.fingerprint)
        }

        /// Forward and backward of micro-batch `m` on its own: its gradient (scaled by its share
        /// of the batch when there are several) replaces `target` and `headTarget`; returns its
        /// mean loss. Nothing of another micro-batch enters a GEMM, so each part's bits depend
        /// only on its rows, whichever rank computes it.
        func computeMicroBatch(_ m: Int, into target: FloatBuffer, head headTarget: FloatBuffer) -> Double {
            let rows = microBatchRows[m]
            let count = rows.count
            let inputs = UnsafePointer(sampler.inputs.pointer + rows.lowerBound * data.featureCount)
            // Forward: f(x; θ), or f(x; θ0) + J(x; θ0)(θ − θ0) in tangent space.
            let featureOutput: UnsafePointer<Float>
            if linearized {
                let primal = backbone.forwardWithTangent(parameters: base.pointer, tangent: tangent.pointer,
                                                         inputs: inputs, batch: count,
                                                         featureTangent: featureTangent.pointer)
                ElementWise.add(featureTangent.pointer, primal, count: count * features)
                featureOutput = UnsafePointer(featureTangent.pointer)
            } else {
                featureOutput = backbone.forward(parameters: parameters.pointer, inputs: inputs, batch: count)
            }
            head.forward(logits: logits.pointer, features: featureOutput, batch: count)
            let loss = sampler.labels.withUnsafeBufferPointer {
                CrossEntropy.forwardBackward(logitGradient: logitGradient.pointer, logits: logits.pointer,
                                             labels: $0.baseAddress! + rows.lowerBound, batch: count, classes: classes,
                                             labelSmoothing: settings.labelSmoothing)
            }
            if microBatchCount > 1 {
                ElementWise.scale(logitGradient.pointer, gradientWeights[m], count: count * classes)
            }
            featureGradient.zero()
            if settings.trainsHead { headTarget.zero() }
            head.backward(featureGradient: featureGradient.pointer,
                          parameterGradient: settings.trainsHead ? headTarget.pointer : nil,
                          logitGradient: logitGradient.pointer, features: featureOutput, batch: count)

            // Backward: at θ, or at θ0 for the linearized model (its Jacobian is J(x; θ0)).
            target.zero()
            backbone.backward(featureGradient: featureGradient.pointer,
                              parameters: linearized ? base.pointer : parameters.pointer,
                              inputs: inputs, batch: count, parameterGradient: target.pointer,
                              inputGradient: nil)
            return loss
        }

        var lossSum = 0.0
        var lossCount = 0
        var lastPenalty = 0.0
        let start = Date()
        var windowStart = start
        var windowSamples = 0
        for step in firstStep..<settings.steps {
            sampler.next()
            let rate = schedule.rate(at: step)
            adapters?.materialize(parameters: parameters, base: base)
            if linearized {
                ElementWise.subtract(tangent.pointer, parameters.pointer, base.pointer, count: layout.totalCount)
            }

            // The batch's gradient and loss: micro-batch sums in micro-batch order, ((g0 + g1) + g2) + ….
            var loss = 0.0
            if let group {
                for (slot, m) in ownMicroBatches.enumerated() {
                    ownLosses[slot] = computeMicroBatch(m, into: gradient, head: headGradient)
                    var packed = contributions.pointer + slot * reducedLength
                    for range in reducedRanges {
                        packed.update(from: gradient.pointer + range.lowerBound, count: range.count)
                        packed += range.count
                    }
                    packed.update(from: headGradient.pointer, count: headGradient.count)
                }
                let losses = try group.reduce(
                    contributions: UnsafeBufferPointer(contributions.buffer), length: reducedLength, losses: ownLosses,
                    microBatches: microBatchCount, into: reducedSum.buffer)
                precondition(losses.count == microBatchCount, "the group returned \(losses.count) of \(microBatchCount) losses")
                var packed = UnsafePointer(reducedSum.pointer)
                for range in reducedRanges {
                    (gradient.pointer + range.lowerBound).update(from: packed, count: range.count)
                    packed += range.count
                }
                headGradient.pointer.update(from: packed, count: headGradient.count)
                for m in 0..<microBatchCount { loss += losses[m] * lossWeights[m] }
            } else {
                loss += computeMicroBatch(0, into: gradient, head: headGradient) * lossWeights[0]
                for m in 1..<microBatchCount {
                    loss += computeMicroBatch(m, into: microGradient, head: microHeadGradient) * lossWeights[m]
                    // Only the entries read afterwards, as a group reduces them.
                    for range in reducedRanges {
                        ElementWise.add(gradient.pointer + range.lowerBound, microGradient.pointer + range.lowerBound,
                                        count: range.count)
                    }
                    ElementWise.add(headGradient.pointer, microHeadGradient.pointer, count: headGradient.count)
                }
            }
            guard loss.isFinite else {
                throw OrthofuseError("\(label): the loss became \(loss) at step \(step + 1); lower the learning rate")
            }

            if let adapters {
                lastPenalty = adapters.backpropagate(backboneGradient: gradient, orthoReg: settings.orthoReg)
                if settings.gradientClip > 0 {
                    GradientClipping.clip(adapters.gradient.pointer, ranges: optimizerRanges, maxNorm: settings.gradientClip)
                }
                optimizer.step(parameters: adapters.values.pointer, gradient: adapters.gradient.pointer, rate: rate,
                               ranges: optimizerRanges)
            } else {
                if let regularizer {
                    lastPenalty = regularizer.apply(parameters: parameters.pointer, base: base.pointer, gradient: gradient.pointer)
                }
                if settings.gradientClip > 0 {
                    GradientClipping.clip(gradient.pointer, ranges: trainedRanges, maxNorm: settings.gradientClip)
                }
                optimizer.step(parameters: parameters.pointer, gradient: gradient.pointer, rate: rate, ranges: trainedRanges)
            }
            guard lastPenalty.isFinite else {
                throw OrthofuseError("\(label): the OrthoReg penalty became \(lastPenalty) at step \(step + 1); lower λ or the learning rate")
            }
            if settings.trainsHead {
                headOptimizer.step(parameters: head.parameters.pointer, gradient: headGradient.pointer, rate: rate,
                                   ranges: headRanges)
            }
            lossSum += loss
            lossCount += 1
            windowSamples += batch
            if let checkpointing, step + 1 == settings.steps
                || (checkpointing.every > 0 && (step + 1) % checkpointing.every == 0) {
                try saveCheckpoint(after: step + 1)
            }
            if (step + 1) % max(reportEvery, 1) == 0 || step + 1 == settings.steps {
                let now = Date()
                let window = now.timeIntervalSince(windowStart)
                try progress(TrainingProgress(
                    step: step + 1, steps: settings.steps, loss: lossSum / Double(lossCount), orthoReg: lastPenalty,
                    learningRate: rate, samplesPerSecond: window > 0 ? Double(windowSamples) / window : 0,
                    elapsedSeconds: now.timeIntervalSince(start)))
                lossSum = 0
                lossCount = 0
                windowSamples = 0
                windowStart = now
            }
        }
        if let adapters {
            adapters.materialize(parameters: parameters, base: base)
            return adapters.taskVector(count: layout.totalCount)
        }
        return TaskVector.difference(finetuned: parameters, base: base)
    }
}

public enum LinearProbe {
    /// Fits `head` on frozen backbone features of `data` (softmax regression, minibatch, seeded).
    /// Features are computed once; only the head's parameters change.
    public static func fit(
        head: ClassificationHead, backbone: any Backbone, parameters: FloatBuffer, data: Dataset,
        steps: Int, batchSize: Int, optimizer settings: OptimizerSettings, random: RandomStream
    ) {
        let features = Evaluation.features(backbone: backbone, parameters: parameters, data: data)
        let featureData = Dataset(inputs: features, labels: data.labels, sampleShape: [backbone.featureCount])
        let sampler = MinibatchSampler(data: featureData, batchSize: batchSize, random: random)
        let batch = sampler.batchSize
        let logits = FloatBuffer(count: batch * head.classes)
        let logitGradient = FloatBuffer(count: batch * head.classes)
        let gradient = FloatBuffer(count: head.layout.totalCount)
        let optimizer = Optimizer(settings: settings, parameterCount: gradient.count)
        for _ in 0..<steps {
            sampler.next()
            head.forward(logits: logits.pointer, features: sampler.inputs.pointer, batch: batch)
            sampler.labels.withUnsafeBufferPointer {
                _ = CrossEntropy.forwardBackward(logitGradient: logitGradient.pointer, logits: logits.pointer,
                                                 labels: $0.baseAddress!, batch: batch, classes: head.classes)
            }
            gradient.zero()
            head.backward(featureGradient: nil, parameterGradient: gradient.pointer,
                          logitGradient: logitGradient.pointer, features: sampler.inputs.pointer, batch: batch)
            optimizer.step(parameters: head.parameters.pointer, gradient: gradient.pointer,
                           rate: settings.learningRate, ranges: [0..<gradient.count])
        }
    }
}

/// k-shot class prototypes and the cosine temperature of a prototype head.
public struct PrototypeSettings: Sendable, Equatable {
    public var shots: Int
    public var temperature: Float

    public init(shots: Int, temperature: Float) {
        self.shots = shots
        self.temperature = temperature
    }
}

public enum PrototypeHead {
    /// Sets a cosine `head` to the zero-shot analog of CLIP's text heads: row c of the weight is
    /// temperature × the unit mean of the unit θ0 features of the first `shots` examples of class c
    /// in a seeded shuffle of `data`; the bias is 0. Every class needs at least one example.
    public static func fit(head: ClassificationHead, backbone: any Backbone, parameters: FloatBuffer, data: Dataset,
                           settings: PrototypeSettings, random: RandomStream, task: String) throws {
        precondition(head.normalizesFeatures, "a prototype head reads normalised features")
        var random = random
        var chosen: [[Int]] = Array(repeating: [], count: head.classes)
        for index in random.permutation(data.count) {
            let label = Int(data.labels[index])
            if chosen[label].count < settings.shots { chosen[label].append(index) }
        }
        if let missing = chosen.firstIndex(where: \.isEmpty) {
            throw OrthofuseError("task '\(task)': no training example of class \(missing) for its prototype head")
        }
        let indices = chosen.flatMap { $0 }
        let features = Evaluation.features(backbone: backbone, parameters: parameters, data: data.subset(indices))
        let width = head.featureCount
        var sums = [Double](repeating: 0, count: head.classes * width)
        for (row, index) in indices.enumerated() {
            let label = Int(data.labels[index])
            let feature = features[(row * width)..<((row + 1) * width)]
            let norm = feature.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            guard norm > 0 else { continue }
            for (i, value) in feature.enumerated() { sums[label * width + i] += Double(value) / norm }
        }
        for c in 0..<head.classes {
            let row = sums[(c * width)..<((c + 1) * width)]
            let norm = row.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
            for (i, value) in row.enumerated() {
                head.weight[c * width + i] = norm > 0 ? Float(Double(settings.temperature) * value / norm) : 0
            }
            head.bias[c] = 0
        }
    }
}

public enum Evaluation {
    /// Backbone features of every sample [count, featureCount], in chunks of the workspace size.
    /// With `linearizedAround` θ0 the model is the linearized f(x; θ0) + J(x; θ0)(θ − θ0).
    public static func features(backbone: any Backbone, parameters: FloatBuffer, data: Dataset,
                                linearizedAround base: FloatBuffer? = nil) -> [Float] {
        let width = backbone.featureCount
        var result = [Float](repeating: 0, count: data.count * width)
        forEachChunk(backbone: backbone, parameters: parameters, data: data, linearizedAround: base) { start, rows, features in
            result.withUnsafeMutableBufferPointer {
                ($0.baseAddress! + start * width).update(from: features, count: rows * width)
            }
        }
        return result
    }

    /// Predicted class of every sample.
    public static func predictions(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                   data: Dataset, linearizedAround base: FloatBuffer? = nil) -> [Int32] {
        var result = [Int32](repeating: 0, count: data.count)
        let logits = FloatBuffer(count: backbone.maxBatch * head.classes)
        forEachChunk(backbone: backbone, parameters: parameters, data: data, linearizedAround: base) { start, rows, features in
            head.forward(logits: logits.pointer, features: features, batch: rows)
            for row in 0..<rows {
                result[start + row] = Int32(CrossEntropy.argmax(logits.pointer, row: row, classes: head.classes))
            }
        }
        return result
    }

    /// Top-1 accuracy in [0, 1] (0 for an empty dataset).
    public static func accuracy(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                data: Dataset, linearizedAround base: FloatBuffer? = nil) -> Double {
        guard data.count > 0 else { return 0 }
        let predicted = predictions(backbone: backbone, parameters: parameters, head: head, data: data,
                                    linearizedAround: base)
        var correct = 0
        for i in 0..<data.count where predicted[i] == data.labels[i] { correct += 1 }
        return Double(correct) / Double(data.count)
    }

    /// Runs the model over `data` in chunks of the backbone's workspace, handing each chunk's
    /// features (start row, rows, pointer valid during the call) to `body`.
    private static func forEachChunk(
        backbone: any Backbone, parameters: FloatBuffer, data: Dataset, linearizedAround base: FloatBuffer?,
        _ body: (Int, Int, UnsafePointer<Float>) -> Void
    ) {
        let width = backbone.featureCount
        var tangent: FloatBuffer?
        var featureTangent: FloatBuffer?
        if let base {
            tangent = TaskVector.difference(finetuned: parameters, base: base)
            featureTangent = FloatBuffer(count: backbone.maxBatch * width)
        }
        data.inputs.withUnsafeBufferPointer { inputs in
            var start = 0
            while start < data.count {
                let rows = min(backbone.maxBatch, data.count - start)
                let chunk = inputs.baseAddress! + start * data.featureCount
                if let base, let tangent, let featureTangent {
                    let primal = backbone.forwardWithTangent(parameters: base.pointer, tangent: tangent.pointer,
                                                             inputs: chunk, batch: rows,
                                                             featureTangent: featureTangent.pointer)
                    ElementWise.add(featureTangent.pointer, primal, count: rows * width)
                    body(start, rows, UnsafePointer(featureTangent.pointer))
                } else {
                    body(start, rows, backbone.forward(parameters: parameters.pointer, inputs: chunk, batch: rows))
                }
                start += rows
            }
        }
    }
}
