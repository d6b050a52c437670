// HeadTests: the cosine head's gradient against finite differences, k-shot prototypes, and the
// `head:` section's two kinds.
import Foundation
import TestSupport
import XCTest
@testable import Core
@testable import JobSchema

final class HeadTests: XCTestCase {
    func testCosineHeadGradientsMatchFiniteDifferences() {
        let (batch, width, classes) = (3, 5, 4)
        var random = RandomStream(seed: 5, label: "cosine-head")
        let head = ClassificationHead(classes: classes, featureCount: width, normalizesFeatures: true)
        for i in 0..<head.parameters.count { head.parameters.pointer[i] = Float(random.nextGaussian()) }
        let features = (0..<(batch * width)).map { _ in Float(random.nextGaussian()) }
        let upstream = (0..<(batch * classes)).map { _ in Float(random.nextGaussian()) }
        // L = Σ upstream · logits, in Float64 from the formula: logits = (f/‖f‖)·Wᵀ + b.
        func loss(_ f: [Double], _ p: [Double]) -> Double {
            var total = 0.0
            for row in 0..<batch {
                let x = f[(row * width)..<((row + 1) * width)]
                let norm = x.reduce(0) { $0 + $1 * $1 }.squareRoot()
                for c in 0..<classes {
                    var logit = p[classes * width + c]
                    for (i, value) in x.enumerated() { logit += value / norm * p[c * width + i] }
                    total += Double(upstream[row * classes + c]) * logit
                }
            }
            return total
        }
        var logits = [Float](repeating: 0, count: batch * classes)
        head.forward(logits: &logits, features: features, batch: batch)
        var featureGradient = [Float](repeating: 0.5, count: batch * width)  // backward adds into it
        var parameterGradient = [Float](repeating: 0, count: head.parameters.count)
        head.backward(featureGradient: &featureGradient, parameterGradient: &parameterGradient,
                      logitGradient: upstream, features: features, batch: batch)
        let f = features.map(Double.init)
        let p = head.parameters.array.map(Double.init)
        checkTensor("cosine head ∂L/∂features", featureGradient.map { $0 - 0.5 }, numericGradient(f) { loss($0, p) },
                    relative: 1e-3, absolute: 1e-5)
        checkTensor("cosine head ∂L/∂parameters", parameterGradient, numericGradient(p) { loss(f, $0) },
                    relative: 1e-3, absolute: 1e-5)
        // The logits only depend on each row's direction.
        var scaled = [Float](repeating: 0, count: batch * classes)
        head.forward(logits: &scaled, features: features.map { 3 * $0 }, batch: batch)
        checkTensor("scale invariance", scaled, logits.map(Double.init), relative: 1e-5, absolute: 1e-6)
    }

    func testPrototypesAreTemperatureTimesUnitMeansOfUnitFeatures() throws {
        // An identity-like backbone: a one-layer MLP whose weight is I, so features = relu(x).
        let backbone = MLPBackbone(MLPConfiguration(inputCount: 2, hidden: [2], activation: .relu), maxBatch: 8)
        let parameters = FloatBuffer(count: backbone.layout.totalCount)
        parameters.copy(from: [1, 0, 0, 1, 0, 0])  // layers.0.weight = I, bias 0
        let data = Dataset(inputs: [3, 0, 0, 2, 1, 1, 0, 5], labels: [0, 1, 0, 1], sampleShape: [2])
        let head = ClassificationHead(classes: 2, featureCount: 2, normalizesFeatures: true)
        try PrototypeHead.fit(head: head, backbone: backbone, parameters: parameters, data: data,
                              settings: PrototypeSettings(shots: 5, temperature: 10), random: RandomStream(seed: 1), task: "t")
        // Class 0: unit features (1, 0) and (1/√2, 1/√2); their mean, normalised, times 10.
        let mean0 = (1 + 1 / 2.0.squareRoot(), 1 / 2.0.squareRoot())
        let norm0 = (mean0.0 * mean0.0 + mean0.1 * mean0.1).squareRoot()
        checkTensor("prototypes", head.parameters.array,
                    [10 * mean0.0 / norm0, 10 * mean0.1 / norm0, 0, 10, 0, 0], relative: 1e-5, absolute: 1e-5)
        // One shot takes one example per class only.
        let oneShot = ClassificationHead(classes: 2, featureCount: 2, normalizesFeatures: true)
        try PrototypeHead.fit(head: oneShot, backbone: backbone, parameters: parameters, data: data,
                              settings: PrototypeSettings(shots: 1, temperature: 1), random: RandomStream(seed: 1), task: "t")
        let row0 = Array(oneShot.parameters.array[0..<2])
        XCTAssertTrue(row0 == [1, 0] || zip(row0, [Float(0.70710677), 0.70710677]).allSatisfy { abs($0 - $1) < 1e-6 }, "\(row0)")

        let missing = Dataset(inputs: [1, 0, 2, 0], labels: [0, 0], sampleShape: [2])
        XCTAssertThrowsError(try PrototypeHead.fit(head: oneShot, backbone: backbone, parameters: parameters, data: missing,
                                                   settings: PrototypeSettings(shots: 1, temperature: 1),
                                                   random: RandomStream(seed: 1), task: "t")) { error in
            XCTAssertEqual("\(error)", "task 't': no training example of class 1 for its prototype head")
        }
    }

    private func head(_ text: String) throws -> HeadConfig {
        try JobConfig.parse("""
            name: h
            model: {arch: mlp, input: [2], hidden: [2]}
            tasks: [{name: t, classes: 2, train: t.npz, test: t.npz}]
            finetune: {steps: 1}
            output: out
            head: \(text)
            """, origin: "job.yaml", baseDirectory: URL(fileURLWithPath: "/tmp")).head
    }

    func testHeadKindsAndTheirKeys() throws {
        let prototypes = try head("{kind: prototypes, shots: 16}")
        XCTAssertEqual(prototypes.kind, .prototypes)
        XCTAssertEqual(prototypes.shots, 16)
        XCTAssertEqual(prototypes.temperature, 20)
        XCTAssertEqual(prototypes.summaryName, "prototypes-16")
        XCTAssertEqual(try head("{steps: 10}").kind, .probe)
        let cases = [
            ("{kind: prototypes}", "job.yaml: head.shots: required"),
            ("{kind: prototypes, shots: 4, steps: 3}", "job.yaml: head.steps: only allowed with kind: probe"),
            ("{shots: 4}", "job.yaml: head.shots: only allowed with kind: prototypes"),
            ("{kind: prototypes, shots: 4, temperature: 0}", "job.yaml: head.temperature: must be in (0, 10000]"),
        ]
        for (text, message) in cases {
            XCTAssertThrowsError(try head(text), text) { XCTAssertTrue("\($0)".hasPrefix(message), "\($0)") }
        }
        // A probe head writes only its old keys, so earlier runs' manifests still match.
        XCTAssertFalse(try YAMLEncoderText.encode(head("{steps: 10}")).contains("kind"))
    }
}

private enum YAMLEncoderText {
    static func encode(_ head: HeadConfig) throws -> String {
        String(decoding: try JSONEncoder().encode(head), as: UTF8.self)
    }
}

/// Heads from a file (`tasks[].head`): CLIP's zero-shot classifier read as exp(logit_scale) × cosine.
final class ZeroShotHeadFileTests: XCTestCase {
    private func write(_ tensors: [TensorRecord]) throws -> URL {
        let url = try temporaryFolder("zero-shot-head").appendingPathComponent("head.safetensors")
        try Safetensors.write(tensors, to: url)
        return url
    }

    func testLogitsAreTheScaleTimesTheCosineToEachClassEmbedding() throws {
        var random = RandomStream(seed: 3, label: "zero-shot-head")
        let (classes, width, batch) = (3, 5, 4)
        let embeddings = (0..<(classes * width)).map { _ in Float(random.nextGaussian()) }
        let features = (0..<(batch * width)).map { _ in Float(random.nextGaussian()) }
        for (logitScale, scale) in [(Float?.some(log(50)), 50.0), (nil, 100.0)] {
            var tensors = [TensorRecord(name: "weight", shape: [classes, width], values: embeddings)]
            if let logitScale { tensors.append(TensorRecord(name: "logit_scale", shape: [], values: [logitScale])) }
            let head = try ZeroShotHeadFile.load(try write(tensors), classes: classes, featureCount: width, origin: "h")
            XCTAssertTrue(head.normalizesFeatures)
            var logits = [Float](repeating: 0, count: batch * classes)
            features.withUnsafeBufferPointer { f in
                logits.withUnsafeMutableBufferPointer { head.forward(logits: $0.baseAddress!, features: f.baseAddress!, batch: batch) }
            }
            for row in 0..<batch {
                let f = features[(row * width)..<((row + 1) * width)].map(Double.init)
                for c in 0..<classes {
                    let t = embeddings[(c * width)..<((c + 1) * width)].map(Double.init)
                    let cosine = zip(f, t).reduce(0) { $0 + $1.0 * $1.1 }
                        / (f.reduce(0) { $0 + $1 * $1 }.squareRoot() * t.reduce(0) { $0 + $1 * $1 }.squareRoot())
                    XCTAssertEqual(Double(logits[row * classes + c]), scale * cosine, accuracy: 1e-4 * scale)
                }
            }
        }
    }

    /// A head written by scripts/clip_zeroshot_heads.py (open_clip ViT-B-32 with random weights,
    /// the reference safetensors writer: `logit_scale` of shape []) is read as exp(logit_scale) × its rows.
    func testAHeadFromTheOpenCLIPScriptIsRead() throws {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "clip_zeroshot_head.safetensors", withExtension: nil, subdirectory: "Fixtures"))
        let file = try Safetensors.read(url)
        let head = try ZeroShotHeadFile.load(url, classes: 3, featureCount: 512, origin: "fixture")
        let scale = exp(try XCTUnwrap(file["logit_scale"]).values[0])
        XCTAssertEqual(scale, 1 / 0.07, accuracy: 1e-3, "CLIP's initial scale")
        let weight = try XCTUnwrap(file["weight"]).values
        for i in 0..<weight.count { XCTAssertEqual(head.parameters[i], scale * weight[i], accuracy: 1e-5 * scale) }
    }

    func testBadHeadFilesAreOneLineNamingTheFile() throws {
        let good = (0..<8).map { Float($0 + 1) }
        let cases: [([TensorRecord], String)] = [
            ([TensorRecord(name: "weight", shape: [4, 2], values: good)], "'weight' has shape [4, 2], expected [2, 4]"),
            ([TensorRecord(name: "w", shape: [2, 4], values: good)], "unexpected tensor 'w'"),
            ([TensorRecord(name: "logit_scale", shape: [], values: [1])], "no 'weight' tensor"),
            ([TensorRecord(name: "weight", shape: [2, 4], values: [0, 0, 0, 0] + good.prefix(4))], "row 0 of 'weight' is zero"),
            ([TensorRecord(name: "weight", shape: [2, 4], values: [.nan] + good.dropFirst())], "non-finite"),
            ([TensorRecord(name: "weight", shape: [2, 4], values: good), TensorRecord(name: "logit_scale", shape: [], values: [20])],
             "exp of it must be in (0, 10000]"),
            ([TensorRecord(name: "weight", shape: [2, 4], values: good), TensorRecord(name: "logit_scale", shape: [2], values: [1, 2])],
             "expected a scalar"),
        ]
        for (tensors, fragment) in cases {
            XCTAssertThrowsError(try ZeroShotHeadFile.load(try write(tensors), classes: 2, featureCount: 4, origin: "tasks[0].head: h.safetensors")) { error in
                XCTAssertTrue("\(error)".hasPrefix("tasks[0].head: h.safetensors: "), "\(error)")
                XCTAssertTrue("\(error)".contains(fragment), "'\(fragment)' in \(error)")
            }
        }
    }
}
