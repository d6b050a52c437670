// TransformerLayers: forward, backward and tangent (JVP) kernels of LayerNorm, multi-head self-attention and the patch and token embeddings.
//
// Legend: B batch, T tokens per sample, D width, NH heads, hd head dim (D / NH), R rows (of width D),
// C channels, H×W image, P patch side, N = (H/P)·(W/P) patches, K = C·P·P values per patch.
// Argument order everywhere: outputs, inputs, weights, sizes (as in Layers.swift). Backward takes
// the gradient outputs first and *adds* into them; scratch buffers it names are overwritten.
// A tangent (forward-mode derivative) overwrites its output.
import Foundation
import Kernels

/// SIMD reductions over one row (16 lanes, then a scalar tail).
private enum RowReduction {
    /// Σ x
    @inline(__always)
    static func sum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var lanes = SIMD16<Float>(repeating: 0)
        var i = 0
        while i + 16 <= count {
            lanes += UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            i += 16
        }
        var total = lanes.sum()
        while i < count {
            total += x[i]
            i += 1
        }
        return total
    }

    /// Σ (x − shift) · y
    @inline(__always)
    static func centeredDot(_ x: UnsafePointer<Float>, shift: Float, _ y: UnsafePointer<Float>, count: Int) -> Float {
        let vShift = SIMD16<Float>(repeating: shift)
        var lanes = SIMD16<Float>(repeating: 0)
        var i = 0
        while i + 16 <= count {
            let xv = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            let yv = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD16<Float>.self)
            lanes += (xv - vShift) * yv
            i += 16
        }
        var total = lanes.sum()
        while i < count {
            total += (x[i] - shift) * y[i]
            i += 1
        }
        return total
    }
}

/// Layer normalisation over the last dimension, as PyTorch's `nn.LayerNorm`: biased variance,
/// ε inside the square root. x̂ = (x − mean) · rstd with rstd = 1/√(var + ε); y = x̂ ⊙ weight + bias.
public enum LayerNorm {
    /// out[R, D] = x̂ ⊙ weight[D] + bias[D]; saves mean[R] and rstd[R] for backward and the tangent.
    /// Two passes per row (mean, then squared deviations), in the C kernels (Kernels.c).
    public static func forward(
        out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
        inp: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
        rows: Int, width: Int, epsilon: Float
    ) {
        of_layer_norm_forward(out, mean, rstd, inp, weight, bias, rows, width, epsilon)
    }

    /// With g = dout ⊙ weight: dinp += rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂));
    /// dweight += Σ_R dout ⊙ x̂; dbias += Σ_R dout.
    public static func backward(
        dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
        dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, rows: Int, width: Int
    ) {
        of_layer_norm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, rows, width)
    }

    /// ẏ = ẋ̂ ⊙ weight + x̂ ⊙ ẇeight + ḃias with ẋ̂ = rstd · (ẋ − mean(ẋ) − x̂ · mean(ẋ ⊙ x̂)),
    /// at the mean and rstd saved by `forward` on the same input.
    public static func forwardTangent(
        outTangent: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, inpTangent: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, weightTangent: UnsafePointer<Float>, biasTangent: UnsafePointer<Float>,
        mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, rows: Int, width: Int
    ) {
        let inverseWidth = 1 / Float(width)
        for r in 0..<rows {
            let x = inp + r * width
            let xt = inpTangent + r * width
            let y = outTangent + r * width
            let m = mean[r]
            let s = rstd[r]
            let meanT = RowReduction.sum(xt, count: width) * inverseWidth
            let meanTX = RowReduction.centeredDot(x, shift: m, xt, count: width) * s * inverseWidth
            for i in 0..<width {
                let normalized = (x[i] - m) * s
                let normalizedTangent = s * (xt[i] - meanT - normalized * meanTX)
                y[i] = normalizedTangent * weight[i] + normalized * weightTangent[i] + biasTangent[i]
            }
        }
    }
}

/// The core of multi-head self-attention, between timm's `qkv` and `proj` Linears.
/// qkv [B, T, 3·D] holds each token's q | k | v; head h uses columns h·hd..<(h+1)·hd of each part
/// (timm reshapes qkv to [B, T, 3, NH, hd]). For each sample b and head h:
/// probabilities[b, h] = softmax(q kᵀ / √hd) over keys [Q, T]; out[b, :, h·hd..<(h+1)·hd] = probabilities · v,
/// so out [B, Q, D] has the heads concatenated, ready for `proj`.
/// Q, the number of queries, is T, or fewer when only the first Q tokens' outputs are needed (the
/// class token's, Q = 1, in the last block): keys and values are always all T tokens.
/// q, k, v are read in place from qkv (leading dimension 3·D), so no head is ever copied.
public enum Attention {
    /// Where head h of sample b lives: its q in the qkv-shaped buffers [B, T, 3·D] (k and v follow
    /// at +D and +2·D, leading dimension 3·D), its columns in the [B, Q, D] buffers (leading
    /// dimension D), and its [Q, T] block of the probabilities [B, NH, Q, T].
    private struct Head {
        let qkv: Int
        let columns: Int
        let probabilities: Int

        init(sample b: Int, head h: Int, queries: Int, tokens: Int, heads: Int, headDim: Int) {
            let width = heads * headDim
            qkv = b * tokens * 3 * width + h * headDim
            columns = b * queries * width + h * headDim
            probabilities = (b * heads + h) * queries * tokens
        }
    }

    public static func forward(
        out: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>,
        batch: Int, tokens: Int, heads: Int, headDim: Int, queries: Int? = nil
    ) {
        let width = heads * headDim
        let queries = queries ?? tokens
        let scale = 1 / Float(headDim).squareRoot()
        for b in 0..<batch {
            for h in 0..<heads {
                let at = Head(sample: b, head: h, queries: queries, tokens: tokens, heads: heads, headDim: headDim)
                let q = qkv + at.qkv, k = q + width
                sgemm(transposeA: false, transposeB: true, m: queries, n: tokens, k: headDim,
                      alpha: scale, a: q, lda: 3 * width, b: k, ldb: 3 * width,
                      beta: 0, c: probabilities + at.probabilities, ldc: tokens)
            }
        }
        // One softmax over every row of every head: its exp runs over the whole block at once.
        of_softmax_rows(probabilities, batch * heads * queries, tokens)
        for b in 0..<batch {
            for h in 0..<heads {
                let at = Head(sample: b, head: h, queries: queries, tokens: tokens, heads: heads, headDim: headDim)
                let v = qkv + at.qkv + 2 * width
                sgemm(transposeA: false, transposeB: false, m: queries, n: headDim, k: tokens,
                      alpha: 1, a: probabilities + at.probabilities, lda: tokens, b: v, ldb: 3 * width,
                      beta: 0, c: out + at.columns, ldc: width)
            }
        }
    }

    /// dqkv [B, T, 3·D] = the gradient of `forward` given dout [B, Q, D], through the saved
    /// probabilities [B, NH, Q, T]; dscores [Q, T] is scratch.
    /// dv = Pᵀ·dout; dP = dout·vᵀ; dS = P ⊙ (dP − rowsum(P ⊙ dP)); dq = dS·k/√hd; dk = dSᵀ·q/√hd.
    /// Written, not added (each head's block of dqkv is its own, so no zeroing pass is needed), except
    /// q's gradient of the tokens past the first Q, which is left as it is: the caller zeroes it.
    public static func backward(
        dqkv: UnsafeMutablePointer<Float>, dscores: UnsafeMutablePointer<Float>,
        dout: UnsafePointer<Float>, probabilities: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
        batch: Int, tokens: Int, heads: Int, headDim: Int, queries: Int? = nil
    ) {
        let width = heads * headDim
        let queries = queries ?? tokens
        let scale = 1 / Float(headDim).squareRoot()
        for b in 0..<batch {
            for h in 0..<heads {
                let at = Head(sample: b, head: h, queries: queries, tokens: tokens, heads: heads, headDim: headDim)
                let q = qkv + at.qkv, k = q + width, v = q + 2 * width
                let dq = dqkv + at.qkv, dk = dq + width, dv = dq + 2 * width
                let p = probabilities + at.probabilities
                let g = dout + at.columns  // [Q, hd], leading dimension D
                sgemm(transposeA: false, transposeB: true, m: queries, n: tokens, k: headDim,
                      alpha: 1, a: g, lda: width, b: v, ldb: 3 * width, beta: 0, c: dscores, ldc: tokens)
                sgemm(transposeA: true, transposeB: false, m: tokens, n: headDim, k: queries,
                      alpha: 1, a: p, lda: tokens, b: g, ldb: width, beta: 0, c: dv, ldc: 3 * width)
                for row in 0..<queries {
                    softmaxDerivativeInPlace(dscores + row * tokens, probabilities: p + row * tokens, count: tokens)
                }
                sgemm(transposeA: false, transposeB: false, m: queries, n: headDim, k: tokens,
                      alpha: scale, a: dscores, lda: tokens, b: k, ldb: 3 * width, beta: 0, c: dq, ldc: 3 * width)
                sgemm(transposeA: true, transposeB: false, m: tokens, n: headDim, k: queries,
                      alpha: scale, a: dscores, lda: tokens, b: q, ldb: 3 * width, beta: 0, c: dk, ldc: 3 * width)
            }
        }
    }

    /// outTangent [B, Q, D] = tangent of `forward` in direction qkvTangent [B, T, 3·D], at the saved
    /// probabilities: Ṡ = (q̇kᵀ + qk̇ᵀ)/√hd; Ṗ = P ⊙ (Ṡ − rowsum(P ⊙ Ṡ)); ȯ = Ṗ·v + P·v̇.
    /// scoreTangent [Q, T] is scratch.
    public static func forwardTangent(
        outTangent: UnsafeMutablePointer<Float>, scoreTangent: UnsafeMutablePointer<Float>,
        qkv: UnsafePointer<Float>, qkvTangent: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
        batch: Int, tokens: Int, heads: Int, headDim: Int, queries: Int? = nil
    ) {
        let width = heads * headDim
        let queries = queries ?? tokens
        let scale = 1 / Float(headDim).squareRoot()
        for b in 0..<batch {
            for h in 0..<heads {
                let at = Head(sample: b, head: h, queries: queries, tokens: tokens, heads: heads, headDim: headDim)
                let q = qkv + at.qkv, k = q + width, v = q + 2 * width
                let qt = qkvTangent + at.qkv, kt = qt + width, vt = qt + 2 * width
                let p = probabilities + at.probabilities
                let o = outTangent + at.columns
                sgemm(transposeA: false, transposeB: true, m: queries, n: tokens, k: headDim,
                      alpha: scale, a: qt, lda: 3 * width, b: k, ldb: 3 * width, beta: 0, c: scoreTangent, ldc: tokens)
                sgemm(transposeA: false, transposeB: true, m: queries, n: tokens, k: headDim,
                      alpha: scale, a: q, lda: 3 * width, b: kt, ldb: 3 * width, beta: 1, c: scoreTangent, ldc: tokens)
                for row in 0..<queries {
                    softmaxDerivativeInPlace(scoreTangent + row * tokens, probabilities: p + row * tokens, count: tokens)
                }
                sgemm(transposeA: false, transposeB: false, m: queries, n: headDim, k: tokens,
                      alpha: 1, a: scoreTangent, lda: tokens, b: v, ldb: 3 * width, beta: 0, c: o, ldc: width)
                sgemm(transposeA: false, transposeB: false, m: queries, n: headDim, k: tokens,
                      alpha: 1, a: p, lda: tokens, b: vt, ldb: 3 * width, beta: 1, c: o, ldc: width)
            }
        }
    }

    /// g = p ⊙ (g − Σ p ⊙ g): the softmax Jacobian (symmetric) applied to one row, for both the
    /// gradient and the tangent.
    @inline(__always)
    private static func softmaxDerivativeInPlace(
        _ g: UnsafeMutablePointer<Float>, probabilities p: UnsafePointer<Float>, count: Int
    ) {
        var weighted: Float = 0
        for i in 0..<count { weighted += p[i] * g[i] }
        for i in 0..<count { g[i] = p[i] * (g[i] - weighted) }
    }
}

/// timm's `PatchEmbed`: Conv2d(C, D, kernel P, stride P) on images [B, C, H, W], flattened to
/// patch tokens [B·N, D] in row-major patch order (patch n = py·(W/P) + px). Done as im2col of
/// the non-overlapping patches, then one GEMM with the conv weight seen as [D, K].
public enum PatchEmbedding {
    /// patches[B·N, K]: row b·N + n holds patch n of image b, flattened in the conv weight's
    /// [C, P, P] order (channel, then row, then column inside the patch).
    public static func im2col(
        patches: UnsafeMutablePointer<Float>, images: UnsafePointer<Float>,
        batch: Int, channels: Int, height: Int, width: Int, patch: Int
    ) {
        let across = width / patch
        let down = height / patch
        var row = patches
        for b in 0..<batch {
            let image = images + b * channels * height * width
            for py in 0..<down {
                for px in 0..<across {
                    for c in 0..<channels {
                        for ky in 0..<patch {
                            row.update(from: image + (c * height + py * patch + ky) * width + px * patch, count: patch)
                            row += patch
                        }
                    }
                }
            }
        }
    }

    /// dimages[B, C·H·W] += dpatches[B·N, K] put back where `im2col` took each value from
    /// (patches do not overlap, so this is the inverse permutation, accumulated).
    public static func col2im(
        dimages: UnsafeMutablePointer<Float>, dpatches: UnsafePointer<Float>,
        batch: Int, channels: Int, height: Int, width: Int, patch: Int
    ) {
        let across = width / patch
        let down = height / patch
        var row = dpatches
        for b in 0..<batch {
            let image = dimages + b * channels * height * width
            for py in 0..<down {
                for px in 0..<across {
                    for c in 0..<channels {
                        for ky in 0..<patch {
                            ElementWise.add(image + (c * height + py * patch + ky) * width + px * patch, row, count: patch)
                            row += patch
                        }
                    }
                }
            }
        }
    }

    /// out[B·N, D] = patches · weight[D, K]ᵀ (+ bias[D] when given), writing patches[B·N, K] = im2col(images)
    /// on the way (backward needs them for the weight gradient).
    public static func forward(
        out: UnsafeMutablePointer<Float>, patches: UnsafeMutablePointer<Float>, images: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        batch: Int, channels: Int, height: Int, width: Int, patch: Int, outputs: Int
    ) {
        im2col(patches: patches, images: images, batch: batch, channels: channels, height: height, width: width, patch: patch)
        let rows = batch * (height / patch) * (width / patch)
        Linear.forward(out: out, inp: patches, weight: weight, bias: bias,
                       rows: rows, inputs: channels * patch * patch, outputs: outputs)
    }

    /// dweight[D, K] += doutᵀ · patches; dbias += Σ dout; and, when dimages is given,
    /// dimages += col2im(dout · weight) through the scratch dpatches [B·N, K].
    public static func backward(
        dimages: UnsafeMutablePointer<Float>?, dpatches: UnsafeMutablePointer<Float>,
        dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
        dout: UnsafePointer<Float>, patches: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        batch: Int, channels: Int, height: Int, width: Int, patch: Int, outputs: Int
    ) {
        let rows = batch * (height / patch) * (width / patch)
        let features = channels * patch * patch
        if dimages != nil { dpatches.update(repeating: 0, count: rows * features) }
        Linear.backward(dinp: dimages == nil ? nil : dpatches, dweight: dweight, dbias: dbias,
                        dout: dout, inp: patches, weight: weight, rows: rows, inputs: features, outputs: outputs)
        if let dimages {
            col2im(dimages: dimages, dpatches: dpatches, batch: batch, channels: channels,
                   height: height, width: width, patch: patch)
        }
    }

    /// outTangent[B·N, D] = patches · weightTangentᵀ + biasTangent (the images are constant).
    public static func forwardTangent(
        outTangent: UnsafeMutablePointer<Float>, patches: UnsafePointer<Float>,
        weightTangent: UnsafePointer<Float>, biasTangent: UnsafePointer<Float>?,
        batch: Int, channels: Int, height: Int, width: Int, patch: Int, outputs: Int
    ) {
        let rows = batch * (height / patch) * (width / patch)
        Linear.forward(out: outTangent, inp: patches, weight: weightTangent, bias: biasTangent,
                       rows: rows, inputs: channels * patch * patch, outputs: outputs)
    }
}

/// timm's token assembly (class token first, then the patches, then the position embedding):
/// tokens[b, 0] = classToken + positions[0]; tokens[b, 1 + n] = patchTokens[b·N + n] + positions[1 + n].
/// It is linear in all three inputs, so its tangent is `forward` applied to the tangents.
public enum TokenEmbedding {
    /// tokens [B, T, D] from patchTokens [B·N, D], classToken [D] and positions [T, D], T = N + 1.
    public static func forward(
        tokens: UnsafeMutablePointer<Float>, patchTokens: UnsafePointer<Float>,
        classToken: UnsafePointer<Float>, positions: UnsafePointer<Float>,
        batch: Int, patches: Int, width: Int
    ) {
        let count = (patches + 1) * width
        for b in 0..<batch {
            let sample = tokens + b * count
            sample.update(from: classToken, count: width)
            (sample + width).update(from: patchTokens + b * patches * width, count: patches * width)
            ElementWise.add(sample, positions, count: count)
        }
    }

    /// dpatchTokens += dtokens[:, 1...]; dclassToken += Σ_B dtokens[b, 0]; dpositions += Σ_B dtokens[b].
    public static func backward(
        dpatchTokens: UnsafeMutablePointer<Float>?, dclassToken: UnsafeMutablePointer<Float>?,
        dpositions: UnsafeMutablePointer<Float>?, dtokens: UnsafePointer<Float>,
        batch: Int, patches: Int, width: Int
    ) {
        let count = (patches + 1) * width
        for b in 0..<batch {
            let sample = dtokens + b * count
            if let dclassToken { ElementWise.add(dclassToken, sample, count: width) }
            if let dpositions { ElementWise.add(dpositions, sample, count: count) }
            if let dpatchTokens {
                ElementWise.add(dpatchTokens + b * patches * width, sample + width, count: patches * width)
            }
        }
    }
}
