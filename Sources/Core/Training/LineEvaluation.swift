// LineEvaluation: accuracies of the models θ0 + α·Δ for a grid of α on one dataset (the α search
// of a merge), with the first layer's two products shared by every α when it is affine.
//
// The first Linear of an MLP maps x to W·x + b. Along the line θ0 + α·Δ its pre-activation is
// (W0·x + b0) + α·(ΔW·x + Δb): two products for the whole grid instead of one per α, and for the
// MLP 784-256-256 the first layer is three quarters of the forward pass. The sum is the same
// model's pre-activation rounded in another order (a few ulps apart from multiplying by
// W0 + α·ΔW), so an accuracy can differ only where two logits tie to within that rounding.

/// A backbone whose first layer is W·x + b, with W [outputs, inputCount] and b [outputs] stored
/// at `firstLayer` offsets of θ, followed by the rest of the network.
public protocol AffineInputBackbone: Backbone {
    var firstLayer: (weight: Int, bias: Int, outputs: Int) { get }
    /// Features for `batch` rows whose first-layer pre-activation [batch, outputs] is given; the
    /// layers after it use `parameters` (its first layer is not read).
    func forward(parameters: UnsafePointer<Float>, firstPreActivation: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float>
}

extension Evaluation {
    /// The most floats the shared pre-activations (two per sample and first-layer output) may take
    /// before the grid falls back to one full pass per α.
    static let lineScratchBudget = 64 << 20

    /// Top-1 accuracy of θ(α) = base + α·direction on `data` for every α of `alphas`, in order; with
    /// `linearizedAround` θ0 each model is the linearized f(x; θ0) + J(x; θ0)(θ(α) − θ0). `atBase`,
    /// when given, is base's own accuracy on `data` (a task's zero-shot accuracy): θ(0) is base
    /// exactly, so α = 0 takes it without a pass.
    public static func accuraciesAlongLine(
        backbone: any Backbone, base: FloatBuffer, direction: FloatBuffer, alphas: [Double],
        head: ClassificationHead, data: Dataset, linearizedAround linearization: FloatBuffer? = nil,
        atBase: Double? = nil
    ) -> [Double] {
        if let atBase, alphas.contains(0) {
            let others = alphas.filter { $0 != 0 }
            var measured = accuraciesAlongLine(backbone: backbone, base: base, direction: direction, alphas: others,
                                               head: head, data: data, linearizedAround: linearization).makeIterator()
            return alphas.map { $0 == 0 ? atBase : measured.next()! }
        }
        guard data.count > 0 else { return alphas.map { _ in 0 } }
        return correctAlongLine(backbone: backbone, base: base, direction: direction, alphas: alphas, head: head,
                                data: data, rows: 0..<data.count, linearizedAround: linearization)
            .map { Double($0) / Double(data.count) }
    }

    /// How many of the samples `rows` of `data` θ(α) classifies right, for every α of `alphas`.
    /// The rows run in chunks of the backbone's cache block from `rows.lowerBound`, so counts over
    /// row ranges cut at multiples of the block add up, bit for bit, to the count over all of them.
    /// `sharingFirstLayer` false runs each θ(α) as it is, bitwise the forward pass of that model
    /// (the test accuracy of a merged model, which `orthofuse eval` of its file reproduces).
    public static func correctAlongLine(
        backbone: any Backbone, base: FloatBuffer, direction: FloatBuffer, alphas: [Double],
        head: ClassificationHead, data: Dataset, rows: Range<Int>, linearizedAround linearization: FloatBuffer? = nil,
        sharingFirstLayer: Bool = true
    ) -> [Int] {
        let model = FloatBuffer(count: base.count)
        let logits = FloatBuffer(count: backbone.maxBatch * head.classes)
        if sharingFirstLayer, linearization == nil, let affine = backbone as? AffineInputBackbone, !rows.isEmpty,
           2 * rows.count * affine.firstLayer.outputs <= lineScratchBudget {
            return correctAlongLine(affine, base: base, direction: direction, alphas: alphas, head: head, data: data,
                                    rows: rows, model: model, logits: logits)
        }
        return alphas.map { alpha in
            TaskArithmetic.merge(base: base, taskVectorSum: direction, alpha: Float(alpha), into: model)
            return correctCount(backbone: backbone, parameters: model, head: head, data: data, rows: rows,
                                linearizedAround: linearization, logits: logits, betweenChunks: {})
        }
    }

    private static func correctAlongLine(
        _ backbone: any AffineInputBackbone, base: FloatBuffer, direction: FloatBuffer, alphas: [Double],
        head: ClassificationHead, data: Dataset, rows: Range<Int>, model: FloatBuffer, logits: FloatBuffer
    ) -> [Int] {
        let (weight, bias, width) = backbone.firstLayer
        let inputs = data.featureCount
        let chunk = backbone.cacheBlock
        /// The chunks of `rows`: (first row, rows, offset of the chunk's pre-activations).
        let chunks = stride(from: rows.lowerBound, to: rows.upperBound, by: chunk).map { start in
            (start, min(chunk, rows.upperBound - start), (start - rows.lowerBound) * width)
        }
        // u = W0·x + b0 and v = ΔW·x + Δb for every sample, [rows, width] each, one chunk per GEMM
        // (as the chunk's own forward pass would compute them).
        let atBase = FloatBuffer(count: rows.count * width), alongDirection = FloatBuffer(count: rows.count * width)
        data.inputs.withUnsafeBufferPointer { x in
            for (start, count, offset) in chunks {
                for (out, parameters) in [(atBase, base), (alongDirection, direction)] {
                    Linear.forward(out: out.pointer + offset, inp: x.baseAddress! + start * inputs,
                                   weight: parameters.pointer + weight, bias: parameters.pointer + bias,
                                   rows: count, inputs: inputs, outputs: width)
                }
            }
        }
        let preActivation = FloatBuffer(count: chunk * width)
        return alphas.map { alpha in
            TaskArithmetic.merge(base: base, taskVectorSum: direction, alpha: Float(alpha), into: model)
            var correct = 0
            for (start, count, offset) in chunks {
                preActivation.pointer.update(from: atBase.pointer + offset, count: count * width)
                ElementWise.axpy(preActivation.pointer, Float(alpha), alongDirection.pointer + offset, count: count * width)
                let features = backbone.forward(parameters: model.pointer, firstPreActivation: preActivation.pointer, batch: count)
                correct += correctInChunk(head: head, features: features, labels: data.labels, start: start, count: count,
                                          logits: logits)
            }
            return correct
        }
    }
}
