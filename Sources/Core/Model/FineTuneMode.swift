// FineTuneMode: which backbone parameters a fine-tuning mode trains and OrthoReg regularises.

public enum FineTuneMode: String, Sendable, Codable, CaseIterable {
    /// Every backbone parameter.
    case full
    /// Attention projections only (timm's blocks.N.attn.qkv.weight and .attn.proj.weight; open_clip's
    /// transformer.resblocks.N.attn.in_proj_weight and .attn.out_proj.weight, as the paper's code trains).
    case attention
    /// Rank-r adapters on the attention projections (on every 2-D weight of a backbone without
    /// attention); the task vector is the dense (α/r)·B·A on those weights.
    case lora
    /// Tangent-space fine-tuning of f(x; θ0) + J(x; θ0)(θ − θ0), every parameter.
    case linearized

    /// The attention projection weights of a transformer layout (empty for an MLP).
    public static func attentionWeights(_ layout: ParameterLayout) -> [Int] {
        layout.specs.indices.filter {
            let name = layout.specs[$0].name
            return ViTTensorNames.attentionWeightSuffixes.contains { name.hasSuffix($0) }
        }
    }

    /// Layout indices the optimizer updates directly, or nil when the mode does not apply to
    /// this backbone (attention-only on a backbone without attention). LoRA trains adapters,
    /// not layout entries, so it returns [].
    public func trainedParameters(_ layout: ParameterLayout) -> [Int]? {
        switch self {
        case .full, .linearized:
            return Array(layout.specs.indices)
        case .attention:
            let indices = Self.attentionWeights(layout)
            return indices.isEmpty ? nil : indices
        case .lora:
            return []
        }
    }

    /// The weights that receive LoRA adapters: the attention projections, or every 2-D weight
    /// when the backbone has no attention (an MLP).
    public func loraTargets(_ layout: ParameterLayout) -> [Int] {
        guard self == .lora else { return [] }
        let attention = Self.attentionWeights(layout)
        return attention.isEmpty ? layout.specs.indices.filter { layout.specs[$0].isMatrix } : attention
    }

    /// The trained 2-D weights (their update ΔW): what OrthoReg sums over.
    public func regularizedParameters(_ layout: ParameterLayout) -> [Int] {
        if self == .lora { return loraTargets(layout) }
        return (trainedParameters(layout) ?? []).filter { layout.specs[$0].isMatrix }
    }
}
