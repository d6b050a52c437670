// MicroBatchPass: the forward and backward of one micro-batch — at θ, or in tangent space at θ0 —
// into caller-chosen gradient buffers, with the batch's split into micro-batches.
import Foundation

/// How a batch of `batch` rows is cut into micro-batches, and each part's share of the batch mean.
struct MicroBatchPlan {
    /// Micro-batch m is the batch rows `rows[m]`. A training split smaller than the batch size
    /// shrinks the batch; its rows are then split as evenly as they go.
    let rows: [Range<Int>]
    /// Each micro-batch's share of the batch mean, which its mean gradient and loss are scaled by.
    let gradientWeights: [Float]
    let lossWeights: [Double]

    init(batch: Int, microBatches: Int) {
        let count = min(microBatches, batch)
        rows = (0..<count).map { m in (m * batch / count)..<((m + 1) * batch / count) }
        gradientWeights = rows.map { Float($0.count) / Float(batch) }
        lossWeights = rows.map { Double($0.count) / Double(batch) }
    }

    var count: Int { rows.count }
}

/// One micro-batch's forward and backward with its own activation scratch. Nothing of another
/// micro-batch enters a GEMM, so each part's bits depend only on its rows, whichever rank computes it.
final class MicroBatchPass {
    let backbone: any Backbone
    let head: ClassificationHead
    let plan: MicroBatchPlan
    let sampler: MinibatchSampler
    let labelSmoothing: Float
    let trainsHead: Bool
    /// Tangent space: the model is f(x; θ0) + J(x; θ0)(θ − θ0); `tangent` holds θ − θ0 for the step.
    let linearized: Bool
    private let tangent: FloatBuffer
    private let featureTangent: FloatBuffer
    private let logits: FloatBuffer
    private let logitGradient: FloatBuffer
    private let featureGradient: FloatBuffer

    init(backbone: any Backbone, head: ClassificationHead, plan: MicroBatchPlan, sampler: MinibatchSampler,
         settings: TrainingSettings) {
        self.backbone = backbone
        self.head = head
        self.plan = plan
        self.sampler = sampler
        labelSmoothing = settings.labelSmoothing
        trainsHead = settings.trainsHead
        linearized = settings.parametrization == .linearized
        let batch = sampler.batchSize
        tangent = FloatBuffer(count: linearized ? backbone.layout.totalCount : 0)
        featureTangent = FloatBuffer(count: linearized ? batch * backbone.featureCount : 0)
        logits = FloatBuffer(count: batch * head.classes)
        logitGradient = FloatBuffer(count: batch * head.classes)
        featureGradient = FloatBuffer(count: batch * backbone.featureCount)
    }

    /// Before a step's micro-batches: the tangent direction θ − θ0 (linearized only).
    func prepare(parameters: FloatBuffer, base: FloatBuffer) {
        guard linearized else { return }
        ElementWise.subtract(tangent.pointer, parameters.pointer, base.pointer, count: backbone.layout.totalCount)
    }

    /// Micro-batch `m` of the sampler's batch: its gradient (scaled by its share of the batch when
    /// there are several) replaces `target` and `headTarget`; returns its mean loss.
    func compute(_ m: Int, parameters: FloatBuffer, base: FloatBuffer, into target: FloatBuffer,
                 head headTarget: FloatBuffer) -> Double {
        let rows = plan.rows[m]
        let count = rows.count
        let inputs = UnsafePointer(sampler.inputs.pointer + rows.lowerBound * sampler.data.featureCount)
        let featureOutput = forward(inputs: inputs, count: count, parameters: parameters, base: base)
        head.forward(logits: logits.pointer, features: featureOutput, batch: count)
        let loss = sampler.labels.withUnsafeBufferPointer {
            CrossEntropy.forwardBackward(logitGradient: logitGradient.pointer, logits: logits.pointer,
                                         labels: $0.baseAddress! + rows.lowerBound, batch: count,
                                         classes: head.classes, labelSmoothing: labelSmoothing)
        }
        if plan.count > 1 {
            ElementWise.scale(logitGradient.pointer, plan.gradientWeights[m], count: count * head.classes)
        }
        featureGradient.zero()
        if trainsHead { headTarget.zero() }
        head.backward(featureGradient: featureGradient.pointer,
                      parameterGradient: trainsHead ? headTarget.pointer : nil,
                      logitGradient: logitGradient.pointer, features: featureOutput, batch: count)

        // Backward: at θ, or at θ0 for the linearized model (its Jacobian is J(x; θ0)).
        target.zero()
        backbone.backward(featureGradient: featureGradient.pointer,
                          parameters: linearized ? base.pointer : parameters.pointer,
                          inputs: inputs, batch: count, parameterGradient: target.pointer, inputGradient: nil)
        return loss
    }

    /// Features f(x; θ), or f(x; θ0) + J(x; θ0)(θ − θ0) in tangent space.
    private func forward(inputs: UnsafePointer<Float>, count: Int, parameters: FloatBuffer,
                         base: FloatBuffer) -> UnsafePointer<Float> {
        guard linearized else {
            return backbone.forward(parameters: parameters.pointer, inputs: inputs, batch: count)
        }
        let primal = backbone.forwardWithTangent(parameters: base.pointer, tangent: tangent.pointer, inputs: inputs,
                                                 batch: count, featureTangent: featureTangent.pointer)
        ElementWise.add(featureTangent.pointer, primal, count: count * backbone.featureCount)
        return UnsafePointer(featureTangent.pointer)
    }
}
