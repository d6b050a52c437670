// FineTuneModeTests: LoRA's chain rule and dense task vector, the MLP's JVP, and what each mode trains.
import Foundation
import XCTest
@testable import Core

final class FineTuneModeTests: XCTestCase {
    private func gaussian(_ count: Int, _ scale: Double, _ random: inout RandomStream) -> [Float] {
        (0..<count).map { _ in Float(random.nextGaussian() * scale) }
    }

    /// loss(A, B) = Σ c ⊙ (x · (W0 + s·B·A)ᵀ) + λ·R(s·B·A): dA and dB by the adapters' chain rule
    /// (including OrthoReg on the dense ΔW) against central differences in Float64.
    func testLoRAGradientsMatchFiniteDifferences() {
        let out = 5, inputs = 7, rank = 2, rows = 3
        let alpha: Float = 4, lambda: Float = 0.7
        let layout = ParameterLayout([ParameterSpec(name: "w", shape: [out, inputs]), ParameterSpec(name: "b", shape: [out])])
        var random = RandomStream(seed: 21)
        let adapters = LoRAAdapters(layout: layout, targets: [0], rank: rank, alpha: alpha, random: RandomStream(seed: 3))
        // B starts at zero; give it values so both gradients are informative.
        for i in 0..<(out * rank) { adapters.values[adapters.targets[0].b + i] = Float(random.nextGaussian() * 0.5) }
        let x = gaussian(rows * inputs, 1, &random)
        let c = gaussian(rows * out, 1, &random)
        let w0 = gaussian(out * inputs, 0.5, &random)
        let scale = Double(alpha) / Double(rank)

        // Upstream dL/dW of the linear part = cᵀ x.
        let backboneGradient = FloatBuffer(count: layout.totalCount)
        for o in 0..<out {
            for i in 0..<inputs {
                var sum: Float = 0
                for r in 0..<rows { sum += c[r * out + o] * x[r * inputs + i] }
                backboneGradient[o * inputs + i] = sum
            }
        }
        _ = adapters.backpropagate(backboneGradient: backboneGradient,
                                   orthoReg: OrthoRegSettings(lambda: lambda, form: .squared))

        let target = adapters.targets[0]
        let values = adapters.values.array.map(Double.init)
        func loss(_ v: [Double]) -> Double {
            var delta = [Double](repeating: 0, count: out * inputs)
            for o in 0..<out {
                for i in 0..<inputs {
                    var sum = 0.0
                    for k in 0..<rank { sum += v[target.b + o * rank + k] * v[target.a + k * inputs + i] }
                    delta[o * inputs + i] = scale * sum
                }
            }
            var total = 0.0
            for r in 0..<rows {
                for o in 0..<out {
                    var y = 0.0
                    for i in 0..<inputs { y += Double(x[r * inputs + i]) * (Double(w0[o * inputs + i]) + delta[o * inputs + i]) }
                    total += Double(c[r * out + o]) * y
                }
            }
            // Squared OrthoReg of the wide or tall ΔW (here 5×7: wide, G = ΔWΔWᵀ).
            var penalty = 0.0
            for p in 0..<out {
                for q in 0..<out {
                    var g = 0.0
                    for i in 0..<inputs { g += delta[p * inputs + i] * delta[q * inputs + i] }
                    if p == q { g -= 1 }
                    penalty += g * g
                }
            }
            return total + Double(lambda) * penalty
        }
        let numeric = numericGradient(values, loss)
        checkTensor("LoRA dA, dB", adapters.gradient.array, numeric, relative: 1e-3, absolute: 1e-4)
    }

    func testLoRATaskVectorIsTheDenseProductAndZeroElsewhere() {
        let layout = MLPConfiguration(inputCount: 6, hidden: [5, 4], activation: .relu).layout
        let targets = FineTuneMode.lora.loraTargets(layout)
        XCTAssertEqual(targets.map { layout.specs[$0].name }, ["layers.0.weight", "layers.1.weight"])
        let adapters = LoRAAdapters(layout: layout, targets: targets, rank: 2, alpha: 8, random: RandomStream(seed: 5))
        var random = RandomStream(seed: 6)
        for i in 0..<adapters.values.count { adapters.values[i] = Float(random.nextGaussian()) }
        let vector = adapters.taskVector(count: layout.totalCount)
        for (index, spec) in layout.specs.enumerated() {
            let values = Array(vector.array[layout.range(at: index)])
            if targets.contains(index) {
                let target = adapters.targets[targets.firstIndex(of: index)!]
                let (rows, columns) = (spec.shape[0], spec.shape[1])
                var expected = [Double](repeating: 0, count: rows * columns)
                for o in 0..<rows {
                    for i in 0..<columns {
                        var sum = 0.0
                        for k in 0..<2 {
                            sum += Double(adapters.values[target.b + o * 2 + k]) * Double(adapters.values[target.a + k * columns + i])
                        }
                        expected[o * columns + i] = 4 * sum  // scale α/r = 8/2
                    }
                }
                checkTensor("dense \(spec.name)", values, expected, relative: 1e-5, absolute: 1e-6)
            } else {
                XCTAssertEqual(values, [Float](repeating: 0, count: values.count), "\(spec.name) must be exactly zero")
            }
        }
    }

    /// J(x; θ)·t of the MLP against (f(θ + h t) − f(θ − h t)) / 2h, and the JVP's primal = forward.
    func testMLPJacobianVectorProduct() {
        for activation in Activation.allCases {
            let configuration = MLPConfiguration(inputCount: 5, hidden: [6, 4], activation: activation)
            let batch = 3
            let backbone = MLPBackbone(configuration, maxBatch: batch)
            var random = RandomStream(seed: 77, label: activation.rawValue)
            let parameters = FloatBuffer(gaussian(backbone.layout.totalCount, 0.6, &random))
            let tangent = FloatBuffer(gaussian(backbone.layout.totalCount, 1, &random))
            let input = gaussian(batch * 5, 1, &random)
            let featureTangent = FloatBuffer(count: batch * 4)
            let plain = input.withUnsafeBufferPointer {
                Array(UnsafeBufferPointer(start: backbone.forward(parameters: parameters.pointer, inputs: $0.baseAddress!, batch: batch),
                                          count: batch * 4))
            }
            let primal = input.withUnsafeBufferPointer {
                Array(UnsafeBufferPointer(start: backbone.forwardWithTangent(
                    parameters: parameters.pointer, tangent: tangent.pointer, inputs: $0.baseAddress!, batch: batch,
                    featureTangent: featureTangent.pointer), count: batch * 4))
            }
            XCTAssertEqual(primal, plain, "the JVP's primal output equals forward")

            // Finite differences through a Float64 re-implementation.
            func features(_ theta: [Double]) -> [Double] {
                var x = input.map(Double.init)
                var fanIn = 5
                var offset = 0
                for width in configuration.hidden {
                    var y = [Double](repeating: 0, count: batch * width)
                    for b in 0..<batch {
                        for o in 0..<width {
                            var s = theta[offset + width * fanIn + o]
                            for i in 0..<fanIn { s += x[b * fanIn + i] * theta[offset + o * fanIn + i] }
                            y[b * width + o] = activation == .relu ? max(s, 0) : 0.5 * s * (1 + erf(s / 2.0.squareRoot()))
                        }
                    }
                    offset += width * fanIn + width
                    x = y
                    fanIn = width
                }
                return x
            }
            let theta = parameters.array.map(Double.init)
            let direction = tangent.array.map(Double.init)
            let h = 1e-6
            let up = features(zip(theta, direction).map { $0 + h * $1 })
            let down = features(zip(theta, direction).map { $0 - h * $1 })
            let numeric = zip(up, down).map { ($0 - $1) / (2 * h) }
            checkTensor("MLP JVP (\(activation))", featureTangent.array, numeric, relative: 1e-3, absolute: 1e-4)
        }
    }

    func testModesSelectTheirParameters() {
        let mlp = MLPConfiguration(inputCount: 4, hidden: [3], activation: .relu).layout
        XCTAssertEqual(FineTuneMode.full.trainedParameters(mlp), [0, 1])
        XCTAssertEqual(FineTuneMode.linearized.trainedParameters(mlp), [0, 1])
        XCTAssertNil(FineTuneMode.attention.trainedParameters(mlp), "an MLP has no attention")
        XCTAssertEqual(FineTuneMode.full.regularizedParameters(mlp), [0], "OrthoReg: 2-D weights only")
        let transformer = ParameterLayout([
            ParameterSpec(name: "blocks.0.attn.qkv.weight", shape: [6, 2]), ParameterSpec(name: "blocks.0.attn.qkv.bias", shape: [6]),
            ParameterSpec(name: "blocks.0.attn.proj.weight", shape: [2, 2]), ParameterSpec(name: "blocks.0.mlp.fc1.weight", shape: [8, 2]),
        ])
        XCTAssertEqual(FineTuneMode.attention.trainedParameters(transformer), [0, 2])
        XCTAssertEqual(FineTuneMode.attention.regularizedParameters(transformer), [0, 2])
        XCTAssertEqual(FineTuneMode.lora.loraTargets(transformer), [0, 2])
        XCTAssertEqual(FineTuneMode.full.regularizedParameters(transformer), [0, 2, 3])
    }

    /// open_clip's names: attention mode trains in_proj_weight and out_proj.weight (the paper's
    /// code's choice); OrthoReg in full mode acts on every 2-D tensor, proj and positional_embedding too.
    func testModesSelectOpenCLIPsAttentionWeights() {
        let layout = ViTConfiguration(channels: 3, height: 8, width: 8, patch: 4, dim: 4, depth: 1, heads: 2,
                                      flavor: .openCLIP(outputDim: 3)).layout
        func names(_ indices: [Int]?) -> [String] { (indices ?? []).map { layout.specs[$0].name } }
        let attention = ["transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.out_proj.weight"]
        XCTAssertEqual(names(FineTuneMode.attention.trainedParameters(layout)), attention)
        XCTAssertEqual(names(FineTuneMode.lora.loraTargets(layout)), attention)
        XCTAssertEqual(names(FineTuneMode.full.regularizedParameters(layout)),
                       ["positional_embedding", "proj"] + attention
                       + ["transformer.resblocks.0.mlp.c_fc.weight", "transformer.resblocks.0.mlp.c_proj.weight"])
    }
}
