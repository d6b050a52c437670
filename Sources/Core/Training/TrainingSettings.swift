// TrainingSettings: what one training run does (steps, batch, optimizer, penalty, parametrization) and its progress reports.
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
