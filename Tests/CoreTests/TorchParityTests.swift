// TorchParityTests: the MLP, loss, gradients and one optimizer step against fixtures written by
// scripts/torch_reference.py (PyTorch, float32) from the same weights and batch.
import Foundation
import XCTest
@testable import Core

final class TorchParityTests: XCTestCase {
    private struct FixtureConfig: Decodable {
        let input: Int
        let hidden: [Int]
        let classes: Int
        let batch: Int
        let activation: String
        let label_smoothing: Double
    }

    private func fixture(_ name: String) throws -> SafetensorsFile {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: "safetensors"),
                                "fixture \(name) missing")
        return try Safetensors.read(url)
    }

    private func tensor(_ file: SafetensorsFile, _ name: String) throws -> [Float] {
        try XCTUnwrap(file[name], "fixture tensor \(name) missing").values
    }

    /// Runs the fixture's batch through orthofuse's MLP and compares every quantity.
    private func checkFixture(_ name: String) throws {
        let file = try fixture(name)
        let config = try JSONDecoder().decode(FixtureConfig.self, from: Data(try XCTUnwrap(file.metadata["config"]).utf8))
        let activation = try XCTUnwrap(Activation(rawValue: config.activation))
        let backbone = MLPBackbone(MLPConfiguration(inputCount: config.input, hidden: config.hidden, activation: activation),
                                   maxBatch: config.batch)
        let layout = backbone.layout
        let parameters = FloatBuffer(count: layout.totalCount)
        for (i, spec) in layout.specs.enumerated() {
            let values = try tensor(file, "param.\(spec.name)")
            XCTAssertEqual(values.count, spec.count, spec.name)
            for (j, value) in values.enumerated() { parameters[layout.offsets[i] + j] = value }
        }
        let head = ClassificationHead(classes: config.classes, featureCount: config.hidden.last!)
        head.parameters.copy(from: try tensor(file, "param.head.weight") + tensor(file, "param.head.bias"))
        let input = try tensor(file, "input")
        let labels = try tensor(file, "labels").map { Int32($0) }
        XCTAssertEqual(labels.count, config.batch, "the fixture holds one label per sample of its batch")

        let pass = Self.lossAndGradients(backbone: backbone, parameters: parameters, head: head, input: input,
                                         labels: labels, labelSmoothing: Float(config.label_smoothing))
        let (features, logits, loss, gradient, headGradient, inputGradient) =
            (pass.features, pass.logits, pass.loss, pass.gradient, pass.headGradient, pass.inputGradient)

        var report: [String] = []
        func compare(_ quantity: String, _ actual: [Float], _ expected: [Float]) {
            checkTensor("\(name) \(quantity)", actual, expected, relative: 1e-4, absolute: 1e-6)
            report.append(String(format: "%@ %.2e", quantity, maxRelativeError(actual, expected)))
        }
        compare("features", features, try tensor(file, "features"))
        compare("logits", logits, try tensor(file, "logits"))
        compare("loss", [Float(loss)], try tensor(file, "loss"))
        compare("input_grad", inputGradient.array, try tensor(file, "input_grad"))
        for (i, spec) in layout.specs.enumerated() {
            compare("grad.\(spec.name)", Array(gradient.array[layout.range(at: i)]), try tensor(file, "grad.\(spec.name)"))
        }
        compare("grad.head.weight", Array(headGradient.array[0..<(config.classes * head.featureCount)]),
                try tensor(file, "grad.head.weight"))
        compare("grad.head.bias", Array(headGradient.array[(config.classes * head.featureCount)...]),
                try tensor(file, "grad.head.bias"))

        // One AdamW and one SGD step on all parameters (backbone and head), as the fixture did.
        for (prefix, settings) in [("adamw", OptimizerSettings.adamw(learningRate: 1e-3, weightDecay: 0.1)),
                                   ("sgd", OptimizerSettings(kind: .sgd(momentum: 0.9), learningRate: 0.1, weightDecay: 0))] {
            let stepped = FloatBuffer(count: layout.totalCount)
            stepped.copy(from: parameters)
            Optimizer(settings: settings, parameterCount: stepped.count)
                .step(parameters: stepped.pointer, gradient: gradient.pointer, rate: settings.learningRate,
                      ranges: [0..<stepped.count])
            for (i, spec) in layout.specs.enumerated() {
                compare("\(prefix).\(spec.name)", Array(stepped.array[layout.range(at: i)]),
                        try tensor(file, "\(prefix).\(spec.name)"))
            }
        }
        print("parity \(name): max relative error " + report.joined(separator: ", "))
    }

    func testMLPWithReLUMatchesPyTorch() throws {
        try checkFixture("parity_mlp_relu")
    }

    func testMLPWithGELUAndLabelSmoothingMatchesPyTorch() throws {
        try checkFixture("parity_mlp_gelu")
    }


    struct Pass {
        var features: [Float]
        var logits: [Float]
        var loss: Double
        var gradient: FloatBuffer
        var headGradient: FloatBuffer
        var inputGradient: FloatBuffer
    }

    /// Forward and backward of backbone + head + cross-entropy on one batch: what every parity
    /// check compares (gradients w.r.t. the backbone, the head and the input).
    static func lossAndGradients(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                 input: [Float], labels: [Int32], labelSmoothing: Float) -> Pass {
        let batch = labels.count
        let logits = FloatBuffer(count: batch * head.classes)
        let logitGradient = FloatBuffer(count: batch * head.classes)
        let featureGradient = FloatBuffer(count: batch * head.featureCount)
        let gradient = FloatBuffer(count: backbone.layout.totalCount)
        let headGradient = FloatBuffer(count: head.parameters.count)
        let inputGradient = FloatBuffer(count: input.count)
        var features: [Float] = []
        var loss = 0.0
        input.withUnsafeBufferPointer { x in
            let f = backbone.forward(parameters: parameters.pointer, inputs: x.baseAddress!, batch: batch)
            features = Array(UnsafeBufferPointer(start: f, count: batch * head.featureCount))
            head.forward(logits: logits.pointer, features: f, batch: batch)
            loss = labels.withUnsafeBufferPointer {
                CrossEntropy.forwardBackward(logitGradient: logitGradient.pointer, logits: logits.pointer,
                                             labels: $0.baseAddress!, batch: batch, classes: head.classes,
                                             labelSmoothing: labelSmoothing)
            }
            head.backward(featureGradient: featureGradient.pointer, parameterGradient: headGradient.pointer,
                          logitGradient: logitGradient.pointer, features: f, batch: batch)
            backbone.backward(featureGradient: featureGradient.pointer, parameters: parameters.pointer,
                              inputs: x.baseAddress!, batch: batch, parameterGradient: gradient.pointer,
                              inputGradient: inputGradient.pointer)
        }
        return Pass(features: features, logits: logits.array, loss: loss, gradient: gradient,
                    headGradient: headGradient, inputGradient: inputGradient)
    }

    /// Loads `param.<name>` of every layout entry into a flat buffer.
    private func loadParameters(_ file: SafetensorsFile, prefix: String, layout: ParameterLayout) throws -> FloatBuffer {
        let buffer = FloatBuffer(count: layout.totalCount)
        for (i, spec) in layout.specs.enumerated() {
            let values = try tensor(file, "\(prefix).\(spec.name)")
            XCTAssertEqual(values.count, spec.count, spec.name)
            for (j, value) in values.prefix(spec.count).enumerated() { buffer[layout.offsets[i] + j] = value }
        }
        return buffer
    }

    /// Two optimizer steps on the same batch, recomputing the gradient in between: catches errors
    /// in moment accumulation and bias correction that one step from zero cannot.
    func testTwoOptimizerStepsMatchPyTorch() throws {
        for name in ["parity_mlp_relu_steps", "parity_mlp_gelu_steps"] {
            let file = try fixture(name)
            let config = try JSONDecoder().decode(FixtureConfig.self, from: Data(try XCTUnwrap(file.metadata["config"]).utf8))
            let backbone = MLPBackbone(MLPConfiguration(inputCount: config.input, hidden: config.hidden,
                                                        activation: try XCTUnwrap(Activation(rawValue: config.activation))),
                                       maxBatch: config.batch)
            let input = try tensor(file, "input")
            let labels = try tensor(file, "labels").map { Int32($0) }
            for (prefix, settings) in [("adamw2", OptimizerSettings.adamw(learningRate: 1e-3, weightDecay: 0.1)),
                                       ("sgd2", OptimizerSettings(kind: .sgd(momentum: 0.9), learningRate: 0.1, weightDecay: 0))] {
                let parameters = try loadParameters(file, prefix: "param", layout: backbone.layout)
                let head = ClassificationHead(classes: config.classes, featureCount: backbone.featureCount)
                head.parameters.copy(from: try tensor(file, "param.head.weight") + tensor(file, "param.head.bias"))
                let optimizer = Optimizer(settings: settings, parameterCount: parameters.count)
                let headOptimizer = Optimizer(settings: settings, parameterCount: head.parameters.count)
                for _ in 0..<2 {
                    let pass = Self.lossAndGradients(backbone: backbone, parameters: parameters, head: head, input: input,
                                                     labels: labels, labelSmoothing: Float(config.label_smoothing))
                    optimizer.step(parameters: parameters.pointer, gradient: pass.gradient.pointer,
                                   rate: settings.learningRate, ranges: [0..<parameters.count])
                    headOptimizer.step(parameters: head.parameters.pointer, gradient: pass.headGradient.pointer,
                                       rate: settings.learningRate, ranges: [0..<head.parameters.count])
                }
                let expected = try loadParameters(file, prefix: prefix, layout: backbone.layout)
                checkTensor("\(name) \(prefix) backbone", parameters.array, expected.array, relative: 1e-4, absolute: 1e-6)
                checkTensor("\(name) \(prefix) head", head.parameters.array,
                            try tensor(file, "\(prefix).head.weight") + tensor(file, "\(prefix).head.bias"),
                            relative: 1e-4, absolute: 1e-6)
                print(String(format: "parity %@ %@: max relative error %.2e", name, prefix,
                             maxRelativeError(parameters.array, expected.array)))
            }
        }
    }

    // MARK: OrthoReg, LoRA, linearized

    func testOrthoRegValueAndGradientMatchAutograd() throws {
        let file = try fixture("parity_orthoreg")
        var report: [String] = []
        for orientation in ["tall", "wide"] {
            let delta = try XCTUnwrap(file["\(orientation).delta"])
            let (rows, columns) = (delta.shape[0], delta.shape[1])
            for form in OrthoRegForm.allCases {
                var gram = [Float](repeating: 0, count: min(rows, columns) * min(rows, columns))
                var gradient = [Float](repeating: 0, count: rows * columns)
                let value = OrthoRegularizer.penaltyAndGradient(delta: delta.values, rows: rows, columns: columns,
                                                                form: form, gram: &gram, gradientOut: &gradient)
                let expectedValue = try tensor(file, "\(orientation).\(form.rawValue).value")
                let expectedGradient = try tensor(file, "\(orientation).\(form.rawValue).grad")
                checkTensor("\(orientation) \(form) value", [Float(value)], expectedValue, relative: 1e-5)
                checkTensor("\(orientation) \(form) gradient", gradient, expectedGradient, relative: 1e-4, absolute: 1e-6)
                report.append(String(format: "%@/%@ value %.2e grad %.2e", orientation, form.rawValue,
                                     maxRelativeError([Float(value)], expectedValue), maxRelativeError(gradient, expectedGradient)))
            }
        }
        print("parity orthoreg: max relative error " + report.joined(separator: ", "))
    }

    func testLoRAChainRuleMatchesAutograd() throws {
        let file = try fixture("parity_lora")
        let w0 = try XCTUnwrap(file["w0"])
        let (out, inputs) = (w0.shape[0], w0.shape[1])
        let rank = try XCTUnwrap(Int(try XCTUnwrap(file.metadata["rank"])))
        let alpha = try XCTUnwrap(Float(try XCTUnwrap(file.metadata["alpha"])))
        let layout = ParameterLayout([ParameterSpec(name: "w", shape: [out, inputs]), ParameterSpec(name: "b", shape: [out])])
        let adapters = LoRAAdapters(layout: layout, targets: [0], rank: rank, alpha: alpha, random: RandomStream(seed: 1))
        let target = adapters.targets[0]
        let a = try tensor(file, "lora_a"), b = try tensor(file, "lora_b")
        for (i, value) in a.enumerated() { adapters.values[target.a + i] = value }
        for (i, value) in b.enumerated() { adapters.values[target.b + i] = value }

        // y = x (W0 + s·B·A)ᵀ + bias through the materialised weight and the ordinary Linear layer.
        let parameters = FloatBuffer(w0.values + (try tensor(file, "bias")))
        let base = FloatBuffer(parameters.array)
        adapters.materialize(parameters: parameters, base: base)
        let input = try tensor(file, "input"), upstream = try tensor(file, "upstream")
        let rows = input.count / inputs
        var output = [Float](repeating: 0, count: rows * out)
        Linear.forward(out: &output, inp: input, weight: parameters.pointer, bias: parameters.pointer + out * inputs,
                       rows: rows, inputs: inputs, outputs: out)
        checkTensor("LoRA output", output, try tensor(file, "output"), relative: 1e-5, absolute: 1e-6)
        let gradient = FloatBuffer(count: layout.totalCount)
        Linear.backward(dinp: nil, dweight: gradient.pointer, dbias: nil, dout: upstream, inp: input,
                        weight: parameters.pointer, rows: rows, inputs: inputs, outputs: out)
        _ = adapters.backpropagate(backboneGradient: gradient, orthoReg: OrthoRegSettings(lambda: 0))
        let count = rank * inputs
        checkTensor("LoRA grad A", Array(adapters.gradient.array[target.a..<(target.a + count)]),
                    try tensor(file, "grad.lora_a"), relative: 1e-4, absolute: 1e-6)
        checkTensor("LoRA grad B", Array(adapters.gradient.array[target.b..<(target.b + rank * out)]),
                    try tensor(file, "grad.lora_b"), relative: 1e-4, absolute: 1e-6)
        let dense = adapters.taskVector(count: layout.totalCount)
        checkTensor("LoRA dense delta", Array(dense.array[0..<(out * inputs)]), try tensor(file, "dense_delta"),
                    relative: 1e-5, absolute: 1e-7)
        print(String(format: "parity lora: max relative error dense %.2e",
                     maxRelativeError(Array(dense.array[0..<(out * inputs)]), try tensor(file, "dense_delta"))))
    }

    func testLinearizedMLPMatchesTorchFuncJVP() throws {
        let file = try fixture("parity_linearized_mlp")
        let config = try JSONDecoder().decode(FixtureConfig.self, from: Data(try XCTUnwrap(file.metadata["config"]).utf8))
        let backbone = MLPBackbone(MLPConfiguration(inputCount: config.input, hidden: config.hidden,
                                                    activation: try XCTUnwrap(Activation(rawValue: config.activation))),
                                   maxBatch: config.batch)
        let layout = backbone.layout
        let base = FloatBuffer(count: layout.totalCount), parameters = FloatBuffer(count: layout.totalCount)
        for (i, spec) in layout.specs.enumerated() {
            for (j, value) in try tensor(file, "param0.\(spec.name)").enumerated() { base[layout.offsets[i] + j] = value }
            for (j, value) in try tensor(file, "param.\(spec.name)").enumerated() { parameters[layout.offsets[i] + j] = value }
        }
        let input = try tensor(file, "input")
        let width = backbone.featureCount
        let tangent = TaskVector.difference(finetuned: parameters, base: base)
        let jvp = FloatBuffer(count: config.batch * width)
        let primal = input.withUnsafeBufferPointer {
            Array(UnsafeBufferPointer(start: backbone.forwardWithTangent(parameters: base.pointer, tangent: tangent.pointer,
                                                                         inputs: $0.baseAddress!, batch: config.batch,
                                                                         featureTangent: jvp.pointer),
                                      count: config.batch * width))
        }
        checkTensor("f(x; θ0)", primal, try tensor(file, "features0"), relative: 1e-4, absolute: 1e-6)
        checkTensor("J(x; θ0)(θ − θ0)", jvp.array, try tensor(file, "jvp"), relative: 1e-4, absolute: 1e-6)
        let linearized = Evaluation.features(
            backbone: backbone, parameters: parameters,
            data: Dataset(inputs: input, labels: [Int32](repeating: 0, count: config.batch), sampleShape: [config.input]),
            linearizedAround: base)
        checkTensor("linearized features", linearized, try tensor(file, "linearized_features"), relative: 1e-4, absolute: 1e-6)
        print(String(format: "parity linearized mlp: max relative error jvp %.2e, linearized features %.2e",
                     maxRelativeError(jvp.array, try tensor(file, "jvp")),
                     maxRelativeError(linearized, try tensor(file, "linearized_features"))))
    }

    // MARK: ViT (timm's VisionTransformer)

    private struct ViTFixtureConfig: Decodable {
        let channels: Int, height: Int, width: Int, patch: Int, dim: Int, depth: Int, heads: Int
        let mlp_ratio: Int
        let classes: Int
        let batch: Int
        let label_smoothing: Double
        let layer_norm_eps: Double
    }

    private func vit(_ file: SafetensorsFile) throws -> (ViTBackbone, ViTFixtureConfig) {
        let config = try JSONDecoder().decode(ViTFixtureConfig.self, from: Data(try XCTUnwrap(file.metadata["config"]).utf8))
        let configuration = ViTConfiguration(channels: config.channels, height: config.height, width: config.width,
                                             patch: config.patch, dim: config.dim, depth: config.depth, heads: config.heads,
                                             mlpRatio: config.mlp_ratio, layerNormEpsilon: Float(config.layer_norm_eps))
        return (ViTBackbone(configuration, maxBatch: config.batch), config)
    }

    /// timm's state_dict loads into orthofuse's layout by name, and forward, loss, every gradient
    /// and two AdamW steps match timm's model run in PyTorch.
    func testViTMatchesTimm() throws {
        let file = try fixture("parity_vit")
        let (backbone, config) = try vit(file)
        let layout = backbone.layout
        let parameters = try loadParameters(file, prefix: "param", layout: layout)
        let head = ClassificationHead(classes: config.classes, featureCount: config.dim)
        head.parameters.copy(from: try tensor(file, "param.head.weight") + tensor(file, "param.head.bias"))
        let input = try tensor(file, "input")
        let labels = try tensor(file, "labels").map { Int32($0) }
        let pass = Self.lossAndGradients(backbone: backbone, parameters: parameters, head: head, input: input,
                                         labels: labels, labelSmoothing: Float(config.label_smoothing))
        var report: [String] = []
        func compare(_ quantity: String, _ actual: [Float], _ expected: [Float], relative: Double = 1e-4) {
            checkTensor("vit \(quantity)", actual, expected, relative: relative, absolute: 1e-5)
            report.append(String(format: "%@ %.1e", quantity, maxRelativeError(actual, expected)))
        }
        compare("features", pass.features, try tensor(file, "features"))
        compare("logits", pass.logits, try tensor(file, "logits"))
        compare("loss", [Float(pass.loss)], try tensor(file, "loss"))
        compare("input_grad", pass.inputGradient.array, try tensor(file, "input_grad"))
        var worstGradient = 0.0
        for (i, spec) in layout.specs.enumerated() {
            let actual = Array(pass.gradient.array[layout.range(at: i)])
            let expected = try tensor(file, "grad.\(spec.name)")
            checkTensor("vit grad.\(spec.name)", actual, expected, relative: 1e-3, absolute: 1e-5)
            worstGradient = max(worstGradient, maxRelativeError(actual, expected))
        }
        report.append(String(format: "gradients (worst tensor) %.1e", worstGradient))
        compare("grad.head", pass.headGradient.array, try tensor(file, "grad.head.weight") + tensor(file, "grad.head.bias"))

        for (prefix, steps) in [("adamw", 1), ("adamw2", 2)] {
            let stepped = try loadParameters(file, prefix: "param", layout: layout)
            let steppedHead = ClassificationHead(classes: config.classes, featureCount: config.dim)
            steppedHead.parameters.copy(from: head.parameters)
            let settings = OptimizerSettings.adamw(learningRate: 1e-3, weightDecay: 0.1)
            let optimizer = Optimizer(settings: settings, parameterCount: stepped.count)
            let headOptimizer = Optimizer(settings: settings, parameterCount: steppedHead.parameters.count)
            for _ in 0..<steps {
                let step = Self.lossAndGradients(backbone: backbone, parameters: stepped, head: steppedHead, input: input,
                                                 labels: labels, labelSmoothing: Float(config.label_smoothing))
                optimizer.step(parameters: stepped.pointer, gradient: step.gradient.pointer, rate: 1e-3,
                               ranges: [0..<stepped.count])
                headOptimizer.step(parameters: steppedHead.parameters.pointer, gradient: step.headGradient.pointer,
                                   rate: 1e-3, ranges: [0..<steppedHead.parameters.count])
            }
            // The key bias has an exactly-zero gradient (softmax ignores a shift shared by a row's
            // scores): float64 gives ~1e-17, float32 ~1e-9, and Adam's g/(|g| + ε) turns that rounding
            // noise into steps of ~lr. Compare only entries whose gradient is not structurally zero.
            let expectedGradient = try loadParameters(file, prefix: "grad", layout: layout).array
            let scale = expectedGradient.map(abs).max() ?? 0
            let informative = expectedGradient.indices.filter { abs(expectedGradient[$0]) > 1e-6 * scale }
            XCTAssertGreaterThan(informative.count, layout.totalCount * 9 / 10)
            let expected = try loadParameters(file, prefix: prefix, layout: layout).array
            compare(prefix, informative.map { stepped.array[$0] }, informative.map { expected[$0] })
        }
        print("parity vit (timm): max relative error " + report.joined(separator: ", "))
    }

    /// The linearized ViT: f(x; θ0) + J(x; θ0)(θ − θ0) against torch.func.jvp, and its parameter
    /// gradient (the VJP at θ0 of the linearized loss).
    func testLinearizedViTMatchesTorchFunc() throws {
        let file = try fixture("parity_linearized_vit")
        let (backbone, config) = try vit(file)
        let layout = backbone.layout
        let base = try loadParameters(file, prefix: "param0", layout: layout)
        let parameters = try loadParameters(file, prefix: "param", layout: layout)
        let input = try tensor(file, "input")
        let labels = try tensor(file, "labels").map { Int32($0) }
        let tangent = TaskVector.difference(finetuned: parameters, base: base)
        let jvp = FloatBuffer(count: config.batch * config.dim)
        let primal = input.withUnsafeBufferPointer {
            Array(UnsafeBufferPointer(start: backbone.forwardWithTangent(parameters: base.pointer, tangent: tangent.pointer,
                                                                         inputs: $0.baseAddress!, batch: config.batch,
                                                                         featureTangent: jvp.pointer),
                                      count: config.batch * config.dim))
        }
        checkTensor("vit f(x; θ0)", primal, try tensor(file, "features0"), relative: 1e-4, absolute: 1e-5)
        checkTensor("vit J(x; θ0)(θ − θ0)", jvp.array, try tensor(file, "jvp"), relative: 1e-4, absolute: 1e-5)

        // Loss of the linearized model and its gradient: backward at θ0 with dL/df_lin.
        let head = ClassificationHead(classes: config.classes, featureCount: config.dim)
        head.parameters.copy(from: try tensor(file, "head.weight") + tensor(file, "head.bias"))
        let linearized = zip(primal, jvp.array).map { $0 + $1 }
        let logits = FloatBuffer(count: config.batch * config.classes)
        let logitGradient = FloatBuffer(count: config.batch * config.classes)
        let featureGradient = FloatBuffer(count: config.batch * config.dim)
        head.forward(logits: logits.pointer, features: linearized, batch: config.batch)
        let loss = CrossEntropy.forwardBackward(logitGradient: logitGradient.pointer, logits: logits.pointer, labels: labels,
                                                batch: config.batch, classes: config.classes,
                                                labelSmoothing: Float(config.label_smoothing))
        checkTensor("vit linearized loss", [Float(loss)], try tensor(file, "loss"), relative: 1e-5)
        head.backward(featureGradient: featureGradient.pointer, parameterGradient: nil, logitGradient: logitGradient.pointer,
                      features: linearized, batch: config.batch)
        let gradient = FloatBuffer(count: layout.totalCount)
        input.withUnsafeBufferPointer {
            backbone.backward(featureGradient: featureGradient.pointer, parameters: base.pointer, inputs: $0.baseAddress!,
                              batch: config.batch, parameterGradient: gradient.pointer, inputGradient: nil)
        }
        var worst = 0.0
        for (i, spec) in layout.specs.enumerated() {
            let actual = Array(gradient.array[layout.range(at: i)])
            let expected = try tensor(file, "grad.\(spec.name)")
            checkTensor("vit linearized grad.\(spec.name)", actual, expected, relative: 1e-3, absolute: 1e-5)
            worst = max(worst, maxRelativeError(actual, expected))
        }
        print(String(format: "parity linearized vit: max relative error jvp %.1e, gradients (worst tensor) %.1e",
                     maxRelativeError(jvp.array, try tensor(file, "jvp")), worst))
    }
}
