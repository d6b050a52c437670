// CLIPParityTests: `arch: clip_vit` against open_clip's VisionTransformer run in PyTorch (float64) by
// scripts/clip_reference.py: features, loss, every gradient, two AdamW steps and the JVP, for a small
// tower and for ViT-B/32's shapes, whose weights both sides compute from one hash.
import Foundation
import TestSupport
import XCTest
@testable import Core

final class CLIPParityTests: XCTestCase {
    private struct Config: Decodable {
        let height: Int, width: Int, patch: Int, dim: Int, depth: Int, heads: Int, mlp_ratio: Int
        let output_dim: Int
        let activation: String
        let classes: Int
        let batch: Int
        let label_smoothing: Double
        let layer_norm_eps: Double
        let tangent_scale: Double
        /// open_clip's `visual.state_dict()` keys, in order.
        let state_dict_order: [String]
    }

    private func fixture(_ name: String) throws -> (SafetensorsFile, Config) {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: "safetensors"),
                                "fixture \(name) missing")
        let file = try Safetensors.read(url)
        let config = try JSONDecoder().decode(Config.self, from: Data(try XCTUnwrap(file.metadata["config"]).utf8))
        return (file, config)
    }

    private func tensor(_ file: SafetensorsFile, _ name: String) throws -> [Float] {
        try XCTUnwrap(file[name], "fixture tensor \(name) missing").values
    }

    private func tower(_ c: Config) throws -> ViTBackbone {
        let configuration = ViTConfiguration(
            channels: 3, height: c.height, width: c.width, patch: c.patch, dim: c.dim, depth: c.depth, heads: c.heads,
            mlpRatio: c.mlp_ratio, flavor: .openCLIP(outputDim: c.output_dim),
            activation: try XCTUnwrap(TransformerActivation(rawValue: c.activation)))
        XCTAssertEqual(configuration.layerNormEpsilon, Float(c.layer_norm_eps), "open_clip's LayerNorm eps")
        return ViTBackbone(configuration, maxBatch: c.batch)
    }

    // MARK: The values both sides compute

    /// scripts/clip_reference.py's `hashed_uniform`: SplitMix64 of stream·2³² + index, its top 24
    /// bits scaled to [-1, 1) exactly.
    static func hashedUniform(stream: Int, count: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            hashedUniform(stream: stream, into: buffer.baseAddress!, count: count, scale: 1, shift: 0)
            initialized = count
        }
    }

    /// out[i] = u(stream, i)·scale + shift, in float32 as the script computes it (shift 0 or 1).
    static func hashedUniform(stream: Int, into out: UnsafeMutablePointer<Float>, count: Int, scale: Float, shift: Float) {
        let base = UInt64(stream) << 32
        for i in 0..<count {
            var z = (base &+ UInt64(i)) &* 0x9E37_79B9_7F4A_7C15 &+ 0x632B_E59B_D9B4_E019
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            let u = Float(z >> 40) * Float(0x1p-23) - 1
            out[i] = shift == 0 ? u * scale : u * scale + shift
        }
    }

    /// The script's `scale_for`: 1/fan-in variance for the maps (proj's fan-in is its first axis).
    static func scale(_ name: String, _ shape: [Int]) -> Float {
        if name == "class_embedding" { return 1 }
        if name == "positional_embedding" { return 0.5 }
        if name.contains("ln_") || name.hasSuffix("bias") { return 0.3 }
        let fanIn = name == "proj" ? shape[0] : shape.dropFirst().reduce(1, *)
        return Float((3.0 / Double(fanIn)).squareRoot())
    }

    static func hashedTensor(stream: Int, name: String, shape: [Int]) -> [Float] {
        let count = shape.reduce(1, *)
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            hashedTensor(stream: stream, name: name, shape: shape, into: buffer.baseAddress!)
            initialized = count
        }
    }

    /// u·scale; LayerNorm weights 1 + u·scale.
    static func hashedTensor(stream: Int, name: String, shape: [Int], into out: UnsafeMutablePointer<Float>) {
        let isNormWeight = name.contains("ln_") && name.hasSuffix("weight")
        hashedUniform(stream: stream, into: out, count: shape.reduce(1, *), scale: scale(name, shape), shift: isNormWeight ? 1 : 0)
    }

    /// θ, the head, the batch and the JVP's tangent, as the script draws them (streams in layout order).
    private struct HashedInputs {
        let parameters: FloatBuffer
        let head: ClassificationHead
        let input: [Float]
        let labels: [Int32]
        let tangent: FloatBuffer
    }

    private func hashedInputs(_ layout: ParameterLayout, _ c: Config) -> HashedInputs {
        let parameters = FloatBuffer(count: layout.totalCount)
        let tangent = FloatBuffer(count: layout.totalCount)
        let count = layout.specs.count
        for (k, spec) in layout.specs.enumerated() {
            Self.hashedTensor(stream: 1 + k, name: spec.name, shape: spec.shape, into: parameters.pointer + layout.offsets[k])
            Self.hashedUniform(stream: count + 4 + k, into: tangent.pointer + layout.offsets[k], count: spec.count,
                               scale: Float(c.tangent_scale), shift: 0)
        }
        let head = ClassificationHead(classes: c.classes, featureCount: c.output_dim)
        head.parameters.copy(from: Self.hashedTensor(stream: count + 1, name: "head.weight", shape: [c.classes, c.output_dim])
                             + Self.hashedTensor(stream: count + 2, name: "head.bias", shape: [c.classes]))
        let input = Self.hashedUniform(stream: count + 3, count: c.batch * 3 * c.height * c.width)
        let labels = (0..<c.batch).map { Int32($0 % c.classes) }
        return HashedInputs(parameters: parameters, head: head, input: input, labels: labels, tangent: tangent)
    }

    private func jvp(_ backbone: ViTBackbone, _ inputs: HashedInputs, batch: Int) -> [Float] {
        let tangent = FloatBuffer(count: batch * backbone.featureCount)
        inputs.input.withUnsafeBufferPointer {
            _ = backbone.forwardWithTangent(parameters: inputs.parameters.pointer, tangent: inputs.tangent.pointer,
                                            inputs: $0.baseAddress!, batch: batch, featureTangent: tangent.pointer)
        }
        return tangent.array
    }

    /// θ after `steps` AdamW steps (lr 1e-3, decay 0.1, as the script's) on the same batch.
    private func adamW(_ backbone: ViTBackbone, _ inputs: HashedInputs, _ c: Config, steps: Int) -> FloatBuffer {
        let parameters = FloatBuffer(count: inputs.parameters.count)
        parameters.copy(from: inputs.parameters)
        let head = ClassificationHead(classes: c.classes, featureCount: c.output_dim)
        head.parameters.copy(from: inputs.head.parameters)
        let settings = OptimizerSettings.adamw(learningRate: 1e-3, weightDecay: 0.1)
        let optimizer = Optimizer(settings: settings, parameterCount: parameters.count)
        let headOptimizer = Optimizer(settings: settings, parameterCount: head.parameters.count)
        for _ in 0..<steps {
            let pass = lossAndGradients(backbone, parameters: parameters, head: head, inputs, c)
            optimizer.step(parameters: parameters.pointer, gradient: pass.gradient.pointer, rate: 1e-3, ranges: [0..<parameters.count])
            headOptimizer.step(parameters: head.parameters.pointer, gradient: pass.headGradient.pointer, rate: 1e-3,
                               ranges: [0..<head.parameters.count])
        }
        return parameters
    }

    /// The backbone + head + cross-entropy pass on the hashed batch.
    private func lossAndGradients(_ backbone: ViTBackbone, parameters: FloatBuffer, head: ClassificationHead,
                                  _ inputs: HashedInputs, _ c: Config) -> TorchParityTests.Pass {
        TorchParityTests.lossAndGradients(backbone: backbone, parameters: parameters, head: head, input: inputs.input,
                                          labels: inputs.labels, labelSmoothing: Float(c.label_smoothing))
    }

    /// Largest relative errors (max |diff| / max |expected|), each asserted against its limit and
    /// collected for the printed summary.
    private struct ErrorReport {
        let model: String
        private(set) var lines: [String] = []

        init(_ model: String) { self.model = model }

        mutating func check(_ quantity: String, _ actual: [Float], _ expected: [Float], limit: Double = 1e-5,
                            file: StaticString = #filePath, line: UInt = #line) {
            add(quantity, maxRelativeError(actual, expected), limit: limit, file: file, line: line)
        }

        mutating func add(_ quantity: String, _ error: Double, limit: Double,
                          file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertLessThanOrEqual(error, limit, "\(model) \(quantity)", file: file, line: line)
            lines.append(String(format: "%@ %.1e", quantity, error))
        }

        var summary: String { "parity \(model) (open_clip): max relative error " + lines.joined(separator: ", ") }
    }

    // MARK: The tests

    /// open_clip's state_dict names, shapes and order are the layout's; the hashed values are the
    /// fixture's to the bit; and every quantity matches open_clip's tower.
    func testSmallTowerMatchesOpenCLIP() throws {
        let (file, c) = try fixture("parity_clip_vit")
        let backbone = try tower(c)
        let layout = backbone.layout
        XCTAssertEqual(c.state_dict_order, layout.specs.map(\.name), "open_clip's state_dict order")
        for spec in layout.specs {
            XCTAssertEqual(file["param.\(spec.name)"]?.shape, spec.shape, spec.name)
        }
        let inputs = hashedInputs(layout, c)
        for (k, spec) in layout.specs.enumerated() {
            XCTAssertEqual(Array(inputs.parameters.array[layout.range(at: k)]).map(\.bitPattern),
                           try tensor(file, "param.\(spec.name)").map(\.bitPattern), "hashed \(spec.name)")
            XCTAssertEqual(Array(inputs.tangent.array[layout.range(at: k)]).map(\.bitPattern),
                           try tensor(file, "tangent.\(spec.name)").map(\.bitPattern), "hashed tangent \(spec.name)")
        }
        XCTAssertEqual(inputs.input.map(\.bitPattern), try tensor(file, "input").map(\.bitPattern))
        XCTAssertEqual(inputs.head.parameters.array.map(\.bitPattern),
                       (try tensor(file, "param.head.weight") + tensor(file, "param.head.bias")).map(\.bitPattern))

        let pass = lossAndGradients(backbone, parameters: inputs.parameters, head: inputs.head, inputs, c)
        var report = ErrorReport("clip_vit")
        report.check("features", pass.features, try tensor(file, "features"))
        report.check("logits", pass.logits, try tensor(file, "logits"))
        report.check("loss", [Float(pass.loss)], try tensor(file, "loss"))
        report.check("input_grad", pass.inputGradient.array, try tensor(file, "input_grad"))
        var worst = 0.0
        for (k, spec) in layout.specs.enumerated() {
            let actual = Array(pass.gradient.array[layout.range(at: k)])
            let error = maxRelativeError(actual, try tensor(file, "grad.\(spec.name)"))
            XCTAssertLessThanOrEqual(error, 1e-5, "clip_vit grad.\(spec.name)")
            worst = max(worst, error)
        }
        report.add("gradients (worst tensor)", worst, limit: 1e-5)
        report.check("jvp", jvp(backbone, inputs, batch: c.batch), try tensor(file, "jvp"))
        for (prefix, steps) in [("adamw", 1), ("adamw2", 2)] {
            let stepped = adamW(backbone, inputs, c, steps: steps)
            var worstStep = 0.0
            for (k, spec) in layout.specs.enumerated() {
                var actual = Array(stepped.array[layout.range(at: k)])
                var expected = try tensor(file, "\(prefix).\(spec.name)")
                if spec.name.hasSuffix("in_proj_bias") {
                    // The key bias has an exactly-zero gradient (softmax ignores a shift shared by a
                    // row's scores): float32 leaves ~1e-9 of it, which Adam's g/(√v + ε) turns into
                    // a step; only the query and value thirds carry information.
                    let width = c.dim
                    actual.removeSubrange(width..<(2 * width))
                    expected.removeSubrange(width..<(2 * width))
                }
                worstStep = max(worstStep, maxRelativeError(actual, expected))
            }
            report.add("θ after \(steps) AdamW steps", worstStep, limit: 1e-5)
        }
        print(report.summary)
    }

    /// ViT-B/32's shapes (224², patch 32, width 768, depth 12, 12 heads, output 512, QuickGELU): the
    /// features, loss and JVP in full; every gradient's norm and, at hashed positions, its entries
    /// and the change two AdamW steps make.
    func testViTB32ShapesMatchOpenCLIP() throws {
        let (file, c) = try fixture("parity_clip_vit_b32")
        let backbone = try tower(c)
        let layout = backbone.layout
        XCTAssertEqual(c.state_dict_order, layout.specs.map(\.name), "open_clip's state_dict order")
        XCTAssertEqual(layout.totalCount, 87_849_216, "ViT-B/32's image tower")
        let inputs = hashedInputs(layout, c)
        XCTAssertEqual(inputs.labels.map(Float.init), try tensor(file, "labels"))
        let pass = lossAndGradients(backbone, parameters: inputs.parameters, head: inputs.head, inputs, c)
        var report = ErrorReport("clip_vit ViT-B/32 shapes")
        report.check("features", pass.features, try tensor(file, "features"))
        report.check("logits", pass.logits, try tensor(file, "logits"))
        report.check("loss", [Float(pass.loss)], try tensor(file, "loss"))
        report.check("grad.head.weight", Array(pass.headGradient.array.prefix(c.classes * c.output_dim)),
                     try tensor(file, "grad.head.weight"))
        report.check("jvp", jvp(backbone, inputs, batch: c.batch), try tensor(file, "jvp"))

        let stepped = adamW(backbone, inputs, c, steps: 2)
        var worstNorm = 0.0, worstEntry = 0.0, worstStep = 0.0
        for (k, spec) in layout.specs.enumerated() {
            let range = layout.range(at: k)
            let gradient = pass.gradient.pointer + range.lowerBound
            let norm = ElementWise.sumOfSquares(gradient, count: spec.count).squareRoot()
            let expectedNorm = Double(try tensor(file, "gradnorm.\(spec.name)")[0])
            worstNorm = max(worstNorm, abs(norm - expectedNorm) / expectedNorm)
            let picks = try tensor(file, "index.\(spec.name)").map { Int($0) }
            // Entries relative to the tensor's gradient scale (its RMS), since a sample may hold zeros.
            let rms = expectedNorm / Double(spec.count).squareRoot()
            let expected = try tensor(file, "grad.\(spec.name)")
            for (pick, value) in zip(picks, expected) {
                worstEntry = max(worstEntry, abs(Double(gradient[pick]) - Double(value)) / rms)
            }
            let delta = try tensor(file, "adamw2_delta.\(spec.name)")
            for (pick, value) in zip(picks, delta) {
                if spec.name.hasSuffix("in_proj_bias"), (c.dim..<(2 * c.dim)).contains(pick) { continue }  // see above
                let step = Double(stepped[range.lowerBound + pick]) - Double(inputs.parameters[range.lowerBound + pick])
                worstStep = max(worstStep, abs(step - Double(value)) / 2e-3)  // relative to two steps of lr
            }
        }
        report.add("gradient norms", worstNorm, limit: 1e-5)
        report.add("sampled gradients (of the tensor's gradient RMS)", worstEntry, limit: 1e-4)
        report.add("two AdamW steps at the sampled entries (of 2·lr)", worstStep, limit: 1e-2)
        print(report.summary)
    }

    /// A whole CLIP state dict (visual.* beside the text tower, whose names overlap the image
    /// tower's) loads its image tower; a missing tower tensor is named with its prefix.
    func testWholeCLIPStateDictLoadsItsImageTower() throws {
        let layout = ViTConfiguration(channels: 3, height: 8, width: 8, patch: 4, dim: 4, depth: 1, heads: 2,
                                      flavor: .openCLIP(outputDim: 3)).layout
        let tower = layout.specs.enumerated().map { k, spec in
            TensorRecord(name: "visual." + spec.name, shape: spec.shape, values: Self.hashedTensor(stream: 1 + k, name: spec.name, shape: spec.shape))
        }
        let text = [TensorRecord(name: "positional_embedding", shape: [77, 8], values: [Float](repeating: 1, count: 77 * 8)),
                    TensorRecord(name: "transformer.resblocks.0.ln_1.weight", shape: [8], values: [Float](repeating: 1, count: 8)),
                    TensorRecord(name: "logit_scale", shape: [], values: [4.6])]
        let loaded = FloatBuffer(count: layout.totalCount)
        try layout.loadBackbone(SafetensorsFile(tensors: text + tower), into: loaded, origin: "clip.safetensors")
        XCTAssertEqual(loaded.array, tower.flatMap(\.values))
        assertFails("clip.safetensors", ["tensor 'visual.ln_post.bias' missing (expected shape [4])"]) {
            try layout.loadBackbone(SafetensorsFile(tensors: text + tower.dropLast()), into: loaded, origin: "clip.safetensors")
        }
        let stray = TensorRecord(name: "visual.attnpool.weight", shape: [1], values: [0])
        assertFails("clip.safetensors", ["unexpected tensor 'visual.attnpool.weight'"]) {
            try layout.loadBackbone(SafetensorsFile(tensors: text + tower + [stray]), into: loaded, origin: "clip.safetensors")
        }
    }
}
