// FineTuneMode: which backbone parameters a fine-tuning mode trains and OrthoReg regularises.

public enum FineTuneMode: String, Sendable, Codable, CaseIterable {
    /// Every backbone parameter.
    case full
    /// Attention projections only (ViT: blocks.N.attn.qkv.weight and blocks.N.attn.proj.weight).
    case attention
    /// Rank-r adapters on the attention projections; the task vector is the dense (α/r)·B·A.
    case lora
    /// Tangent-space fine-tuning of f(x; θ0) + J(x; θ0)(θ − θ0).
    case linearized

    /// Layout indices trained in this mode, or nil when the backbone does not support it.
    public func trainedParameters(_ layout: ParameterLayout) -> [Int]? {
        switch self {
        case .full:
            return Array(layout.specs.indices)
        case .attention:
            let indices = layout.specs.indices.filter {
                let name = layout.specs[$0].name
                return name.hasSuffix(".attn.qkv.weight") || name.hasSuffix(".attn.proj.weight")
            }
            return indices.isEmpty ? nil : indices
        case .lora, .linearized:
            return nil
        }
    }

    /// The trained 2-D weights: what OrthoReg sums over.
    public func regularizedParameters(_ layout: ParameterLayout) -> [Int] {
        (trainedParameters(layout) ?? []).filter { layout.specs[$0].isMatrix }
    }
}
