// Trainer: the training loop (fine-tuning with a frozen head, or pre-training with the head),
// the minibatch sampler, the linear probe and accuracy evaluation.
import Foundation

/// What one training run does; built from the job's `finetune:` or `pretrain:` section.
public struct TrainingSettings: Sendable, Equatable {
    public var steps: Int
    public var batchSize: Int
    public var optimizer: OptimizerSettings
    public var warmupSteps: Int
    public var decay: LearningRateDecay
    /// Global-norm clipping of the backbone gradient; 0 turns it off.
    public var gradientClip: Float
    public var labelSmoothing: Float
    public var orthoReg: OrthoRegSettings
    /// Layout indices of the backbone parameters that train; the others stay at θ0.
    public var trainedParameters: [Int]
    /// Layout indices (2-D, trained) that OrthoReg acts on.
    public var regularizedParameters: [Int]
    /// Pre-training also trains the head; fine-tuning keeps it frozen.
    public var trainsHead: Bool

    public init(steps: Int, batchSize: Int, optimizer: OptimizerSettings, warmupSteps: Int = 0,
                decay: LearningRateDecay = .constant, gradientClip: Float = 0, labelSmoothing: Float = 0,
                orthoReg: OrthoRegSettings = OrthoRegSettings(lambda: 0), trainedParameters: [Int],
                regularizedParameters: [Int] = [], trainsHead: Bool = false) {
        self.steps = steps
        self.batchSize = batchSize
        self.optimizer = optimizer
        self.warmupSteps = warmupSteps
        self.decay = decay
        self.gradientClip = gradientClip
        self.labelSmoothing = labelSmoothing
        self.orthoReg = orthoReg
        self.trainedParameters = trainedParameters
        self.regularizedParameters = regularizedParameters
        self.trainsHead = trainsHead
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
}

/// Draws minibatches from a seeded permutation of the data, epoch after epoch (the remainder
/// of an epoch smaller than a batch is dropped), copying rows into preallocated buffers.
public final class MinibatchSampler {
    public let data: Dataset
    public let batchSize: Int
    public let inputs: FloatBuffer
    public private(set) var labels: [Int32]
    private var order: [Int]
    private var position: Int
    private var random: RandomStream

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

    /// Fills `inputs` and `labels` with the next batch.
    public func next() {
        if position + batchSize > order.count {
            self.random.shuffle(&order)
            position = 0
        }
        let width = data.featureCount
        data.inputs.withUnsafeBufferPointer { source in
            for row in 0..<batchSize {
                let sample = order[position + row]
                (inputs.pointer + row * width).update(from: source.baseAddress! + sample * width, count: width)
                labels[row] = data.labels[sample]
            }
        }
        position += batchSize
    }
}

public final class Trainer {
    public let backbone: any Backbone
    public let head: ClassificationHead
    public let settings: TrainingSettings
    private let trainedRanges: [Range<Int>]

    public init(backbone: any Backbone, head: ClassificationHead, settings: TrainingSettings) {
        precondition(settings.batchSize <= backbone.maxBatch, "batch exceeds the backbone workspace")
        self.backbone = backbone
        self.head = head
        self.settings = settings
        trainedRanges = settings.trainedParameters.sorted().map { backbone.layout.range(at: $0) }
    }

    /// Trains `parameters` (which start at θ0 = `base`) in place for `settings.steps` steps.
    /// `progress` is called about every `reportEvery` steps and after the last one.
    /// Throws when the loss stops being finite, naming the step.
    public func run(
        parameters: FloatBuffer, base: FloatBuffer, data: Dataset, random: RandomStream, label: String,
        reportEvery: Int = 50, progress: (TrainingProgress) -> Void = { _ in }
    ) throws {
        let layout = backbone.layout
        precondition(parameters.count == layout.totalCount && base.count == layout.totalCount)
        let sampler = MinibatchSampler(data: data, batchSize: settings.batchSize, random: random)
        let batch = sampler.batchSize
        let classes = head.classes
        let features = backbone.featureCount

        let gradient = FloatBuffer(count: layout.totalCount)
        let headGradient = FloatBuffer(count: settings.trainsHead ? head.layout.totalCount : 0)
        let logits = FloatBuffer(count: batch * classes)
        let logitGradient = FloatBuffer(count: batch * classes)
        let featureGradient = FloatBuffer(count: batch * features)
        let optimizer = Optimizer(settings: settings.optimizer, parameterCount: layout.totalCount)
        let headOptimizer = Optimizer(settings: settings.optimizer, parameterCount: headGradient.count)
        let headRanges = [0..<headGradient.count]
        let schedule = LearningRateSchedule(baseRate: settings.optimizer.learningRate, warmupSteps: settings.warmupSteps,
                                            totalSteps: settings.steps, decay: settings.decay)
        let regularizer = settings.orthoReg.isActive
            ? OrthoRegularizer(settings: settings.orthoReg, layout: layout, parameterIndices: settings.regularizedParameters)
            : nil

        var lossSum = 0.0
        var lossCount = 0
        var lastPenalty = 0.0
        let start = Date()
        var windowStart = start
        var windowSamples = 0
        for step in 0..<settings.steps {
            sampler.next()
            let rate = schedule.rate(at: step)
            let featureOutput = backbone.forward(parameters: parameters.pointer, inputs: sampler.inputs.pointer, batch: batch)
            head.forward(logits: logits.pointer, features: featureOutput, batch: batch)
            let loss = sampler.labels.withUnsafeBufferPointer {
                CrossEntropy.forwardBackward(logitGradient: logitGradient.pointer, logits: logits.pointer,
                                             labels: $0.baseAddress!, batch: batch, classes: classes,
                                             labelSmoothing: settings.labelSmoothing)
            }
            guard loss.isFinite else {
                throw OrthofuseError("\(label): the loss became \(loss) at step \(step + 1); lower the learning rate")
            }
            featureGradient.zero()
            if settings.trainsHead { headGradient.zero() }
            head.backward(featureGradient: featureGradient.pointer,
                          parameterGradient: settings.trainsHead ? headGradient.pointer : nil,
                          logitGradient: logitGradient.pointer, features: featureOutput, batch: batch)
            gradient.zero()
            backbone.backward(featureGradient: featureGradient.pointer, parameters: parameters.pointer,
                              inputs: sampler.inputs.pointer, batch: batch, parameterGradient: gradient.pointer,
                              inputGradient: nil)
            if let regularizer {
                lastPenalty = regularizer.apply(parameters: parameters.pointer, base: base.pointer, gradient: gradient.pointer)
            }
            if settings.gradientClip > 0 {
                GradientClipping.clip(gradient.pointer, ranges: trainedRanges, maxNorm: settings.gradientClip)
            }
            optimizer.step(parameters: parameters.pointer, gradient: gradient.pointer, rate: rate, ranges: trainedRanges)
            if settings.trainsHead {
                headOptimizer.step(parameters: head.parameters.pointer, gradient: headGradient.pointer, rate: rate,
                                   ranges: headRanges)
            }
            lossSum += loss
            lossCount += 1
            windowSamples += batch
            if (step + 1) % max(reportEvery, 1) == 0 || step + 1 == settings.steps {
                let now = Date()
                let window = now.timeIntervalSince(windowStart)
                progress(TrainingProgress(
                    step: step + 1, steps: settings.steps, loss: lossSum / Double(lossCount), orthoReg: lastPenalty,
                    learningRate: rate, samplesPerSecond: window > 0 ? Double(windowSamples) / window : 0,
                    elapsedSeconds: now.timeIntervalSince(start)))
                lossSum = 0
                lossCount = 0
                windowSamples = 0
                windowStart = now
            }
        }
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

public enum Evaluation {
    /// Backbone features of every sample [count, featureCount], in chunks of the workspace size.
    public static func features(backbone: any Backbone, parameters: FloatBuffer, data: Dataset) -> [Float] {
        let width = backbone.featureCount
        var result = [Float](repeating: 0, count: data.count * width)
        data.inputs.withUnsafeBufferPointer { inputs in
            result.withUnsafeMutableBufferPointer { output in
                var start = 0
                while start < data.count {
                    let rows = min(backbone.maxBatch, data.count - start)
                    let features = backbone.forward(parameters: parameters.pointer,
                                                    inputs: inputs.baseAddress! + start * data.featureCount, batch: rows)
                    (output.baseAddress! + start * width).update(from: features, count: rows * width)
                    start += rows
                }
            }
        }
        return result
    }

    /// Predicted class of every sample.
    public static func predictions(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                   data: Dataset) -> [Int32] {
        var result = [Int32](repeating: 0, count: data.count)
        let logits = FloatBuffer(count: backbone.maxBatch * head.classes)
        data.inputs.withUnsafeBufferPointer { inputs in
            var start = 0
            while start < data.count {
                let rows = min(backbone.maxBatch, data.count - start)
                let features = backbone.forward(parameters: parameters.pointer,
                                                inputs: inputs.baseAddress! + start * data.featureCount, batch: rows)
                head.forward(logits: logits.pointer, features: features, batch: rows)
                for row in 0..<rows {
                    result[start + row] = Int32(CrossEntropy.argmax(logits.pointer, row: row, classes: head.classes))
                }
                start += rows
            }
        }
        return result
    }

    /// Top-1 accuracy in [0, 1] (0 for an empty dataset).
    public static func accuracy(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                data: Dataset) -> Double {
        guard data.count > 0 else { return 0 }
        let predicted = predictions(backbone: backbone, parameters: parameters, head: head, data: data)
        var correct = 0
        for i in 0..<data.count where predicted[i] == data.labels[i] { correct += 1 }
        return Double(correct) / Double(data.count)
    }
}
