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
        let batch = config.batch

        let logits = FloatBuffer(count: batch * config.classes)
        let logitGradient = FloatBuffer(count: batch * config.classes)
        let featureGradient = FloatBuffer(count: batch * head.featureCount)
        let gradient = FloatBuffer(count: layout.totalCount)
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
                                             labels: $0.baseAddress!, batch: batch, classes: config.classes,
                                             labelSmoothing: Float(config.label_smoothing))
            }
            head.backward(featureGradient: featureGradient.pointer, parameterGradient: headGradient.pointer,
                          logitGradient: logitGradient.pointer, features: f, batch: batch)
            backbone.backward(featureGradient: featureGradient.pointer, parameters: parameters.pointer,
                              inputs: x.baseAddress!, batch: batch, parameterGradient: gradient.pointer,
                              inputGradient: inputGradient.pointer)
        }

        var report: [String] = []
        func compare(_ quantity: String, _ actual: [Float], _ expected: [Float]) {
            checkTensor("\(name) \(quantity)", actual, expected, relative: 1e-4, absolute: 1e-6)
            report.append(String(format: "%@ %.2e", quantity, maxRelativeError(actual, expected)))
        }
        compare("features", features, try tensor(file, "features"))
        compare("logits", logits.array, try tensor(file, "logits"))
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
}
