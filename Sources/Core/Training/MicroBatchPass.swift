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

    /// The batch's rows.
    let batch: Int

    init(batch: Int, microBatches: Int) {
        self.batch = batch
        rows = Self.split(0..<batch, into: microBatches)
        gradientWeights = rows.map { Float($0.count) / Float(batch) }
        lossWeights = rows.map { Double($0.count) / Double(batch) }
    }

    var count: Int { rows.count }

    /// `rows` cut into min(parts, rows.count) consecutive ranges, as evenly as they go.
    static func split(_ rows: Range<Int>, into parts: Int) -> [Range<Int>] {
        let total = rows.count, count = max(1, min(parts, total))
        return (0..<count).map { p in (rows.lowerBound + p * total / count)..<(rows.lowerBound + (p + 1) * total / count) }
    }

    /// Micro-batch `m` in cache blocks of about `samples` rows (as many blocks as whole `samples`
    /// fit, at least one): the backbone's activations of one block stay in cache.
    func cacheBlocks(of m: Int, samples: Int) -> [Range<Int>] {
        Self.split(rows[m], into: rows[m].count / max(1, samples))
    }
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
    /// there are several) replaces `target` and `headTarget`; returns its mean loss. It runs through
    /// the network one cache block at a time (`Backbone.cacheBlock`), each block's gradients added
    /// to the ones before; a block's bits depend only on its rows and the model, never on the rank.
    func compute(_ m: Int, parameters: FloatBuffer, base: FloatBuffer, into target: FloatBuffer,
                 head headTarget: FloatBuffer) -> Double {
        let micro = plan.rows[m]
        let blocks = plan.cacheBlocks(of: m, samples: backbone.cacheBlock)
        // Each block's mean gradient is scaled by its share of the batch (of the micro-batch when
        // the batch is one micro-batch); a lone block of a lone micro-batch is not scaled at all.
        let meanOver = plan.count > 1 ? plan.batch : micro.count
        target.zero()
        if trainsHead { headTarget.zero() }
        var loss = 0.0
        for rows in blocks {
            let share = blocks.count > 1 || plan.count > 1 ? Float(rows.count) / Float(meanOver) : nil
            let blockLoss = computeBlock(rows, gradientShare: share, parameters: parameters, base: base,
                                         into: target, head: headTarget)
            loss += blocks.count > 1 ? blockLoss * Double(rows.count) / Double(micro.count) : blockLoss
        }
        return loss
    }

    /// One block's forward and backward; its gradients are added into `target` and `headTarget`.
    private func computeBlock(_ rows: Range<Int>, gradientShare: Float?, parameters: FloatBuffer, base: FloatBuffer,
                              into target: FloatBuffer, head headTarget: FloatBuffer) -> Double {
        let count = rows.count
        let inputs = UnsafePointer(sampler.inputs.pointer + rows.lowerBound * sampler.data.featureCount)
        let featureOutput = forward(inputs: inputs, count: count, parameters: parameters, base: base)
        head.forward(logits: logits.pointer, features: featureOutput, batch: count)
        let loss = sampler.labels.withUnsafeBufferPointer {
            CrossEntropy.forwardBackward(logitGradient: logitGradient.pointer, logits: logits.pointer,
                                         labels: $0.baseAddress! + rows.lowerBound, batch: count,
                                         classes: head.classes, labelSmoothing: labelSmoothing)
        }
        if let gradientShare {
            ElementWise.scale(logitGradient.pointer, gradientShare, count: count * head.classes)
        }
        featureGradient.pointer.update(repeating: 0, count: count * backbone.featureCount)
        head.backward(featureGradient: featureGradient.pointer,
                      parameterGradient: trainsHead ? headTarget.pointer : nil,
                      logitGradient: logitGradient.pointer, features: featureOutput, batch: count)

        // Backward: at θ, or at θ0 for the linearized model (its Jacobian is J(x; θ0)).
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
