// ViTGradientTests: the ViT layers and backbone against central finite differences of an independent Float64 reference, plus its timm layout.
import Foundation
import XCTest
@testable import Core

/// Float64 re-implementations of the ViT forward pass, written as plain loops from the formulas
/// (direct convolution, per-element attention sums), sharing no code with the kernels.
private enum ViTReference {
    static func layerNorm(_ x: [Double], weight: [Double], bias: [Double], rows: Int, width: Int, epsilon: Double) -> [Double] {
        var y = [Double](repeating: 0, count: rows * width)
        for r in 0..<rows {
            var mean = 0.0
            for i in 0..<width { mean += x[r * width + i] }
            mean /= Double(width)
            var variance = 0.0
            for i in 0..<width { variance += (x[r * width + i] - mean) * (x[r * width + i] - mean) }
            variance /= Double(width)
            for i in 0..<width {
                y[r * width + i] = (x[r * width + i] - mean) / (variance + epsilon).squareRoot() * weight[i] + bias[i]
            }
        }
        return y
    }

    /// qkv [B, T, 3, NH, hd] → softmax(q·k/√hd)·v per head, heads concatenated [B, T, NH·hd].
    static func attention(_ qkv: [Double], batch: Int, tokens: Int, heads: Int, headDim: Int) -> [Double] {
        let width = heads * headDim
        let scale = 1 / Double(headDim).squareRoot()
        var out = [Double](repeating: 0, count: batch * tokens * width)
        var weights = [Double](repeating: 0, count: tokens)
        for b in 0..<batch {
            for h in 0..<heads {
                // Element (token t, part 0/1/2 = q/k/v, dimension d) of this head.
                let base = b * tokens * 3 * width + h * headDim
                for i in 0..<tokens {
                    var largest = -Double.infinity
                    for j in 0..<tokens {
                        var s = 0.0
                        for d in 0..<headDim { s += qkv[base + i * 3 * width + d] * qkv[base + j * 3 * width + width + d] }
                        weights[j] = s * scale
                        largest = max(largest, weights[j])
                    }
                    var total = 0.0
                    for j in 0..<tokens {
                        weights[j] = exp(weights[j] - largest)
                        total += weights[j]
                    }
                    for d in 0..<headDim {
                        var s = 0.0
                        for j in 0..<tokens { s += weights[j] / total * qkv[base + j * 3 * width + 2 * width + d] }
                        out[(b * tokens + i) * width + h * headDim + d] = s
                    }
                }
            }
        }
        return out
    }

    /// Conv2d(C, O, kernel P, stride P) on images [B, C, H, W] with weight [O, C, P, P], output
    /// flattened to [B, (H/P)·(W/P), O] in row-major patch order.
    static func patchEmbedding(_ images: [Double], weight: [Double], bias: [Double], batch: Int, channels: Int,
                               height: Int, width: Int, patch: Int, outputs: Int) -> [Double] {
        let across = width / patch, down = height / patch
        var out = [Double](repeating: 0, count: batch * down * across * outputs)
        for b in 0..<batch {
            for py in 0..<down {
                for px in 0..<across {
                    for o in 0..<outputs {
                        var s = bias[o]
                        for c in 0..<channels {
                            for ky in 0..<patch {
                                for kx in 0..<patch {
                                    let pixel = images[((b * channels + c) * height + py * patch + ky) * width + px * patch + kx]
                                    s += weight[((o * channels + c) * patch + ky) * patch + kx] * pixel
                                }
                            }
                        }
                        out[((b * down + py) * across + px) * outputs + o] = s
                    }
                }
            }
        }
        return out
    }

    static func linear(_ x: [Double], weight: [Double], bias: [Double], rows: Int, inputs: Int, outputs: Int) -> [Double] {
        var y = [Double](repeating: 0, count: rows * outputs)
        for r in 0..<rows {
            for o in 0..<outputs {
                var s = bias[o]
                for i in 0..<inputs { s += x[r * inputs + i] * weight[o * inputs + i] }
                y[r * outputs + o] = s
            }
        }
        return y
    }

    static func gelu(_ x: Double) -> Double { 0.5 * x * (1 + erf(x / 2.0.squareRoot())) }

    /// timm's VisionTransformer forward_features + token pooling: features [B, D].
    static func features(parameters: [Double], input: [Double], configuration c: ViTConfiguration, batch: Int) -> [Double] {
        let layout = c.layout
        func tensor(_ name: String) -> [Double] { Array(parameters[layout.range(of: name)!]) }
        let tokens = c.tokenCount, width = c.dim, rows = batch * tokens
        let patchOut = patchEmbedding(input, weight: tensor("patch_embed.proj.weight"), bias: tensor("patch_embed.proj.bias"),
                                      batch: batch, channels: c.channels, height: c.height, width: c.width,
                                      patch: c.patch, outputs: width)
        let classToken = tensor("cls_token"), positions = tensor("pos_embed")
        var x = [Double](repeating: 0, count: rows * width)
        for b in 0..<batch {
            for t in 0..<tokens {
                for d in 0..<width {
                    let embedded = t == 0 ? classToken[d] : patchOut[(b * c.patchCount + t - 1) * width + d]
                    x[(b * tokens + t) * width + d] = embedded + positions[t * width + d]
                }
            }
        }
        let epsilon = Double(c.layerNormEpsilon)
        for l in 0..<c.depth {
            let block = "blocks.\(l)"
            let h1 = layerNorm(x, weight: tensor("\(block).norm1.weight"), bias: tensor("\(block).norm1.bias"),
                               rows: rows, width: width, epsilon: epsilon)
            let qkv = linear(h1, weight: tensor("\(block).attn.qkv.weight"), bias: tensor("\(block).attn.qkv.bias"),
                             rows: rows, inputs: width, outputs: 3 * width)
            let heads = attention(qkv, batch: batch, tokens: tokens, heads: c.heads, headDim: c.headDim)
            let projected = linear(heads, weight: tensor("\(block).attn.proj.weight"), bias: tensor("\(block).attn.proj.bias"),
                                   rows: rows, inputs: width, outputs: width)
            for i in x.indices { x[i] += projected[i] }
            let h2 = layerNorm(x, weight: tensor("\(block).norm2.weight"), bias: tensor("\(block).norm2.bias"),
                               rows: rows, width: width, epsilon: epsilon)
            var hidden = linear(h2, weight: tensor("\(block).mlp.fc1.weight"), bias: tensor("\(block).mlp.fc1.bias"),
                                rows: rows, inputs: width, outputs: c.hiddenWidth)
            for i in hidden.indices { hidden[i] = gelu(hidden[i]) }
            let mlp = linear(hidden, weight: tensor("\(block).mlp.fc2.weight"), bias: tensor("\(block).mlp.fc2.bias"),
                             rows: rows, inputs: c.hiddenWidth, outputs: width)
            for i in x.indices { x[i] += mlp[i] }
        }
        var classRows = [Double]()
        for b in 0..<batch { classRows += x[(b * tokens * width)..<(b * tokens * width + width)] }
        return layerNorm(classRows, weight: tensor("norm.weight"), bias: tensor("norm.bias"),
                         rows: batch, width: width, epsilon: epsilon)
    }

    /// (f(x + h·t) − f(x − h·t)) / 2h, element-wise over f's outputs: the directional derivative.
    static func numericTangent(_ x: [Double], direction t: [Double], h: Double = 1e-6, _ f: ([Double]) -> [Double]) -> [Double] {
        let up = f(zip(x, t).map { $0 + h * $1 })
        let down = f(zip(x, t).map { $0 - h * $1 })
        return zip(up, down).map { ($0 - $1) / (2 * h) }
    }

    static func weightedSum(_ values: [Double], _ weights: [Float]) -> Double {
        zip(values, weights).reduce(0) { $0 + $1.0 * Double($1.1) }
    }
}

private func gaussians(_ count: Int, scale: Double, random: inout RandomStream) -> [Float] {
    (0..<count).map { _ in Float(random.nextGaussian() * scale) }
}

/// A finite-difference check only means something if the expected values clear its tolerance:
/// a gradient that is (near) zero everywhere would accept any sign or scale error.
private func assertSignificant(_ name: String, _ expected: [Double], absolute: Double,
                               file: StaticString = #filePath, line: UInt = #line) {
    let largest = expected.map(abs).max() ?? 0
    XCTAssertGreaterThan(largest, 100 * absolute, "\(name): reference values too small for the check to discriminate",
                         file: file, line: line)
}

final class ViTGradientTests: XCTestCase {
    /// The tiny model of every whole-network check: N = 4 patches, T = 5 tokens, hd = 4, F = 32.
    private let tiny = ViTConfiguration(channels: 1, height: 8, width: 8, patch: 4, dim: 8, depth: 2, heads: 2)

    func testLayoutHasTimmNamesShapesAndOrder() {
        let expected: [(String, [Int])] = [
            ("cls_token", [1, 1, 8]),
            ("pos_embed", [1, 5, 8]),
            ("patch_embed.proj.weight", [8, 1, 4, 4]),
            ("patch_embed.proj.bias", [8]),
            ("blocks.0.norm1.weight", [8]),
            ("blocks.0.norm1.bias", [8]),
            ("blocks.0.attn.qkv.weight", [24, 8]),
            ("blocks.0.attn.qkv.bias", [24]),
            ("blocks.0.attn.proj.weight", [8, 8]),
            ("blocks.0.attn.proj.bias", [8]),
            ("blocks.0.norm2.weight", [8]),
            ("blocks.0.norm2.bias", [8]),
            ("blocks.0.mlp.fc1.weight", [32, 8]),
            ("blocks.0.mlp.fc1.bias", [32]),
            ("blocks.0.mlp.fc2.weight", [8, 32]),
            ("blocks.0.mlp.fc2.bias", [8]),
            ("blocks.1.norm1.weight", [8]),
            ("blocks.1.norm1.bias", [8]),
            ("blocks.1.attn.qkv.weight", [24, 8]),
            ("blocks.1.attn.qkv.bias", [24]),
            ("blocks.1.attn.proj.weight", [8, 8]),
            ("blocks.1.attn.proj.bias", [8]),
            ("blocks.1.norm2.weight", [8]),
            ("blocks.1.norm2.bias", [8]),
            ("blocks.1.mlp.fc1.weight", [32, 8]),
            ("blocks.1.mlp.fc1.bias", [32]),
            ("blocks.1.mlp.fc2.weight", [8, 32]),
            ("blocks.1.mlp.fc2.bias", [8]),
            ("norm.weight", [8]),
            ("norm.bias", [8]),
        ]
        let layout = tiny.layout
        XCTAssertEqual(layout.specs.map(\.name), expected.map(\.0))
        XCTAssertEqual(layout.specs.map(\.shape), expected.map(\.1))
        XCTAssertEqual(layout.totalCount, expected.reduce(0) { $0 + $1.1.reduce(1, *) })
        let backbone = ViTBackbone(tiny, maxBatch: 1)
        XCTAssertEqual(backbone.inputCount, 64)
        XCTAssertEqual(backbone.featureCount, 8)
        XCTAssertEqual(backbone.layout, layout)
        // Attention-only fine-tuning and OrthoReg find the projections by these names.
        XCTAssertEqual(FineTuneMode.attentionWeights(layout).map { layout.specs[$0].name },
                       ["blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
                        "blocks.1.attn.qkv.weight", "blocks.1.attn.proj.weight"])
    }

    func testLayerNormMatchesReferenceGradientsAndTangent() {
        // width 21: one SIMD pass plus a tail; the third row's variance (~1e-6) is the size of ε,
        // so ε outside the square root or an unbiased variance would show in the forward values.
        let rows = 3, width = 21, epsilon: Float = 1e-6
        var random = RandomStream(seed: 21, label: "layernorm")
        var x = gaussians(rows * width, scale: 1, random: &random)
        for i in 0..<width {
            x[i] += 4
            x[2 * width + i] *= 1e-3
        }
        let w = gaussians(width, scale: 0.5, random: &random).map { $0 + 1 }
        let b = gaussians(width, scale: 0.5, random: &random)
        let c = gaussians(rows * width, scale: 1, random: &random)
        let e = Double(epsilon)
        let xd = x.map(Double.init), wd = w.map(Double.init), bd = b.map(Double.init)

        var out = [Float](repeating: 0, count: rows * width)
        var mean = [Float](repeating: 0, count: rows)
        var rstd = [Float](repeating: 0, count: rows)
        LayerNorm.forward(out: &out, mean: &mean, rstd: &rstd, inp: x, weight: w, bias: b,
                          rows: rows, width: width, epsilon: epsilon)
        checkTensor("LayerNorm forward", out,
                    ViTReference.layerNorm(xd, weight: wd, bias: bd, rows: rows, width: width, epsilon: e),
                    relative: 1e-4, absolute: 1e-4)

        // Backward adds: start every gradient away from zero.
        var dx = [Float](repeating: 0.5, count: rows * width)
        var dw = [Float](repeating: -0.25, count: width)
        var db = [Float](repeating: 0.75, count: width)
        LayerNorm.backward(dinp: &dx, dweight: &dw, dbias: &db, dout: c, inp: x, weight: w,
                           mean: mean, rstd: rstd, rows: rows, width: width)
        func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {
            ViTReference.weightedSum(ViTReference.layerNorm(x, weight: w, bias: b, rows: rows, width: width, epsilon: e), c)
        }
        let numericX = numericGradient(xd) { loss($0, wd, bd) }
        let numericW = numericGradient(wd) { loss(xd, $0, bd) }
        let numericB = numericGradient(bd) { loss(xd, wd, $0) }
        assertSignificant("LayerNorm dx", numericX, absolute: 1e-4)
        assertSignificant("LayerNorm dweight", numericW, absolute: 1e-4)
        checkTensor("LayerNorm dx", dx, numericX.map { $0 + 0.5 }, relative: 1e-3, absolute: 1e-3)
        checkTensor("LayerNorm dweight", dw, numericW.map { $0 - 0.25 }, relative: 1e-3, absolute: 1e-4)
        checkTensor("LayerNorm dbias", db, numericB.map { $0 + 0.75 }, relative: 1e-3, absolute: 1e-4)

        let xt = gaussians(rows * width, scale: 1, random: &random)
        let wt = gaussians(width, scale: 1, random: &random)
        let bt = gaussians(width, scale: 1, random: &random)
        var tangent = [Float](repeating: .nan, count: rows * width)
        LayerNorm.forwardTangent(outTangent: &tangent, inp: x, inpTangent: xt, weight: w, weightTangent: wt,
                                 biasTangent: bt, mean: mean, rstd: rstd, rows: rows, width: width)
        let all = xd + wd + bd
        let numericTangent = ViTReference.numericTangent(all, direction: (xt + wt + bt).map(Double.init)) { v in
            ViTReference.layerNorm(Array(v[0..<(rows * width)]), weight: Array(v[(rows * width)..<(rows * width + width)]),
                                   bias: Array(v[(rows * width + width)...]), rows: rows, width: width, epsilon: e)
        }
        assertSignificant("LayerNorm tangent", numericTangent, absolute: 1e-3)
        checkTensor("LayerNorm tangent", tangent, numericTangent, relative: 1e-3, absolute: 1e-3)
    }

    func testAttentionMatchesReferenceGradientsAndTangent() {
        let batch = 2, tokens = 3, heads = 2, headDim = 3
        let width = heads * headDim
        var random = RandomStream(seed: 5, label: "attention")
        let qkv = gaussians(batch * tokens * 3 * width, scale: 1, random: &random)
        let c = gaussians(batch * tokens * width, scale: 1, random: &random)
        let qd = qkv.map(Double.init)

        var out = [Float](repeating: 0, count: batch * tokens * width)
        var probabilities = [Float](repeating: 0, count: batch * heads * tokens * tokens)
        Attention.forward(out: &out, probabilities: &probabilities, qkv: qkv,
                          batch: batch, tokens: tokens, heads: heads, headDim: headDim)
        checkTensor("attention forward", out,
                    ViTReference.attention(qd, batch: batch, tokens: tokens, heads: heads, headDim: headDim),
                    relative: 1e-4, absolute: 1e-5)

        // Every entry is written (Q = T here), so nothing of what was there survives.
        var dqkv = [Float](repeating: .nan, count: qkv.count)
        var scratch = [Float](repeating: .nan, count: tokens * tokens)
        Attention.backward(dqkv: &dqkv, dscores: &scratch, dout: c, probabilities: probabilities, qkv: qkv,
                           batch: batch, tokens: tokens, heads: heads, headDim: headDim)
        let numeric = numericGradient(qd) {
            ViTReference.weightedSum(ViTReference.attention($0, batch: batch, tokens: tokens, heads: heads, headDim: headDim), c)
        }
        // Each of q, k and v must receive a real gradient for the check to cover all three.
        for (part, name) in ["q", "k", "v"].enumerated() {
            let slice = numeric.indices.filter { ($0 % (3 * width)) / width == part }.map { numeric[$0] }
            assertSignificant("attention d\(name)", slice, absolute: 1e-4)
        }
        checkTensor("attention dqkv", dqkv, numeric, relative: 1e-3, absolute: 1e-4)

        let direction = gaussians(qkv.count, scale: 1, random: &random)
        var tangent = [Float](repeating: .nan, count: out.count)
        Attention.forwardTangent(outTangent: &tangent, scoreTangent: &scratch, qkv: qkv, qkvTangent: direction,
                                 probabilities: probabilities, batch: batch, tokens: tokens, heads: heads, headDim: headDim)
        let numericTangent = ViTReference.numericTangent(qd, direction: direction.map(Double.init)) {
            ViTReference.attention($0, batch: batch, tokens: tokens, heads: heads, headDim: headDim)
        }
        assertSignificant("attention tangent", numericTangent, absolute: 1e-4)
        checkTensor("attention tangent", tangent, numericTangent, relative: 1e-3, absolute: 1e-4)
    }

    func testPatchEmbeddingMatchesConvolutionAndGradients() {
        // A non-square image with two channels: swapped height/width or channel/row strides fail.
        let batch = 2, channels = 2, height = 4, width = 6, patch = 2, outputs = 3
        let rows = batch * (height / patch) * (width / patch), features = channels * patch * patch
        var random = RandomStream(seed: 9, label: "patch-embedding")
        let images = gaussians(batch * channels * height * width, scale: 1, random: &random)
        let weight = gaussians(outputs * features, scale: 0.5, random: &random)
        let bias = gaussians(outputs, scale: 0.5, random: &random)
        let c = gaussians(rows * outputs, scale: 1, random: &random)
        let imagesD = images.map(Double.init), weightD = weight.map(Double.init), biasD = bias.map(Double.init)
        func convolution(_ images: [Double], _ weight: [Double], _ bias: [Double]) -> [Double] {
            ViTReference.patchEmbedding(images, weight: weight, bias: bias, batch: batch, channels: channels,
                                        height: height, width: width, patch: patch, outputs: outputs)
        }

        var out = [Float](repeating: 0, count: rows * outputs)
        var patches = [Float](repeating: 0, count: rows * features)
        PatchEmbedding.forward(out: &out, patches: &patches, images: images, weight: weight, bias: bias, batch: batch,
                               channels: channels, height: height, width: width, patch: patch, outputs: outputs)
        checkTensor("patch embedding forward", out, convolution(imagesD, weightD, biasD), relative: 1e-5, absolute: 1e-5)

        var dimages = [Float](repeating: 0.5, count: images.count)
        var dpatches = [Float](repeating: .nan, count: patches.count)
        var dweight = [Float](repeating: 0, count: weight.count)
        var dbias = [Float](repeating: 0, count: outputs)
        PatchEmbedding.backward(dimages: &dimages, dpatches: &dpatches, dweight: &dweight, dbias: &dbias, dout: c,
                                patches: patches, weight: weight, batch: batch, channels: channels,
                                height: height, width: width, patch: patch, outputs: outputs)
        let numericImages = numericGradient(imagesD) { ViTReference.weightedSum(convolution($0, weightD, biasD), c) }
        let numericWeight = numericGradient(weightD) { ViTReference.weightedSum(convolution(imagesD, $0, biasD), c) }
        let numericBias = numericGradient(biasD) { ViTReference.weightedSum(convolution(imagesD, weightD, $0), c) }
        assertSignificant("patch embedding dimages", numericImages, absolute: 1e-4)
        checkTensor("patch embedding dimages", dimages, numericImages.map { $0 + 0.5 }, relative: 1e-4, absolute: 1e-4)
        checkTensor("patch embedding dweight", dweight, numericWeight, relative: 1e-4, absolute: 1e-4)
        checkTensor("patch embedding dbias", dbias, numericBias, relative: 1e-4, absolute: 1e-4)

        let weightTangent = gaussians(weight.count, scale: 1, random: &random)
        let biasTangent = gaussians(outputs, scale: 1, random: &random)
        var tangent = [Float](repeating: .nan, count: out.count)
        PatchEmbedding.forwardTangent(outTangent: &tangent, patches: patches, weightTangent: weightTangent,
                                      biasTangent: biasTangent, batch: batch, channels: channels,
                                      height: height, width: width, patch: patch, outputs: outputs)
        let numericTangent = ViTReference.numericTangent(weightD + biasD, direction: (weightTangent + biasTangent).map(Double.init)) {
            convolution(imagesD, Array($0[0..<weight.count]), Array($0[weight.count...]))
        }
        checkTensor("patch embedding tangent", tangent, numericTangent, relative: 1e-4, absolute: 1e-4)
    }

    /// Parameters away from the initialisation (so every path carries signal), an input batch,
    /// and a backbone whose workspace is larger than the batch.
    private func tinySetup(seed: UInt64) -> (ViTBackbone, FloatBuffer, [Float], batch: Int) {
        var random = RandomStream(seed: seed, label: "vit")
        let backbone = ViTBackbone(tiny, maxBatch: 3)
        let layout = backbone.layout
        let parameters = FloatBuffer(count: layout.totalCount)
        for (i, spec) in layout.specs.enumerated() {
            let isNormWeight = spec.name.hasSuffix("norm1.weight") || spec.name.hasSuffix("norm2.weight")
                || spec.name == "norm.weight"
            let values = gaussians(spec.count, scale: spec.shape.count == 1 ? 0.2 : 0.4, random: &random)
            for (j, value) in zip(layout.range(at: i), values) {
                parameters[j] = isNormWeight ? 1 + value : value
            }
        }
        let batch = 2
        let input = gaussians(batch * backbone.inputCount, scale: 1, random: &random)
        return (backbone, parameters, input, batch)
    }

    func testViTGradientsMatchFiniteDifferences() {
        let (backbone, parameters, input, batch) = tinySetup(seed: 1)
        let layout = backbone.layout
        var random = RandomStream(seed: 2, label: "vit-loss")
        let c = gaussians(batch * backbone.featureCount, scale: 1, random: &random)

        // Backward adds: start from non-zero gradients and subtract them afterwards.
        let parameterGradient = FloatBuffer([Float](repeating: 0.25, count: layout.totalCount))
        var inputGradient = [Float](repeating: -0.5, count: input.count)
        _ = backbone.forward(parameters: parameters.pointer, inputs: input, batch: batch)
        backbone.backward(featureGradient: c, parameters: parameters.pointer, inputs: input, batch: batch,
                          parameterGradient: parameterGradient.pointer, inputGradient: &inputGradient)

        let p = parameters.array.map(Double.init)
        let x = input.map(Double.init)
        let numericParameters = numericGradient(p) {
            ViTReference.weightedSum(ViTReference.features(parameters: $0, input: x, configuration: self.tiny, batch: batch), c)
        }
        let numericInput = numericGradient(x) {
            ViTReference.weightedSum(ViTReference.features(parameters: p, input: $0, configuration: self.tiny, batch: batch), c)
        }
        let analytic = parameterGradient.array.map { $0 - 0.25 }
        var worst = 0.0
        for (i, spec) in layout.specs.enumerated() {
            let range = layout.range(at: i)
            let expected = Array(numericParameters[range])
            let scale = expected.map(abs).max()!
            assertSignificant(spec.name, expected, absolute: 1e-6)
            // Relative to each element, with an absolute floor at 1e-4 of the tensor's largest entry.
            checkTensor("gradient of \(spec.name)", Array(analytic[range]), expected, relative: 1e-3, absolute: 1e-4 * scale)
            for j in range { worst = max(worst, abs(Double(analytic[j]) - numericParameters[j]) / scale) }
        }
        let inputScale = numericInput.map(abs).max()!
        assertSignificant("input gradient", numericInput, absolute: 1e-6)
        checkTensor("input gradient", inputGradient.map { $0 + 0.5 }, numericInput, relative: 1e-3, absolute: 1e-4 * inputScale)
        print("ViT gradient: worst |analytic − numeric| / max|numeric| over tensors \(worst)")
    }

    func testViTTangentMatchesFiniteDifferencesAndKeepsForwardState() {
        let (backbone, parameters, input, batch) = tinySetup(seed: 3)
        let layout = backbone.layout
        var random = RandomStream(seed: 4, label: "vit-direction")
        let direction = gaussians(layout.totalCount, scale: 1, random: &random)
        let featureGradient = gaussians(batch * backbone.featureCount, scale: 1, random: &random)
        let count = batch * backbone.featureCount

        // Plain forward + backward, for comparison.
        let primal = Array(UnsafeBufferPointer(
            start: backbone.forward(parameters: parameters.pointer, inputs: input, batch: batch), count: count))
        let plainGradient = FloatBuffer(count: layout.totalCount)
        var plainInputGradient = [Float](repeating: 0, count: input.count)
        backbone.backward(featureGradient: featureGradient, parameters: parameters.pointer, inputs: input, batch: batch,
                          parameterGradient: plainGradient.pointer, inputGradient: &plainInputGradient)

        // An unrelated batch first, so stale saved activations would be caught.
        let other = gaussians(input.count, scale: 2, random: &random)
        _ = backbone.forward(parameters: parameters.pointer, inputs: other, batch: batch)

        var featureTangent = [Float](repeating: .nan, count: count)
        let features = backbone.forwardWithTangent(parameters: parameters.pointer, tangent: direction, inputs: input,
                                                   batch: batch, featureTangent: &featureTangent)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: features, count: count)), primal,
                       "forwardWithTangent must return forward's features")
        let gradientAfterTangent = FloatBuffer(count: layout.totalCount)
        var inputGradientAfterTangent = [Float](repeating: 0, count: input.count)
        backbone.backward(featureGradient: featureGradient, parameters: parameters.pointer, inputs: input, batch: batch,
                          parameterGradient: gradientAfterTangent.pointer, inputGradient: &inputGradientAfterTangent)
        XCTAssertEqual(gradientAfterTangent.array, plainGradient.array, "backward after the JVP must see forward's activations")
        XCTAssertEqual(inputGradientAfterTangent, plainInputGradient)

        let x = input.map(Double.init)
        let numeric = ViTReference.numericTangent(parameters.array.map(Double.init), direction: direction.map(Double.init)) {
            ViTReference.features(parameters: $0, input: x, configuration: self.tiny, batch: batch)
        }
        let scale = numeric.map(abs).max()!
        assertSignificant("feature tangent", numeric, absolute: 1e-6)
        checkTensor("feature tangent", featureTangent, numeric, relative: 1e-3, absolute: 1e-4 * scale)
        let worst = zip(featureTangent, numeric).map { abs(Double($0) - $1) }.max()! / scale
        print("ViT tangent: max |JVP − finite difference| / max|finite difference| \(worst)")

        // The tangent is linear in the direction: doubling it doubles the result.
        var doubled = [Float](repeating: .nan, count: count)
        _ = backbone.forwardWithTangent(parameters: parameters.pointer, tangent: direction.map { 2 * $0 }, inputs: input,
                                        batch: batch, featureTangent: &doubled)
        checkTensor("tangent of 2·direction", doubled, featureTangent.map { 2 * Double($0) }, relative: 1e-5, absolute: 1e-6)
    }

    func testInitializationFollowsTimm() {
        let configuration = ViTConfiguration(channels: 1, height: 28, width: 28, patch: 7, dim: 64, depth: 1, heads: 4)
        let backbone = ViTBackbone(configuration, maxBatch: 1)
        let layout = backbone.layout
        let parameters = FloatBuffer(count: layout.totalCount)
        var random = RandomStream(seed: 1993, label: "initialization")
        backbone.initialize(parameters, random: &random)
        func values(_ name: String) -> [Float] { Array(parameters.buffer[layout.range(of: name)!]) }
        func standardDeviation(_ v: [Float]) -> Double {
            let mean = v.reduce(0.0) { $0 + Double($1) } / Double(v.count)
            return (v.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(v.count)).squareRoot()
        }
        XCTAssertLessThan(values("cls_token").map(abs).max()!, 1e-5)
        XCTAssertEqual(standardDeviation(values("pos_embed")), 0.02, accuracy: 0.002)
        XCTAssertEqual(standardDeviation(values("blocks.0.attn.qkv.weight")), 0.02, accuracy: 0.001)
        XCTAssertEqual(standardDeviation(values("blocks.0.mlp.fc2.weight")), 0.02, accuracy: 0.001)
        let bound = Float(1 / 7.0)  // 1/√(C·P·P)
        XCTAssertLessThanOrEqual(values("patch_embed.proj.weight").map(abs).max()!, bound)
        XCTAssertEqual(standardDeviation(values("patch_embed.proj.weight")), Double(bound) / 3.0.squareRoot(), accuracy: 0.005)
        for name in ["blocks.0.norm1.weight", "blocks.0.norm2.weight", "norm.weight"] {
            XCTAssertEqual(values(name), [Float](repeating: 1, count: 64), name)
        }
        for name in ["blocks.0.norm1.bias", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.bias", "blocks.0.norm2.bias",
                     "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.bias", "norm.bias"] {
            XCTAssertTrue(values(name).allSatisfy { $0 == 0 }, name)
        }
        var again = RandomStream(seed: 1993, label: "initialization")
        let second = FloatBuffer(count: layout.totalCount)
        backbone.initialize(second, random: &again)
        XCTAssertEqual(second.array, parameters.array, "initialisation must be a function of the stream")
    }
}
