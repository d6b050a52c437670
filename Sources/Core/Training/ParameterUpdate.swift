// ParameterUpdate: from a step's backbone gradient to new parameters — OrthoReg, clipping and the
// optimizer on θ's trained ranges, or the LoRA chain to the adapters and their optimizer.
import Foundation

/// What the optimizer trains and how a step's gradient reaches it.
protocol ParameterUpdate {
    /// The trained vector a checkpoint holds: θ, or the adapters for LoRA.
    var trainedValues: FloatBuffer { get }
    var optimizer: Optimizer { get }
    /// The backbone-gradient entries `apply` reads (the trained ranges, or LoRA's target weights).
    var readRanges: [Range<Int>] { get }
    /// Before a step's forward: θ made from what trains (LoRA materialises θ0 + scale·B·A).
    func prepare()
    /// Adds the penalty's gradient, clips, and takes one optimizer step; returns the penalty Σ R.
    func apply(gradient: FloatBuffer, rate: Float) -> Double
    /// τ = θ − θ0 at the end (for LoRA the exact dense scale·B·A).
    func taskVector() -> FloatBuffer
}

/// The optimizer updates θ's trained entries; OrthoReg's gradient on ΔW = W − W0 is added first.
final class DirectUpdate: ParameterUpdate {
    let parameters: FloatBuffer
    let base: FloatBuffer
    let optimizer: Optimizer
    let trainedRanges: [Range<Int>]
    let gradientClip: Float
    private let regularizer: OrthoRegularizer?

    init(parameters: FloatBuffer, base: FloatBuffer, layout: ParameterLayout, trainedRanges: [Range<Int>],
         settings: TrainingSettings) {
        self.parameters = parameters
        self.base = base
        self.trainedRanges = trainedRanges
        gradientClip = settings.gradientClip
        optimizer = Optimizer(settings: settings.optimizer, parameterCount: layout.totalCount)
        regularizer = settings.orthoReg.isActive
            ? OrthoRegularizer(settings: settings.orthoReg, layout: layout, parameterIndices: settings.regularizedParameters)
            : nil
    }

    var trainedValues: FloatBuffer { parameters }
    var readRanges: [Range<Int>] { trainedRanges }

    func prepare() {}

    func apply(gradient: FloatBuffer, rate: Float) -> Double {
        let penalty = regularizer?.apply(parameters: parameters.pointer, base: base.pointer, gradient: gradient.pointer) ?? 0
        if gradientClip > 0 {
            GradientClipping.clip(gradient.pointer, ranges: trainedRanges, maxNorm: gradientClip)
        }
        optimizer.step(parameters: parameters.pointer, gradient: gradient.pointer, rate: rate, ranges: trainedRanges)
        return penalty
    }

    func taskVector() -> FloatBuffer {
        TaskVector.difference(finetuned: parameters, base: base)
    }
}

/// θ = θ0 + scale·B·A on the target weights; the backbone's dW (plus OrthoReg's gradient on the
/// dense ΔW) is chained to dA and dB, and only the adapters train.
final class LoRAUpdate: ParameterUpdate {
    let adapters: LoRAAdapters
    let parameters: FloatBuffer
    let base: FloatBuffer
    let optimizer: Optimizer
    let orthoReg: OrthoRegSettings
    let gradientClip: Float
    private let ranges: [Range<Int>]

    init(adapters: LoRAAdapters, parameters: FloatBuffer, base: FloatBuffer, settings: TrainingSettings) {
        self.adapters = adapters
        self.parameters = parameters
        self.base = base
        orthoReg = settings.orthoReg
        gradientClip = settings.gradientClip
        optimizer = Optimizer(settings: settings.optimizer, parameterCount: adapters.values.count)
        ranges = [0..<adapters.values.count]
    }

    var readRanges: [Range<Int>] {
        adapters.targets.map { $0.offset..<($0.offset + $0.rows * $0.columns) }
    }

    var trainedValues: FloatBuffer { adapters.values }

    func prepare() {
        adapters.materialize(parameters: parameters, base: base)
    }

    func apply(gradient: FloatBuffer, rate: Float) -> Double {
        let penalty = adapters.backpropagate(backboneGradient: gradient, orthoReg: orthoReg)
        if gradientClip > 0 {
            GradientClipping.clip(adapters.gradient.pointer, ranges: ranges, maxNorm: gradientClip)
        }
        optimizer.step(parameters: adapters.values.pointer, gradient: adapters.gradient.pointer, rate: rate,
                       ranges: ranges)
        return penalty
    }

    func taskVector() -> FloatBuffer {
        adapters.materialize(parameters: parameters, base: base)
        return adapters.taskVector(count: parameters.count)
    }
}
