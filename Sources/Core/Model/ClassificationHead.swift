// ClassificationHead: a task's classifier on backbone features (head.weight, head.bias): linear,
// or cosine (features normalised to unit length first, as CLIP's zero-shot heads read them).
//
// Legend: B batch rows, F feature width, C classes.

public final class ClassificationHead: @unchecked Sendable {
    // Sendable for handing a finished head between threads; mutated only while it is fitted, and
    // its scratch only by the one thread that evaluates or trains with it.
    public let classes: Int
    public let featureCount: Int
    /// Cosine head: logits = n · weightᵀ + bias with n = f / ‖f‖ per row (a prototype head's weight
    /// rows are temperature × unit prototypes). Linear head: logits = f · weightᵀ + bias.
    public let normalizesFeatures: Bool
    public let layout: ParameterLayout
    /// head.weight [C, F] then head.bias [C].
    public let parameters: FloatBuffer
    // Cosine head only, saved by forward for backward: n [B, F] and 1/‖f‖ [B]; dn [B, F] scratch.
    // Grown to the largest batch seen (once: a training step always has the same batch).
    private var normalized = FloatBuffer(count: 0)
    private var inverseNorms = FloatBuffer(count: 0)
    private var normalizedGradient = FloatBuffer(count: 0)

    public init(classes: Int, featureCount: Int, normalizesFeatures: Bool = false) {
        self.classes = classes
        self.featureCount = featureCount
        self.normalizesFeatures = normalizesFeatures
        layout = ParameterLayout([
            ParameterSpec(name: "head.weight", shape: [classes, featureCount]),
            ParameterSpec(name: "head.bias", shape: [classes]),
        ])
        parameters = FloatBuffer(count: layout.totalCount)
    }

    public var weight: UnsafeMutablePointer<Float> { parameters.pointer }
    public var bias: UnsafeMutablePointer<Float> { parameters.pointer + classes * featureCount }

    /// A cosine head's class vectors: row c of the weight becomes scale × rows[c] / ‖rows[c]‖
    /// (computed in Double; a zero row stays 0), the bias 0. `rows` is [C, F], row-major.
    public func setClassDirections(_ rows: [Double], scale: Double) {
        precondition(rows.count == classes * featureCount)
        for c in 0..<classes {
            let row = rows[(c * featureCount)..<((c + 1) * featureCount)]
            let norm = row.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
            for (i, value) in row.enumerated() { weight[c * featureCount + i] = norm > 0 ? Float(scale * value / norm) : 0 }
            bias[c] = 0
        }
    }

    /// logits[B, C] = features[B, F] · weightᵀ + bias (features first normalised per row for a cosine head).
    public func forward(logits: UnsafeMutablePointer<Float>, features: UnsafePointer<Float>, batch: Int) {
        let input = normalizesFeatures ? normalize(features, batch: batch) : features
        Linear.forward(out: logits, inp: input, weight: weight, bias: bias,
                       rows: batch, inputs: featureCount, outputs: classes)
    }

    /// featureGradient += ∂loss/∂features; the head's own gradient only when asked. For a cosine
    /// head `features` must be those of the last `forward` (whose normalisation it reuses).
    public func backward(
        featureGradient: UnsafeMutablePointer<Float>?, parameterGradient: UnsafeMutablePointer<Float>?,
        logitGradient: UnsafePointer<Float>, features: UnsafePointer<Float>, batch: Int
    ) {
        guard normalizesFeatures else {
            Linear.backward(dinp: featureGradient, dweight: parameterGradient,
                            dbias: parameterGradient.map { $0 + classes * featureCount },
                            dout: logitGradient, inp: features, weight: weight,
                            rows: batch, inputs: featureCount, outputs: classes)
            return
        }
        let width = featureCount
        let dn = featureGradient.map { _ in normalizedGradient.pointer }
        dn?.update(repeating: 0, count: batch * width)
        Linear.backward(dinp: dn, dweight: parameterGradient,
                        dbias: parameterGradient.map { $0 + classes * featureCount },
                        dout: logitGradient, inp: normalized.pointer, weight: weight,
                        rows: batch, inputs: width, outputs: classes)
        guard let featureGradient, let dn else { return }
        // n = f/‖f‖: ∂/∂f = (dn − n ⟨n, dn⟩) / ‖f‖, row by row.
        for row in 0..<batch {
            let n = normalized.pointer + row * width
            let g = dn + row * width
            var projection: Float = 0
            for i in 0..<width { projection += n[i] * g[i] }
            let scale = inverseNorms.pointer[row]
            let out = featureGradient + row * width
            for i in 0..<width { out[i] += scale * (g[i] - projection * n[i]) }
        }
    }

    /// Fills `normalized` with each row of `features` divided by its norm (a zero row stays zero).
    private func normalize(_ features: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let width = featureCount
        if normalized.count < batch * width {
            normalized = FloatBuffer(count: batch * width)
            normalizedGradient = FloatBuffer(count: batch * width)
            inverseNorms = FloatBuffer(count: batch)
        }
        for row in 0..<batch {
            let norm = ElementWise.sumOfSquares(features + row * width, count: width).squareRoot()
            let inverse = norm > 0 ? Float(1 / norm) : 0
            inverseNorms.pointer[row] = inverse
            let out = normalized.pointer + row * width
            for i in 0..<width { out[i] = features[row * width + i] * inverse }
        }
        return UnsafePointer(normalized.pointer)
    }
}
