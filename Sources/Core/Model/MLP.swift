// MLP: a multilayer perceptron backbone, `layers.i` Linear + activation, PyTorch layout.
//
// Legend: B batch rows, D input features, H_i width of hidden layer i.
// Every Linear is followed by the activation, the last one included: the backbone output
// (features) is the last hidden activation, and a task's head maps it to class logits.

public struct MLPConfiguration: Sendable, Equatable {
    public var inputCount: Int
    public var hidden: [Int]
    public var activation: Activation

    public init(inputCount: Int, hidden: [Int], activation: Activation) {
        self.inputCount = inputCount
        self.hidden = hidden
        self.activation = activation
    }

    /// Names and shapes: layers.i.weight [H_i, H_{i-1}], layers.i.bias [H_i].
    public var layout: ParameterLayout {
        var specs: [ParameterSpec] = []
        var fanIn = inputCount
        for (i, width) in hidden.enumerated() {
            specs.append(ParameterSpec(name: "layers.\(i).weight", shape: [width, fanIn]))
            specs.append(ParameterSpec(name: "layers.\(i).bias", shape: [width]))
            fanIn = width
        }
        return ParameterLayout(specs)
    }
}

public final class MLPBackbone: AffineInputBackbone {
    public let configuration: MLPConfiguration
    public let layout: ParameterLayout
    public let maxBatch: Int
    public var inputCount: Int { configuration.inputCount }
    public var inputShape: [Int] { [configuration.inputCount] }
    public var featureCount: Int { configuration.hidden.last ?? configuration.inputCount }

    // Saved by forward for backward: pre-activations[i] [B, H_i], activations[i] [B, H_i].
    private let preActivations: [FloatBuffer]
    private let activations: [FloatBuffer]
    // Scratch gradients w.r.t. activations and pre-activations, [B, max H].
    private let activationGradient: FloatBuffer
    private let preActivationGradient: FloatBuffer
    // Tangents of pre-activations and activations for the JVP, [B, H_i]; empty until first used.
    private var preActivationTangents: [FloatBuffer] = []
    private var activationTangents: [FloatBuffer] = []

    public init(_ configuration: MLPConfiguration, maxBatch: Int) {
        precondition(!configuration.hidden.isEmpty, "an MLP needs at least one hidden layer")
        self.configuration = configuration
        self.layout = configuration.layout
        self.maxBatch = maxBatch
        preActivations = configuration.hidden.map { FloatBuffer(count: maxBatch * $0) }
        activations = configuration.hidden.map { FloatBuffer(count: maxBatch * $0) }
        let widest = configuration.hidden.max()!
        activationGradient = FloatBuffer(count: maxBatch * widest)
        preActivationGradient = FloatBuffer(count: maxBatch * widest)
    }

    public func forward(parameters: UnsafePointer<Float>, inputs: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        precondition(batch <= maxBatch, "batch \(batch) exceeds the workspace (\(maxBatch))")
        Linear.forward(out: preActivations[0].pointer, inp: inputs, weight: parameters + layout.offsets[0],
                       bias: parameters + layout.offsets[1], rows: batch, inputs: configuration.inputCount,
                       outputs: configuration.hidden[0])
        return forwardAfterFirstLinear(parameters: parameters, batch: batch)
    }

    /// The activations from layer 0's pre-activation (in preActivations[0]) on.
    private func forwardAfterFirstLinear(parameters: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let hidden = configuration.hidden
        for (i, width) in hidden.enumerated() {
            if i > 0 {
                Linear.forward(out: preActivations[i].pointer, inp: activations[i - 1].pointer,
                               weight: parameters + layout.offsets[2 * i], bias: parameters + layout.offsets[2 * i + 1],
                               rows: batch, inputs: hidden[i - 1], outputs: width)
            }
            configuration.activation.forward(out: activations[i].pointer, inp: preActivations[i].pointer,
                                             count: batch * width)
        }
        return UnsafePointer(activations[hidden.count - 1].pointer)
    }

    public var firstLayer: (weight: Int, bias: Int, outputs: Int) {
        (layout.offsets[0], layout.offsets[1], configuration.hidden[0])
    }

    public func forward(parameters: UnsafePointer<Float>, firstPreActivation: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        precondition(batch <= maxBatch, "batch \(batch) exceeds the workspace (\(maxBatch))")
        preActivations[0].pointer.update(from: firstPreActivation, count: batch * configuration.hidden[0])
        return forwardAfterFirstLinear(parameters: parameters, batch: batch)
    }

    public func backward(
        featureGradient: UnsafePointer<Float>, parameters: UnsafePointer<Float>, inputs: UnsafePointer<Float>,
        batch: Int, parameterGradient: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?
    ) {
        let hidden = configuration.hidden
        var upstream = featureGradient
        for i in stride(from: hidden.count - 1, through: 0, by: -1) {
            let width = hidden[i]
            let fanIn = i == 0 ? configuration.inputCount : hidden[i - 1]
            let count = batch * width
            preActivationGradient.pointer.update(repeating: 0, count: count)
            configuration.activation.backward(dinp: preActivationGradient.pointer, dout: upstream,
                                              inp: preActivations[i].pointer, count: count)
            let layerInput = i == 0 ? inputs : UnsafePointer(activations[i - 1].pointer)
            // The gradient w.r.t. this layer's input: either the previous activation's
            // (into scratch, then handed upstream) or the caller's input gradient.
            var inputGradientTarget: UnsafeMutablePointer<Float>? = nil
            if i > 0 {
                activationGradient.pointer.update(repeating: 0, count: batch * fanIn)
                inputGradientTarget = activationGradient.pointer
            } else {
                inputGradientTarget = inputGradient
            }
            Linear.backward(dinp: inputGradientTarget,
                            dweight: parameterGradient + layout.offsets[2 * i],
                            dbias: parameterGradient + layout.offsets[2 * i + 1],
                            dout: preActivationGradient.pointer, inp: layerInput,
                            weight: parameters + layout.offsets[2 * i],
                            rows: batch, inputs: fanIn, outputs: width)
            upstream = UnsafePointer(activationGradient.pointer)
        }
    }

    public func forwardWithTangent(
        parameters: UnsafePointer<Float>, tangent: UnsafePointer<Float>, inputs: UnsafePointer<Float>, batch: Int,
        featureTangent: UnsafeMutablePointer<Float>
    ) -> UnsafePointer<Float> {
        if preActivationTangents.isEmpty {
            // Allocated once, on first use, so plain fine-tuning does not pay for them.
            preActivationTangents = configuration.hidden.map { FloatBuffer(count: maxBatch * $0) }
            activationTangents = configuration.hidden.map { FloatBuffer(count: maxBatch * $0) }
        }
        let features = forward(parameters: parameters, inputs: inputs, batch: batch)
        var layerInput = inputs
        var layerInputTangent: UnsafePointer<Float>? = nil
        var fanIn = configuration.inputCount
        for (i, width) in configuration.hidden.enumerated() {
            Linear.forwardTangent(
                outTangent: preActivationTangents[i].pointer, inp: layerInput, inpTangent: layerInputTangent,
                weight: parameters + layout.offsets[2 * i], weightTangent: tangent + layout.offsets[2 * i],
                biasTangent: tangent + layout.offsets[2 * i + 1], rows: batch, inputs: fanIn, outputs: width)
            configuration.activation.forwardTangent(
                outTangent: activationTangents[i].pointer, inp: preActivations[i].pointer,
                inpTangent: preActivationTangents[i].pointer, count: batch * width)
            layerInput = UnsafePointer(activations[i].pointer)
            layerInputTangent = UnsafePointer(activationTangents[i].pointer)
            fanIn = width
        }
        featureTangent.update(from: activationTangents.last!.pointer, count: batch * featureCount)
        return features
    }

    /// PyTorch's default Linear initialisation: weight and bias uniform in ±1/√fan_in.
    public func initialize(_ parameters: FloatBuffer, random: inout RandomStream) {
        precondition(parameters.count == layout.totalCount)
        for (i, spec) in layout.specs.enumerated() {
            let fanIn = i % 2 == 0 ? spec.shape[1] : layout.specs[i - 1].shape[1]
            let bound = 1 / Double(fanIn).squareRoot()
            for j in layout.range(at: i) {
                parameters[j] = Float((2 * random.nextDouble() - 1) * bound)
            }
        }
    }
}
