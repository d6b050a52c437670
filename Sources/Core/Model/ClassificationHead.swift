// ClassificationHead: a task's linear classifier on backbone features (head.weight, head.bias).
//
// Legend: B batch rows, F feature width, C classes.

public final class ClassificationHead: @unchecked Sendable {
    // Sendable for handing a finished head between threads; mutated only while it is fitted.
    public let classes: Int
    public let featureCount: Int
    public let layout: ParameterLayout
    /// head.weight [C, F] then head.bias [C].
    public let parameters: FloatBuffer

    public init(classes: Int, featureCount: Int) {
        self.classes = classes
        self.featureCount = featureCount
        layout = ParameterLayout([
            ParameterSpec(name: "head.weight", shape: [classes, featureCount]),
            ParameterSpec(name: "head.bias", shape: [classes]),
        ])
        parameters = FloatBuffer(count: layout.totalCount)
    }

    public var weight: UnsafeMutablePointer<Float> { parameters.pointer }
    public var bias: UnsafeMutablePointer<Float> { parameters.pointer + classes * featureCount }

    /// logits[B, C] = features[B, F] · weightᵀ + bias
    public func forward(logits: UnsafeMutablePointer<Float>, features: UnsafePointer<Float>, batch: Int) {
        Linear.forward(out: logits, inp: features, weight: weight, bias: bias,
                       rows: batch, inputs: featureCount, outputs: classes)
    }

    /// featureGradient += logitGradient · weight; the head's own gradient only when asked.
    public func backward(
        featureGradient: UnsafeMutablePointer<Float>?, parameterGradient: UnsafeMutablePointer<Float>?,
        logitGradient: UnsafePointer<Float>, features: UnsafePointer<Float>, batch: Int
    ) {
        Linear.backward(dinp: featureGradient, dweight: parameterGradient,
                        dbias: parameterGradient.map { $0 + classes * featureCount },
                        dout: logitGradient, inp: features, weight: weight,
                        rows: batch, inputs: featureCount, outputs: classes)
    }
}
