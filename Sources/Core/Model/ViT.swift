// ViT: a Vision Transformer backbone (timm's VisionTransformer or open_clip's image tower, class-token pooling, no head) with manual forward, backward and JVP.
//
// Legend: B batch, C channels, H×W image, P patch side, N = (H/P)·(W/P) patches, T = N + 1 tokens,
// D width, NH heads, hd = D/NH head dim, F = mlpRatio·D MLP hidden width, K = C·P·P patch values.
//
//   x = [cls_token; Conv2d_P(image)] + pos_embed                     [B, T, D]
//   x = ln_pre(x)                                                   (open_clip only)
//   per block:  x = x + proj(attention(qkv(norm1(x))))
//               x = x + fc2(act(fc1(norm2(x))))                     act: GELU or QuickGELU
//   features = norm(x)[:, 0]                                        [B, D]  (timm)
//   features = ln_post(x)[:, 0] · proj                              [B, E]  (open_clip; conv1 has no bias)
// Names, shapes and order are the flavor's state_dict: timm's (global_pool='token', qkv_bias=True,
// no pre-norm, no layer scale) or open_clip's VisionTransformer (pool_type 'tok', no attentional
// pooling), so either library's image encoder maps onto the layout tensor for tensor.
// Since only the class token is pooled, the last block computes its attention for the class
// query alone and its proj, norm2 and MLP on the class rows: the same features, 1/T of that work.

public struct ViTConfiguration: Sendable, Equatable {
    /// Whose VisionTransformer this is: the tensor names and the few places the two differ.
    public enum Flavor: Sendable, Equatable {
        /// timm's: a patch-embedding bias, no norm before the blocks, features = the normed class token.
        case timm
        /// open_clip's image tower: a bias-free conv1, `ln_pre` before the blocks, and features =
        /// ln_post(class token) · proj, with proj [D, outputDim].
        case openCLIP(outputDim: Int)
    }

    public var channels: Int
    public var height: Int
    public var width: Int
    /// Side of the square, non-overlapping patches; divides height and width.
    public var patch: Int
    /// Token width D.
    public var dim: Int
    public var depth: Int
    /// Attention heads NH; divides dim.
    public var heads: Int
    /// MLP hidden width as a multiple of dim.
    public var mlpRatio: Int
    /// timm builds its LayerNorms with eps 1e-6; open_clip keeps PyTorch's default, 1e-5.
    public var layerNormEpsilon: Float
    public var flavor: Flavor
    /// The blocks' MLP activation: GELU (timm, open_clip's own models) or QuickGELU (OpenAI's CLIP weights).
    public var activation: TransformerActivation

    public init(channels: Int, height: Int, width: Int, patch: Int, dim: Int, depth: Int, heads: Int,
                mlpRatio: Int = 4, flavor: Flavor = .timm, activation: TransformerActivation = .gelu,
                layerNormEpsilon: Float? = nil) {
        self.channels = channels
        self.height = height
        self.width = width
        self.patch = patch
        self.dim = dim
        self.depth = depth
        self.heads = heads
        self.mlpRatio = mlpRatio
        self.flavor = flavor
        self.activation = activation
        self.layerNormEpsilon = layerNormEpsilon ?? (flavor == .timm ? 1e-6 : 1e-5)
    }

    /// N = (H/P)·(W/P).
    public var patchCount: Int { (height / patch) * (width / patch) }
    /// T = N + 1 (the class token first).
    public var tokenCount: Int { patchCount + 1 }
    public var headDim: Int { dim / heads }
    /// F = mlpRatio·D.
    public var hiddenWidth: Int { mlpRatio * dim }
    /// Samples per cache block (`Backbone.cacheBlock`): see `cacheBlockSamples(tokens:width:)`.
    public var cacheBlockSamples: Int { Self.cacheBlockSamples(tokens: tokenCount, width: dim) }

    /// The fewest samples whose token rows reach twice the width (at least one). A step or an
    /// evaluation that runs this many samples at a time keeps each block's activations in cache
    /// between the layers (the 28×28, width-64 demo ViT: 8 samples, its step ~12 % faster than
    /// all 128 rows at once); fewer rows than about twice the width cost more in packing the
    /// weights and adding each block's weight gradients than the cache saves (CLIP ViT-B/32, 50
    /// tokens of width 768: 31 samples, a batch of 32 in one block).
    public static func cacheBlockSamples(tokens: Int, width: Int) -> Int {
        max(1, (2 * width + tokens - 1) / max(1, tokens))
    }
    /// K = C·P·P, the fan-in of the patch embedding.
    public var patchFeatures: Int { channels * patch * patch }
    /// C·H·W values per sample, in C, H, W order.
    public var inputCount: Int { channels * height * width }
    /// Width of the features: D, or open_clip's output dimension E after proj.
    public var featureCount: Int {
        if case let .openCLIP(outputDim) = flavor { return outputDim }
        return dim
    }

    public var names: ViTTensorNames { ViTTensorNames(flavor) }

    /// The state_dict order of the flavor's library. timm: cls_token [1, 1, D], pos_embed
    /// [1, T, D], patch_embed.proj.weight [D, C, P, P] and .bias [D]; per block i: norm1,
    /// attn.qkv [3D, D], attn.proj [D, D], norm2, mlp.fc1 [F, D], mlp.fc2 [D, F] (each .weight then
    /// .bias); then norm.weight, norm.bias [D]. open_clip: class_embedding [D],
    /// positional_embedding [T, D], proj [D, E], conv1.weight [D, C, P, P], ln_pre; per block
    /// ln_1, attn.in_proj_weight [3D, D] and in_proj_bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj;
    /// then ln_post.
    public var layout: ParameterLayout {
        let n = names
        var specs: [ParameterSpec]
        switch flavor {
        case .timm:
            specs = [
                ParameterSpec(name: n.classToken, shape: [1, 1, dim]),
                ParameterSpec(name: n.positions, shape: [1, tokenCount, dim]),
                ParameterSpec(name: n.patchWeight, shape: [dim, channels, patch, patch]),
                ParameterSpec(name: n.patchBias!, shape: [dim]),
            ]
        case let .openCLIP(outputDim):
            specs = [
                ParameterSpec(name: n.classToken, shape: [dim]),
                ParameterSpec(name: n.positions, shape: [tokenCount, dim]),
                ParameterSpec(name: n.projection!, shape: [dim, outputDim]),
                ParameterSpec(name: n.patchWeight, shape: [dim, channels, patch, patch]),
                ParameterSpec(name: n.preNorm! + ".weight", shape: [dim]),
                ParameterSpec(name: n.preNorm! + ".bias", shape: [dim]),
            ]
        }
        for i in 0..<depth {
            let b = n.block(i)
            specs += [
                ParameterSpec(name: b.norm1Weight, shape: [dim]),
                ParameterSpec(name: b.norm1Bias, shape: [dim]),
                ParameterSpec(name: b.qkvWeight, shape: [3 * dim, dim]),
                ParameterSpec(name: b.qkvBias, shape: [3 * dim]),
                ParameterSpec(name: b.projWeight, shape: [dim, dim]),
                ParameterSpec(name: b.projBias, shape: [dim]),
                ParameterSpec(name: b.norm2Weight, shape: [dim]),
                ParameterSpec(name: b.norm2Bias, shape: [dim]),
                ParameterSpec(name: b.fc1Weight, shape: [hiddenWidth, dim]),
                ParameterSpec(name: b.fc1Bias, shape: [hiddenWidth]),
                ParameterSpec(name: b.fc2Weight, shape: [dim, hiddenWidth]),
                ParameterSpec(name: b.fc2Bias, shape: [dim]),
            ]
        }
        specs += [
            ParameterSpec(name: n.finalNorm + ".weight", shape: [dim]),
            ParameterSpec(name: n.finalNorm + ".bias", shape: [dim]),
        ]
        return ParameterLayout(specs)
    }
}

/// The tensor names of one ViT flavor: the only place they are spelled.
public struct ViTTensorNames: Sendable {
    public let classToken, positions, patchWeight: String
    public let patchBias: String?
    /// The LayerNorm before the first block (open_clip's ln_pre), without .weight/.bias.
    public let preNorm: String?
    /// The LayerNorm on the pooled class token, without .weight/.bias.
    public let finalNorm: String
    /// open_clip's proj [D, E], applied after the final norm.
    public let projection: String?
    private let blockPrefix: String
    private let parts: BlockParts

    /// The names of block i's tensors.
    public struct Block: Sendable {
        public let norm1Weight, norm1Bias, qkvWeight, qkvBias, projWeight, projBias: String
        public let norm2Weight, norm2Bias, fc1Weight, fc1Bias, fc2Weight, fc2Bias: String
    }

    /// One flavor's names inside a block: its modules (each with .weight and .bias) and the fused
    /// qkv projection's two tensors.
    private struct BlockParts {
        let norm1, proj, norm2, fc1, fc2: String
        let qkvWeight, qkvBias: String
    }

    private static let timmBlock = BlockParts(norm1: "norm1", proj: "attn.proj", norm2: "norm2", fc1: "mlp.fc1",
                                              fc2: "mlp.fc2", qkvWeight: "attn.qkv.weight", qkvBias: "attn.qkv.bias")
    private static let clipBlock = BlockParts(norm1: "ln_1", proj: "attn.out_proj", norm2: "ln_2", fc1: "mlp.c_fc",
                                              fc2: "mlp.c_proj", qkvWeight: "attn.in_proj_weight", qkvBias: "attn.in_proj_bias")

    /// How either flavor's attention projection weights end (`.attn.qkv.weight`, `.attn.out_proj.weight`, …):
    /// what `attention` mode trains and LoRA adapts.
    public static let attentionWeightSuffixes = [timmBlock, clipBlock].flatMap { ["." + $0.qkvWeight, "." + $0.proj + ".weight"] }

    init(_ flavor: ViTConfiguration.Flavor) {
        if flavor != .timm {
            (classToken, positions, patchWeight, patchBias) = ("class_embedding", "positional_embedding", "conv1.weight", nil)
            (preNorm, finalNorm, projection, blockPrefix, parts) = ("ln_pre", "ln_post", "proj", "transformer.resblocks.", Self.clipBlock)
        } else {
            (classToken, positions, patchWeight, patchBias) = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias")
            (preNorm, finalNorm, projection, blockPrefix, parts) = (nil, "norm", nil, "blocks.", Self.timmBlock)
        }
    }

    public func block(_ i: Int) -> Block {
        let p = blockPrefix + "\(i).", b = parts
        return Block(norm1Weight: p + b.norm1 + ".weight", norm1Bias: p + b.norm1 + ".bias",
                     qkvWeight: p + b.qkvWeight, qkvBias: p + b.qkvBias,
                     projWeight: p + b.proj + ".weight", projBias: p + b.proj + ".bias",
                     norm2Weight: p + b.norm2 + ".weight", norm2Bias: p + b.norm2 + ".bias",
                     fc1Weight: p + b.fc1 + ".weight", fc1Bias: p + b.fc1 + ".bias",
                     fc2Weight: p + b.fc2 + ".weight", fc2Bias: p + b.fc2 + ".bias")
    }
}

public final class ViTBackbone: Backbone {
    public let configuration: ViTConfiguration
    public let layout: ParameterLayout
    public let maxBatch: Int
    public let cacheBlock: Int
    public var inputCount: Int { configuration.inputCount }
    public var inputShape: [Int] { [configuration.channels, configuration.height, configuration.width] }
    public var featureCount: Int { configuration.featureCount }

    /// Offsets of one block's tensors in the flat parameter buffer (and in its gradient and
    /// tangent, which share the layout); looked up by name once.
    private struct BlockOffsets {
        let norm1Weight, norm1Bias, qkvWeight, qkvBias, projWeight, projBias: Int
        let norm2Weight, norm2Bias, fc1Weight, fc1Bias, fc2Weight, fc2Bias: Int
    }

    /// What forward saves of one block for backward and the tangent, for maxBatch samples. From
    /// the attention output on, the last block fills only its B·Q = B class rows ([B, 1, ·]).
    private struct BlockActivations {
        let norm1: FloatBuffer           // [B, T, D] norm1 output, input of qkv
        let norm1Mean: FloatBuffer       // [B, T]
        let norm1Rstd: FloatBuffer       // [B, T]
        let qkv: FloatBuffer             // [B, T, 3D]
        let probabilities: FloatBuffer   // [B, NH, T, T] softmax over keys
        let attention: FloatBuffer       // [B, T, D] heads concatenated, input of proj
        let afterAttention: FloatBuffer  // [B, T, D] residual stream after the attention branch
        let norm2: FloatBuffer           // [B, T, D] norm2 output, input of fc1
        let norm2Mean: FloatBuffer       // [B, T]
        let norm2Rstd: FloatBuffer       // [B, T]
        let fc1: FloatBuffer             // [B, T, F] pre-activation
        let gelu: FloatBuffer            // [B, T, F] input of fc2
        let geluSlope: FloatBuffer       // [B, T, F] GELU'(fc1), for backward and the tangent
        let output: FloatBuffer          // [B, T, D] residual stream after the block

        init(batch: Int, tokens: Int, width: Int, heads: Int, hidden: Int) {
            let rows = batch * tokens
            norm1 = FloatBuffer(count: rows * width)
            norm1Mean = FloatBuffer(count: rows)
            norm1Rstd = FloatBuffer(count: rows)
            qkv = FloatBuffer(count: rows * 3 * width)
            probabilities = FloatBuffer(count: batch * heads * tokens * tokens)
            attention = FloatBuffer(count: rows * width)
            afterAttention = FloatBuffer(count: rows * width)
            norm2 = FloatBuffer(count: rows * width)
            norm2Mean = FloatBuffer(count: rows)
            norm2Rstd = FloatBuffer(count: rows)
            fc1 = FloatBuffer(count: rows * hidden)
            gelu = FloatBuffer(count: rows * hidden)
            geluSlope = FloatBuffer(count: rows * hidden)
            output = FloatBuffer(count: rows * width)
        }
    }

    /// Tangents of the forward pass; only the current block's are kept, since the JVP's result
    /// is the only thing read afterwards.
    private final class TangentWorkspace {
        let patchTokens: FloatBuffer  // [B·N, D]
        let stream: FloatBuffer       // [B, T, D] residual stream
        let norm: FloatBuffer         // [B, T, D] norm1 / norm2 output
        let qkv: FloatBuffer          // [B, T, 3D]
        let attention: FloatBuffer    // [B, T, D]
        let branch: FloatBuffer       // [B, T, D] proj / fc2 output, added to the stream
        let fc1: FloatBuffer          // [B, T, F]
        let gelu: FloatBuffer         // [B, T, F]
        let scores: FloatBuffer       // [T, T] scratch for one (sample, head)
        let classTokens: FloatBuffer  // [B, D]
        let pooled: FloatBuffer       // [B, D] final norm output, when a projection follows

        init(_ c: ViTConfiguration, maxBatch: Int) {
            let rows = maxBatch * c.tokenCount
            patchTokens = FloatBuffer(count: maxBatch * c.patchCount * c.dim)
            stream = FloatBuffer(count: rows * c.dim)
            norm = FloatBuffer(count: rows * c.dim)
            qkv = FloatBuffer(count: rows * 3 * c.dim)
            attention = FloatBuffer(count: rows * c.dim)
            branch = FloatBuffer(count: rows * c.dim)
            fc1 = FloatBuffer(count: rows * c.hiddenWidth)
            gelu = FloatBuffer(count: rows * c.hiddenWidth)
            scores = FloatBuffer(count: c.tokenCount * c.tokenCount)
            classTokens = FloatBuffer(count: maxBatch * c.dim)
            pooled = FloatBuffer(count: c.flavor == .timm ? 0 : maxBatch * c.dim)
        }
    }

    private let classTokenOffset: Int
    private let positionsOffset: Int
    private let patchWeightOffset: Int
    private let patchBiasOffset: Int?
    /// open_clip's ln_pre and proj [D, E]; nil for timm.
    private let preNormOffsets: (weight: Int, bias: Int)?
    private let projectionOffset: Int?
    private let normWeightOffset: Int
    private let normBiasOffset: Int
    private let blockOffsets: [BlockOffsets]

    // Saved by forward.
    private let patches: FloatBuffer      // [B·N, K] im2col of the input
    private let patchTokens: FloatBuffer  // [B·N, D] patch embedding output
    private let tokens: FloatBuffer       // [B, T, D] input of block 0
    private let preNorm: PreNormActivations?
    private let blocks: [BlockActivations]
    private let finalMean: FloatBuffer    // [B]
    private let finalRstd: FloatBuffer    // [B]
    private let pooled: FloatBuffer       // [B, D] norm(class rows): the features, or proj's input
    private let projected: FloatBuffer?   // [B, E] pooled · proj, the features of open_clip's tower

    /// open_clip's ln_pre: the embedded tokens it normalises into `tokens`, and its statistics.
    private struct PreNormActivations {
        let embedded: FloatBuffer  // [B, T, D]
        let mean: FloatBuffer      // [B, T]
        let rstd: FloatBuffer      // [B, T]
    }

    // Backward scratch.
    private let streamGradient: FloatBuffer      // [B, T, D] gradient of the residual stream
    private let normGradient: FloatBuffer        // [B, T, D] gradient of a norm output
    private let qkvGradient: FloatBuffer         // [B, T, 3D]
    private let attentionGradient: FloatBuffer   // [B, T, D]
    private let geluGradient: FloatBuffer        // [B, T, F]
    private let fc1Gradient: FloatBuffer         // [B, T, F]
    private let scoreGradient: FloatBuffer       // [T, T] one (sample, head)
    private let classGradient: FloatBuffer       // [B, D]
    private let pooledGradient: FloatBuffer?     // [B, D] dL/d(pooled), when there is a projection
    private let patchTokenGradient: FloatBuffer  // [B·N, D]
    private let patchGradient: FloatBuffer       // [B·N, K] only when an input gradient is asked for

    // Allocated on first use of forwardWithTangent, so plain fine-tuning does not pay for it.
    private var tangents: TangentWorkspace?

    /// `cacheBlock`: samples per block of a step or an evaluation (default the configuration's
    /// `cacheBlockSamples`; `maxBatch` runs every batch in one block).
    public init(_ configuration: ViTConfiguration, maxBatch: Int, cacheBlock: Int? = nil) {
        let c = configuration
        precondition(c.channels > 0 && c.patch > 0 && c.dim > 0 && c.depth > 0 && c.heads > 0 && c.mlpRatio > 0,
                     "ViT sizes must be positive")
        precondition(c.height % c.patch == 0 && c.width % c.patch == 0,
                     "patch \(c.patch) must divide the image (\(c.height) x \(c.width))")
        precondition(c.height >= c.patch && c.width >= c.patch, "the image is smaller than one patch")
        precondition(c.dim % c.heads == 0, "heads \(c.heads) must divide the width \(c.dim)")
        self.configuration = c
        self.layout = c.layout
        self.maxBatch = maxBatch
        self.cacheBlock = max(1, min(maxBatch, cacheBlock ?? c.cacheBlockSamples))

        let layout = self.layout
        func offset(_ name: String) -> Int { layout.offsets[layout.index(of: name)!] }
        let n = c.names
        classTokenOffset = offset(n.classToken)
        positionsOffset = offset(n.positions)
        patchWeightOffset = offset(n.patchWeight)
        patchBiasOffset = n.patchBias.map(offset)
        preNormOffsets = n.preNorm.map { (offset($0 + ".weight"), offset($0 + ".bias")) }
        projectionOffset = n.projection.map(offset)
        normWeightOffset = offset(n.finalNorm + ".weight")
        normBiasOffset = offset(n.finalNorm + ".bias")
        blockOffsets = (0..<c.depth).map { i in
            let b = n.block(i)
            return BlockOffsets(
                norm1Weight: offset(b.norm1Weight), norm1Bias: offset(b.norm1Bias),
                qkvWeight: offset(b.qkvWeight), qkvBias: offset(b.qkvBias),
                projWeight: offset(b.projWeight), projBias: offset(b.projBias),
                norm2Weight: offset(b.norm2Weight), norm2Bias: offset(b.norm2Bias),
                fc1Weight: offset(b.fc1Weight), fc1Bias: offset(b.fc1Bias),
                fc2Weight: offset(b.fc2Weight), fc2Bias: offset(b.fc2Bias))
        }

        let rows = maxBatch * c.tokenCount
        let patchRows = maxBatch * c.patchCount
        patches = FloatBuffer(count: patchRows * c.patchFeatures)
        patchTokens = FloatBuffer(count: patchRows * c.dim)
        tokens = FloatBuffer(count: rows * c.dim)
        preNorm = preNormOffsets == nil ? nil : PreNormActivations(
            embedded: FloatBuffer(count: rows * c.dim), mean: FloatBuffer(count: rows), rstd: FloatBuffer(count: rows))
        blocks = (0..<c.depth).map { _ in
            BlockActivations(batch: maxBatch, tokens: c.tokenCount, width: c.dim, heads: c.heads, hidden: c.hiddenWidth)
        }
        finalMean = FloatBuffer(count: maxBatch)
        finalRstd = FloatBuffer(count: maxBatch)
        pooled = FloatBuffer(count: maxBatch * c.dim)
        projected = projectionOffset == nil ? nil : FloatBuffer(count: maxBatch * c.featureCount)
        pooledGradient = projectionOffset == nil ? nil : FloatBuffer(count: maxBatch * c.dim)

        streamGradient = FloatBuffer(count: rows * c.dim)
        normGradient = FloatBuffer(count: rows * c.dim)
        qkvGradient = FloatBuffer(count: rows * 3 * c.dim)
        attentionGradient = FloatBuffer(count: rows * c.dim)
        geluGradient = FloatBuffer(count: rows * c.hiddenWidth)
        fc1Gradient = FloatBuffer(count: rows * c.hiddenWidth)
        scoreGradient = FloatBuffer(count: c.tokenCount * c.tokenCount)
        classGradient = FloatBuffer(count: maxBatch * c.dim)
        patchTokenGradient = FloatBuffer(count: patchRows * c.dim)
        patchGradient = FloatBuffer(count: patchRows * c.patchFeatures)
    }

    /// Queries per sample that block l computes beyond its keys and values: every token, but in
    /// the last block only the class token (Q = 1), because only the class token is pooled. From
    /// its attention output on, the last block runs on B rows instead of B·T (its activations
    /// there are [B, 1, ·]), in forward, backward and tangent alike.
    private func queries(inBlock l: Int) -> Int {
        l == configuration.depth - 1 ? 1 : configuration.tokenCount
    }

    /// The last block's output: the class rows [B, D], the input of the final norm.
    private var classTokens: FloatBuffer { blocks[configuration.depth - 1].output }

    public func forward(parameters: UnsafePointer<Float>, inputs: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        precondition(batch <= maxBatch, "batch \(batch) exceeds the workspace (\(maxBatch))")
        let c = configuration
        let p = parameters
        let tokenCount = c.tokenCount, width = c.dim, hidden = c.hiddenWidth
        let rows = batch * tokenCount

        PatchEmbedding.forward(out: patchTokens.pointer, patches: patches.pointer, images: inputs,
                               weight: p + patchWeightOffset, bias: patchBiasOffset.map { p + $0 }, batch: batch,
                               channels: c.channels, height: c.height, width: c.width, patch: c.patch, outputs: width)
        TokenEmbedding.forward(tokens: preNorm?.embedded.pointer ?? tokens.pointer, patchTokens: patchTokens.pointer,
                               classToken: p + classTokenOffset, positions: p + positionsOffset,
                               batch: batch, patches: c.patchCount, width: width)
        if let preNorm, let (weight, bias) = preNormOffsets {
            LayerNorm.forward(out: tokens.pointer, mean: preNorm.mean.pointer, rstd: preNorm.rstd.pointer,
                              inp: preNorm.embedded.pointer, weight: p + weight, bias: p + bias,
                              rows: rows, width: width, epsilon: c.layerNormEpsilon)
        }
        var x = UnsafePointer(tokens.pointer)
        for l in 0..<c.depth {
            let o = blockOffsets[l]
            let a = blocks[l]
            let queries = queries(inBlock: l), outputRows = batch * queries
            LayerNorm.forward(out: a.norm1.pointer, mean: a.norm1Mean.pointer, rstd: a.norm1Rstd.pointer, inp: x,
                              weight: p + o.norm1Weight, bias: p + o.norm1Bias,
                              rows: rows, width: width, epsilon: c.layerNormEpsilon)
            Self.qkvForward(a, o, parameters: p, batch: batch, queries: queries, tokens: tokenCount, width: width)
            Attention.forward(out: a.attention.pointer, probabilities: a.probabilities.pointer, qkv: a.qkv.pointer,
                              batch: batch, tokens: tokenCount, heads: c.heads, headDim: c.headDim, queries: queries)
            Linear.forward(out: a.afterAttention.pointer, inp: a.attention.pointer,
                           weight: p + o.projWeight, bias: p + o.projBias, rows: outputRows, inputs: width, outputs: width)
            Self.addQueryRows(a.afterAttention.pointer, of: x, batch: batch, queries: queries, tokens: tokenCount, width: width)

            LayerNorm.forward(out: a.norm2.pointer, mean: a.norm2Mean.pointer, rstd: a.norm2Rstd.pointer,
                              inp: a.afterAttention.pointer, weight: p + o.norm2Weight, bias: p + o.norm2Bias,
                              rows: outputRows, width: width, epsilon: c.layerNormEpsilon)
            Linear.forward(out: a.fc1.pointer, inp: a.norm2.pointer, weight: p + o.fc1Weight, bias: p + o.fc1Bias,
                           rows: outputRows, inputs: width, outputs: hidden)
            c.activation.forward(out: a.gelu.pointer, slope: a.geluSlope.pointer, inp: a.fc1.pointer, count: outputRows * hidden)
            Linear.forward(out: a.output.pointer, inp: a.gelu.pointer, weight: p + o.fc2Weight, bias: p + o.fc2Bias,
                           rows: outputRows, inputs: hidden, outputs: width)
            ElementWise.add(a.output.pointer, a.afterAttention.pointer, count: outputRows * width)
            x = UnsafePointer(a.output.pointer)
        }
        LayerNorm.forward(out: pooled.pointer, mean: finalMean.pointer, rstd: finalRstd.pointer,
                          inp: classTokens.pointer, weight: p + normWeightOffset, bias: p + normBiasOffset,
                          rows: batch, width: width, epsilon: c.layerNormEpsilon)
        guard let projected, let projectionOffset else { return UnsafePointer(pooled.pointer) }
        Self.project(projected.pointer, pooled.pointer, projection: p + projectionOffset, beta: 0,
                     batch: batch, width: width, outputs: c.featureCount)
        return UnsafePointer(projected.pointer)
    }

    /// qkv [B·T, 3·D] of one block from its norm1 output: keys and values of every token, queries
    /// of the first `queries` tokens of each sample only (the last block's class rows: the other
    /// rows' q is never read, so it is left as it is).
    private static func qkvForward(_ a: BlockActivations, _ o: BlockOffsets, parameters p: UnsafePointer<Float>,
                                   batch: Int, queries: Int, tokens: Int, width: Int) {
        let rows = batch * tokens
        guard queries < tokens else {
            Linear.forward(out: a.qkv.pointer, inp: a.norm1.pointer, weight: p + o.qkvWeight, bias: p + o.qkvBias,
                           rows: rows, inputs: width, outputs: 3 * width)
            return
        }
        // qkv.weight is [3·D, D] (q, k, v stacked): rows D..<3D give k and v, written beside q.
        Linear.forward(out: a.qkv.pointer + width, inp: a.norm1.pointer, weight: p + o.qkvWeight + width * width,
                       bias: p + o.qkvBias + width, rows: rows, inputs: width, outputs: 2 * width, outputStride: 3 * width)
        for q in 0..<queries {
            Linear.forward(out: a.qkv.pointer + q * 3 * width, inp: a.norm1.pointer + q * width,
                           weight: p + o.qkvWeight, bias: p + o.qkvBias, rows: batch, inputs: width, outputs: width,
                           inputStride: tokens * width, outputStride: tokens * 3 * width)
        }
    }

    /// The gradient through `qkvForward`: dqkv [B·T, 3·D] (q's part read at the query rows only)
    /// into dnorm1 [B·T, D] (overwritten) and the qkv weight and bias gradients (added).
    private static func qkvBackward(_ a: BlockActivations, _ o: BlockOffsets, dqkv: UnsafePointer<Float>,
                                    dnorm1: UnsafeMutablePointer<Float>, parameters p: UnsafePointer<Float>,
                                    parameterGradient g: UnsafeMutablePointer<Float>,
                                    batch: Int, queries: Int, tokens: Int, width: Int) {
        let rows = batch * tokens
        guard queries < tokens else {
            Linear.backward(dinp: dnorm1, dweight: g + o.qkvWeight, dbias: g + o.qkvBias,
                            dout: dqkv, inp: a.norm1.pointer, weight: p + o.qkvWeight,
                            rows: rows, inputs: width, outputs: 3 * width, accumulateInput: false)
            return
        }
        let kv = width * width
        Linear.backward(dinp: dnorm1, dweight: g + o.qkvWeight + kv, dbias: g + o.qkvBias + width,
                        dout: dqkv + width, inp: a.norm1.pointer, weight: p + o.qkvWeight + kv,
                        rows: rows, inputs: width, outputs: 2 * width, accumulateInput: false, outputStride: 3 * width)
        for q in 0..<queries {
            Linear.backward(dinp: dnorm1 + q * width, dweight: g + o.qkvWeight, dbias: g + o.qkvBias,
                            dout: dqkv + q * 3 * width, inp: a.norm1.pointer + q * width, weight: p + o.qkvWeight,
                            rows: batch, inputs: width, outputs: width, accumulateInput: true,
                            inputStride: tokens * width, outputStride: tokens * 3 * width)
        }
    }

    /// out[B, E] = beta·out + x[B, D] · projection[D, E] (open_clip's `x @ proj`: no transpose).
    private static func project(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, projection: UnsafePointer<Float>,
                                beta: Float, batch: Int, width: Int, outputs: Int) {
        sgemm(transposeA: false, transposeB: false, m: batch, n: outputs, k: width,
              alpha: 1, a: x, lda: width, b: projection, ldb: outputs, beta: beta, c: out, ldc: outputs)
    }

    public func backward(
        featureGradient: UnsafePointer<Float>, parameters: UnsafePointer<Float>, inputs: UnsafePointer<Float>,
        batch: Int, parameterGradient: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?
    ) {
        precondition(batch <= maxBatch, "batch \(batch) exceeds the workspace (\(maxBatch))")
        let c = configuration
        let p = parameters
        let g = parameterGradient
        let width = c.dim

        var pooledGradient = featureGradient
        if let projectionOffset, let buffer = self.pooledGradient {
            // dproj[D, E] += pooledᵀ · dfeatures;  dpooled[B, D] = dfeatures · projᵀ.
            let outputs = c.featureCount
            sgemm(transposeA: true, transposeB: false, m: width, n: outputs, k: batch, alpha: 1,
                  a: pooled.pointer, lda: width, b: featureGradient, ldb: outputs, beta: 1, c: g + projectionOffset, ldc: outputs)
            sgemm(transposeA: false, transposeB: true, m: batch, n: width, k: outputs, alpha: 1,
                  a: featureGradient, lda: outputs, b: p + projectionOffset, ldb: outputs, beta: 0, c: buffer.pointer, ldc: width)
            pooledGradient = UnsafePointer(buffer.pointer)
        }
        classGradient.pointer.update(repeating: 0, count: batch * width)
        LayerNorm.backward(dinp: classGradient.pointer, dweight: g + normWeightOffset, dbias: g + normBiasOffset,
                           dout: pooledGradient, inp: classTokens.pointer, weight: p + normWeightOffset,
                           mean: finalMean.pointer, rstd: finalRstd.pointer, rows: batch, width: width)
        // `upstream` holds dL/d(block output) for the block's B·Q output rows; each branch's
        // backward adds its share into it through the branch's LayerNorm. The last block's is
        // classGradient [B, D]; below it, streamGradient [B·T, D], which the attention branch
        // turns into dL/d(block input), the next block's upstream.
        var upstream = classGradient.pointer
        for l in stride(from: c.depth - 1, through: 0, by: -1) {
            let o = blockOffsets[l]
            let a = blocks[l]
            let queries = queries(inBlock: l), outputRows = batch * queries
            backwardMLPBranch(o, a, rows: outputRows, upstream: upstream, parameters: p, parameterGradient: g)
            Linear.backward(dinp: attentionGradient.pointer, dweight: g + o.projWeight, dbias: g + o.projBias,
                            dout: upstream, inp: a.attention.pointer, weight: p + o.projWeight,
                            rows: outputRows, inputs: width, outputs: width, accumulateInput: false)
            if queries < c.tokenCount {
                // The residual path: only the query rows of the block input receive dL/d(output).
                streamGradient.pointer.update(repeating: 0, count: batch * c.tokenCount * width)
                Self.addQueryRows(streamGradient.pointer, of: upstream, batch: batch, queries: queries,
                                  tokens: c.tokenCount, width: width, scatter: true)
            }
            backwardAttentionBranch(l, batch: batch, parameters: p, parameterGradient: g)
            upstream = streamGradient.pointer
        }

        // streamGradient is now dL/d(block 0's input); through ln_pre it becomes dL/d(embedded tokens).
        var embeddedGradient = UnsafePointer(streamGradient.pointer)
        if let preNorm, let (weight, bias) = preNormOffsets {
            normGradient.pointer.update(repeating: 0, count: batch * c.tokenCount * width)
            LayerNorm.backward(dinp: normGradient.pointer, dweight: g + weight, dbias: g + bias,
                               dout: streamGradient.pointer, inp: preNorm.embedded.pointer, weight: p + weight,
                               mean: preNorm.mean.pointer, rstd: preNorm.rstd.pointer, rows: batch * c.tokenCount, width: width)
            embeddedGradient = UnsafePointer(normGradient.pointer)
        }
        patchTokenGradient.pointer.update(repeating: 0, count: batch * c.patchCount * width)
        TokenEmbedding.backward(dpatchTokens: patchTokenGradient.pointer, dclassToken: g + classTokenOffset,
                                dpositions: g + positionsOffset, dtokens: embeddedGradient,
                                batch: batch, patches: c.patchCount, width: width)
        PatchEmbedding.backward(dimages: inputGradient, dpatches: patchGradient.pointer,
                                dweight: g + patchWeightOffset, dbias: patchBiasOffset.map { g + $0 },
                                dout: patchTokenGradient.pointer, patches: patches.pointer, weight: p + patchWeightOffset,
                                batch: batch, channels: c.channels, height: c.height, width: c.width, patch: c.patch,
                                outputs: width)
    }

    /// fc2, GELU, fc1 and norm2 backward of one block over its `rows` output rows: upstream +=
    /// the branch's share. The branch-internal gradients are overwritten, not zeroed and added.
    private func backwardMLPBranch(
        _ o: BlockOffsets, _ a: BlockActivations, rows: Int, upstream: UnsafeMutablePointer<Float>,
        parameters p: UnsafePointer<Float>, parameterGradient g: UnsafeMutablePointer<Float>
    ) {
        let width = configuration.dim, hidden = configuration.hiddenWidth
        Linear.backward(dinp: geluGradient.pointer, dweight: g + o.fc2Weight, dbias: g + o.fc2Bias,
                        dout: upstream, inp: a.gelu.pointer, weight: p + o.fc2Weight,
                        rows: rows, inputs: hidden, outputs: width, accumulateInput: false)
        ElementWise.multiply(fc1Gradient.pointer, geluGradient.pointer, a.geluSlope.pointer, count: rows * hidden)
        Linear.backward(dinp: normGradient.pointer, dweight: g + o.fc1Weight, dbias: g + o.fc1Bias,
                        dout: fc1Gradient.pointer, inp: a.norm2.pointer, weight: p + o.fc1Weight,
                        rows: rows, inputs: width, outputs: hidden, accumulateInput: false)
        LayerNorm.backward(dinp: upstream, dweight: g + o.norm2Weight, dbias: g + o.norm2Bias,
                           dout: normGradient.pointer, inp: a.afterAttention.pointer, weight: p + o.norm2Weight,
                           mean: a.norm2Mean.pointer, rstd: a.norm2Rstd.pointer, rows: rows, width: width)
    }

    /// Attention core, qkv and norm1 backward of block l, from attentionGradient (the gradient
    /// of the attention output, [B·Q, D]); adds the branch's share into streamGradient [B·T, D].
    private func backwardAttentionBranch(_ l: Int, batch: Int, parameters p: UnsafePointer<Float>,
                                         parameterGradient g: UnsafeMutablePointer<Float>) {
        let c = configuration
        let o = blockOffsets[l]
        let a = blocks[l]
        let width = c.dim, rows = batch * c.tokenCount
        let blockInput = l == 0 ? UnsafePointer(tokens.pointer) : UnsafePointer(blocks[l - 1].output.pointer)
        let queries = queries(inBlock: l)
        // Attention.backward writes q's gradient for the query rows only, and qkvBackward reads no other.
        Attention.backward(dqkv: qkvGradient.pointer, dscores: scoreGradient.pointer,
                           dout: attentionGradient.pointer, probabilities: a.probabilities.pointer, qkv: a.qkv.pointer,
                           batch: batch, tokens: c.tokenCount, heads: c.heads, headDim: c.headDim, queries: queries)
        Self.qkvBackward(a, o, dqkv: qkvGradient.pointer, dnorm1: normGradient.pointer, parameters: p, parameterGradient: g,
                         batch: batch, queries: queries, tokens: c.tokenCount, width: width)
        LayerNorm.backward(dinp: streamGradient.pointer, dweight: g + o.norm1Weight, dbias: g + o.norm1Bias,
                           dout: normGradient.pointer, inp: blockInput, weight: p + o.norm1Weight,
                           mean: a.norm1Mean.pointer, rstd: a.norm1Rstd.pointer, rows: rows, width: width)
    }

    /// out[b, q] += x[b, q] for the first `queries` of the `tokens` rows of each sample, where out
    /// is [B, Q, D] and x [B, T, D] (a flat add when Q = T). With `scatter`, the other way round:
    /// out [B, T, D] receives x [B, Q, D] in those rows.
    private static func addQueryRows(
        _ out: UnsafeMutablePointer<Float>, of x: UnsafePointer<Float>, batch: Int, queries: Int, tokens: Int,
        width: Int, scatter: Bool = false
    ) {
        guard queries < tokens else {
            ElementWise.add(out, x, count: batch * tokens * width)
            return
        }
        let span = queries * width
        for b in 0..<batch {
            let packed = b * span, full = b * tokens * width
            if scatter {
                ElementWise.add(out + full, x + packed, count: span)
            } else {
                ElementWise.add(out + packed, x + full, count: span)
            }
        }
    }

    public func forwardWithTangent(
        parameters: UnsafePointer<Float>, tangent: UnsafePointer<Float>, inputs: UnsafePointer<Float>, batch: Int,
        featureTangent: UnsafeMutablePointer<Float>
    ) -> UnsafePointer<Float> {
        let w: TangentWorkspace
        if let existing = tangents {
            w = existing
        } else {
            w = TangentWorkspace(configuration, maxBatch: maxBatch)
            tangents = w
        }
        let result = forward(parameters: parameters, inputs: inputs, batch: batch)
        let c = configuration
        let p = parameters
        let t = tangent
        let tokenCount = c.tokenCount, width = c.dim, hidden = c.hiddenWidth
        let rows = batch * tokenCount

        PatchEmbedding.forwardTangent(outTangent: w.patchTokens.pointer, patches: patches.pointer,
                                      weightTangent: t + patchWeightOffset, biasTangent: patchBiasOffset.map { t + $0 },
                                      batch: batch, channels: c.channels, height: c.height, width: c.width,
                                      patch: c.patch, outputs: width)
        TokenEmbedding.forward(tokens: w.stream.pointer, patchTokens: w.patchTokens.pointer,
                               classToken: t + classTokenOffset, positions: t + positionsOffset,
                               batch: batch, patches: c.patchCount, width: width)
        if let preNorm, let (weight, bias) = preNormOffsets {
            LayerNorm.forwardTangent(outTangent: w.norm.pointer, inp: preNorm.embedded.pointer, inpTangent: w.stream.pointer,
                                     weight: p + weight, weightTangent: t + weight, biasTangent: t + bias,
                                     mean: preNorm.mean.pointer, rstd: preNorm.rstd.pointer, rows: rows, width: width)
            w.stream.pointer.update(from: w.norm.pointer, count: rows * width)
        }
        // The stream's tangent is w.stream [B·T, D] below the last block; the last block's output
        // rows are its B class rows, whose tangent is w.classTokens [B, D].
        for l in 0..<c.depth {
            let o = blockOffsets[l]
            let a = blocks[l]
            let blockInput = l == 0 ? UnsafePointer(tokens.pointer) : UnsafePointer(blocks[l - 1].output.pointer)
            let queries = queries(inBlock: l), outputRows = batch * queries
            let outputTangent = queries < tokenCount ? w.classTokens.pointer : w.stream.pointer

            LayerNorm.forwardTangent(outTangent: w.norm.pointer, inp: blockInput, inpTangent: w.stream.pointer,
                                     weight: p + o.norm1Weight, weightTangent: t + o.norm1Weight,
                                     biasTangent: t + o.norm1Bias, mean: a.norm1Mean.pointer, rstd: a.norm1Rstd.pointer,
                                     rows: rows, width: width)
            Linear.forwardTangent(outTangent: w.qkv.pointer, inp: a.norm1.pointer, inpTangent: w.norm.pointer,
                                  weight: p + o.qkvWeight, weightTangent: t + o.qkvWeight, biasTangent: t + o.qkvBias,
                                  rows: rows, inputs: width, outputs: 3 * width)
            Attention.forwardTangent(outTangent: w.attention.pointer, scoreTangent: w.scores.pointer,
                                     qkv: a.qkv.pointer, qkvTangent: w.qkv.pointer, probabilities: a.probabilities.pointer,
                                     batch: batch, tokens: tokenCount, heads: c.heads, headDim: c.headDim, queries: queries)
            Linear.forwardTangent(outTangent: w.branch.pointer, inp: a.attention.pointer, inpTangent: w.attention.pointer,
                                  weight: p + o.projWeight, weightTangent: t + o.projWeight, biasTangent: t + o.projBias,
                                  rows: outputRows, inputs: width, outputs: width)
            if queries < tokenCount {
                outputTangent.update(repeating: 0, count: outputRows * width)
                Self.addQueryRows(outputTangent, of: w.stream.pointer, batch: batch, queries: queries,
                                  tokens: tokenCount, width: width)
            }
            ElementWise.add(outputTangent, w.branch.pointer, count: outputRows * width)

            LayerNorm.forwardTangent(outTangent: w.norm.pointer, inp: a.afterAttention.pointer, inpTangent: outputTangent,
                                     weight: p + o.norm2Weight, weightTangent: t + o.norm2Weight,
                                     biasTangent: t + o.norm2Bias, mean: a.norm2Mean.pointer, rstd: a.norm2Rstd.pointer,
                                     rows: outputRows, width: width)
            Linear.forwardTangent(outTangent: w.fc1.pointer, inp: a.norm2.pointer, inpTangent: w.norm.pointer,
                                  weight: p + o.fc1Weight, weightTangent: t + o.fc1Weight, biasTangent: t + o.fc1Bias,
                                  rows: outputRows, inputs: width, outputs: hidden)
            ElementWise.multiply(w.gelu.pointer, a.geluSlope.pointer, w.fc1.pointer, count: outputRows * hidden)
            Linear.forwardTangent(outTangent: w.branch.pointer, inp: a.gelu.pointer, inpTangent: w.gelu.pointer,
                                  weight: p + o.fc2Weight, weightTangent: t + o.fc2Weight, biasTangent: t + o.fc2Bias,
                                  rows: outputRows, inputs: hidden, outputs: width)
            ElementWise.add(outputTangent, w.branch.pointer, count: outputRows * width)
        }
        let projection = projectionOffset
        LayerNorm.forwardTangent(outTangent: projection == nil ? featureTangent : w.pooled.pointer,
                                 inp: classTokens.pointer, inpTangent: w.classTokens.pointer,
                                 weight: p + normWeightOffset, weightTangent: t + normWeightOffset,
                                 biasTangent: t + normBiasOffset, mean: finalMean.pointer, rstd: finalRstd.pointer,
                                 rows: batch, width: width)
        if let projection {
            // d(pooled · proj) = pooleḋ · proj + pooled · proj̇.
            Self.project(featureTangent, w.pooled.pointer, projection: p + projection, beta: 0,
                         batch: batch, width: width, outputs: c.featureCount)
            Self.project(featureTangent, pooled.pointer, projection: t + projection, beta: 1,
                         batch: batch, width: width, outputs: c.featureCount)
        }
        return result
    }

    /// timm's default ('') initialisation: every Linear weight truncated normal (std 0.02, cut at
    /// ±2 as timm's `trunc_normal_` does, which at this std never triggers), Linear biases 0;
    /// LayerNorm weight 1, bias 0; pos_embed truncated normal std 0.02; cls_token normal std 1e-6.
    /// The patch embedding is a Conv2d, which timm leaves at PyTorch's default: weight and bias
    /// uniform in ±1/√K. open_clip's tower draws its class and position embeddings and proj from
    /// N(0, 1/D) instead (its blocks here as timm's). Draws follow the layout order.
    public func initialize(_ parameters: FloatBuffer, random: inout RandomStream) {
        precondition(parameters.count == layout.totalCount)
        let c = configuration
        let values = parameters.pointer
        func fill(_ offset: Int, _ count: Int, _ value: Float) {
            (values + offset).update(repeating: value, count: count)
        }
        func fillTruncatedNormal(_ offset: Int, _ count: Int, std: Double, random: inout RandomStream) {
            for i in 0..<count {
                var value = random.nextGaussian() * std
                while abs(value) > 2 { value = random.nextGaussian() * std }
                values[offset + i] = Float(value)
            }
        }
        func fillNormal(_ offset: Int, _ count: Int, std: Double, random: inout RandomStream) {
            for i in 0..<count { values[offset + i] = Float(random.nextGaussian() * std) }
        }
        func fillUniform(_ offset: Int, _ count: Int, bound: Double, random: inout RandomStream) {
            for i in 0..<count { values[offset + i] = Float((2 * random.nextDouble() - 1) * bound) }
        }
        let patchBound = 1 / Double(c.patchFeatures).squareRoot()
        if let projectionOffset {
            let scale = 1 / Double(c.dim).squareRoot()
            fillNormal(classTokenOffset, c.dim, std: scale, random: &random)
            fillNormal(positionsOffset, c.tokenCount * c.dim, std: scale, random: &random)
            fillNormal(projectionOffset, c.dim * c.featureCount, std: scale, random: &random)
            fillUniform(patchWeightOffset, c.dim * c.patchFeatures, bound: patchBound, random: &random)
        } else {
            fillNormal(classTokenOffset, c.dim, std: 1e-6, random: &random)
            fillTruncatedNormal(positionsOffset, c.tokenCount * c.dim, std: 0.02, random: &random)
            fillUniform(patchWeightOffset, c.dim * c.patchFeatures, bound: patchBound, random: &random)
        }
        if let patchBiasOffset { fillUniform(patchBiasOffset, c.dim, bound: patchBound, random: &random) }
        if let (weight, bias) = preNormOffsets {
            fill(weight, c.dim, 1)
            fill(bias, c.dim, 0)
        }
        let width = c.dim, hidden = c.hiddenWidth
        for o in blockOffsets {
            fill(o.norm1Weight, width, 1)
            fill(o.norm1Bias, width, 0)
            fillTruncatedNormal(o.qkvWeight, 3 * width * width, std: 0.02, random: &random)
            fill(o.qkvBias, 3 * width, 0)
            fillTruncatedNormal(o.projWeight, width * width, std: 0.02, random: &random)
            fill(o.projBias, width, 0)
            fill(o.norm2Weight, width, 1)
            fill(o.norm2Bias, width, 0)
            fillTruncatedNormal(o.fc1Weight, hidden * width, std: 0.02, random: &random)
            fill(o.fc1Bias, hidden, 0)
            fillTruncatedNormal(o.fc2Weight, width * hidden, std: 0.02, random: &random)
            fill(o.fc2Bias, width, 0)
        }
        fill(normWeightOffset, width, 1)
        fill(normBiasOffset, width, 0)
    }
}
