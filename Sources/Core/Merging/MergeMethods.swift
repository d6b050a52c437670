// MergeMethods: the merge methods by name, their settings, and the merged task vector Δ of each
// (REFERENCE §3), composed as sparsify × sign consensus × combine.

/// A way of merging T task vectors into one Δ; the merged model is θ0 + α·Δ.
public enum MergeMethodName: String, Sendable, Codable, CaseIterable {
    case average
    case taskArithmetic = "task_arithmetic"
    case ties
    case dare
    case dareTies = "dare_ties"
    case breadcrumbs
    case tsv
    case consensus
}

/// Where TIES' top-k is taken: over the whole flattened task vector (the TIES paper and code)
/// or over each tensor separately (mergekit).
public enum TrimScope: String, Sendable, Codable, CaseIterable {
    case global
    case perTensor = "per-tensor"
}

public struct MergeSettings: Sendable, Equatable {
    public var method: MergeMethodName
    /// Kept fraction in (0, 1]: ties' top-k fraction, dare / dare_ties' keep probability 1 − p,
    /// breadcrumbs' β (kept after dropping the outliers). Ignored by the other methods.
    public var density: Double
    /// ties: the scope of the top-k trim (the sign election is always entry-wise, its majority
    /// fallback over the whole vector). Ignored by the other methods, dare_ties included (it
    /// drops at random instead of trimming).
    public var trim: TrimScope
    /// breadcrumbs: fraction of the largest |τ| of each tensor dropped as outliers, in [0, 1).
    public var gamma: Double
    /// dare / dare_ties: seed of the drop masks.
    public var seed: UInt64
    /// consensus: the TALL-mask λ, one for all tasks (≥ 0).
    public var consensusLambda: Double
    /// consensus: keep entries that at least k tasks' TALL masks select (≥ 1).
    public var consensusK: Int

    /// `density` nil takes the method's default (`defaultDensity(for:)`).
    public init(
        method: MergeMethodName, density: Double? = nil, trim: TrimScope = .global, gamma: Double = 0.01,
        seed: UInt64 = 0, consensusLambda: Double = 0.4, consensusK: Int = 2
    ) {
        self.method = method
        self.density = density ?? Self.defaultDensity(for: method)
        self.trim = trim
        self.gamma = gamma
        self.seed = seed
        self.consensusLambda = consensusLambda
        self.consensusK = consensusK
    }

    /// ties 0.2 (the TIES paper's k = 20 %); dare and dare_ties 0.5 (p = 0.5: full fine-tuning
    /// of small models gives dense, large task vectors, where the DARE paper's p ≈ 0.9 for LLM
    /// SFT deltas loses more); breadcrumbs 0.1 (about 90 % sparse beside γ = 1 % outliers).
    /// Methods that do not sparsify get 1.
    public static func defaultDensity(for method: MergeMethodName) -> Double {
        switch method {
        case .ties: return 0.2
        case .dare, .dareTies: return 0.5
        case .breadcrumbs: return 0.1
        case .average, .taskArithmetic, .tsv, .consensus: return 1
        }
    }

    /// The settings' own errors (those that do not depend on the task vectors), one line each.
    public func validate() throws {
        switch method {
        case .ties, .dare, .dareTies, .breadcrumbs:
            guard density > 0 && density <= 1 else {
                throw OrthofuseError("merge \(method.rawValue): density must be in (0, 1], got \(density)")
            }
        case .average, .taskArithmetic, .tsv, .consensus:
            break
        }
        if method == .breadcrumbs {
            guard gamma >= 0 && gamma < 1 else {
                throw OrthofuseError("merge breadcrumbs: gamma must be in [0, 1), got \(gamma)")
            }
            // A little slack so that e.g. 0.9 + 0.1 is not rejected for its rounding.
            guard gamma + density <= 1 + 1e-12 else {
                throw OrthofuseError(
                    "merge breadcrumbs: gamma + density must be at most 1, got \(gamma) + \(density) = \(gamma + density)")
            }
        }
        if method == .consensus {
            guard consensusK >= 1 else {
                throw OrthofuseError("merge consensus: k must be at least 1, got \(consensusK)")
            }
            guard consensusLambda >= 0 && consensusLambda.isFinite else {
                throw OrthofuseError("merge consensus: lambda must be finite and >= 0, got \(consensusLambda)")
            }
        }
    }
}

public enum TaskVectorMerger {
    /// The merged task vector Δ of `settings.method`, so that the merged model is θ0 + α·Δ with
    /// the method's α (λ in TIES' notation) chosen by the caller. `layout` gives the tensor
    /// boundaries (per-tensor rules, TSV's matrices); every task vector has layout.totalCount
    /// floats. Deterministic: same inputs (and OpenBLAS thread count, for tsv), same bits.
    ///
    /// - average: Δ = (1/T)·Στt.
    /// - task_arithmetic (Ilharco et al. 2023): Δ = Στt; negation is a negative α.
    /// - ties (Yadav et al. 2023): trim each τt to its ⌊density·n⌋ largest |entries|
    ///   (`MagnitudeTrim`, global or per tensor), elect signs, disjoint mean
    ///   (`SparsifiedCombine.electedDisjointMean`).
    /// - dare (Yu et al. 2024): Δ = Σt DARE(τt) (`RandomDrop`: keep with probability density,
    ///   rescale by 1/density).
    /// - dare_ties: DARE sparsification, then TIES' election and disjoint mean (no top-k trim).
    /// - breadcrumbs (Davari & Belilovsky 2024): Δ = Σt window(τt) (`MagnitudeWindow`).
    /// - tsv (Gargiulo et al. 2025): `TaskSingularVectorsMerge`.
    /// - consensus (Wang et al. 2024, TALL masks): `ConsensusMask`.
    ///
    /// Sums run in task order in Float32. Throws (one line) for no task vectors, a vector whose
    /// size is not the layout's, a non-finite entry, or invalid settings (`validate()`).
    public static func mergedTaskVector(
        _ taskVectors: [FloatBuffer], layout: ParameterLayout, settings: MergeSettings
    ) throws -> FloatBuffer {
        guard !taskVectors.isEmpty else {
            throw OrthofuseError("merge \(settings.method.rawValue): no task vectors to merge")
        }
        let count = layout.totalCount
        for (task, vector) in taskVectors.enumerated() {
            guard vector.count == count else {
                throw OrthofuseError(
                    "merge \(settings.method.rawValue): task vector \(task) has \(vector.count) values, the layout has \(count)")
            }
        }
        try settings.validate()
        try checkFinite(taskVectors, layout: layout, method: settings.method)

        switch settings.method {
        case .average:
            let total = TaskVector.sum(taskVectors, count: count)
            let divisor = Float(taskVectors.count)
            for i in 0..<count { total.pointer[i] /= divisor }
            return total
        case .taskArithmetic:
            return TaskVector.sum(taskVectors, count: count)
        case .ties:
            let trim = MagnitudeTrim(taskVectors, layout: layout, density: settings.density, scope: settings.trim)
            return SparsifiedCombine.electedDisjointMean(taskVectors, count: count, sparsifier: trim)
        case .dare:
            let drop = RandomDrop(count: count, density: settings.density, seed: settings.seed)
            return SparsifiedCombine.sum(taskVectors, count: count, sparsifier: drop)
        case .dareTies:
            let drop = RandomDrop(count: count, density: settings.density, seed: settings.seed)
            return SparsifiedCombine.electedDisjointMean(taskVectors, count: count, sparsifier: drop)
        case .breadcrumbs:
            let window = MagnitudeWindow(taskVectors, layout: layout, density: settings.density, gamma: settings.gamma)
            return SparsifiedCombine.sum(taskVectors, count: count, sparsifier: window)
        case .tsv:
            return try TaskSingularVectorsMerge.merge(taskVectors, layout: layout)
        case .consensus:
            return ConsensusMask.merge(taskVectors, count: count, lambda: Float(settings.consensusLambda), k: settings.consensusK)
        }
    }

    /// Selection and sign election are undefined on NaN; name the first offending tensor.
    private static func checkFinite(_ taskVectors: [FloatBuffer], layout: ParameterLayout, method: MergeMethodName) throws {
        for (task, vector) in taskVectors.enumerated() {
            for index in layout.specs.indices {
                for i in layout.range(at: index) where !vector.pointer[i].isFinite {
                    throw OrthofuseError(
                        "merge \(method.rawValue): task vector \(task) has a non-finite value in '\(layout.specs[index].name)'")
                }
            }
        }
    }
}

/// Consensus merging with TALL masks (Wang et al. 2024, "Localizing Task Information for Improved
/// Model Merging and Compression"), as its released code: τ_MTL = Στt; task t's mask is
/// m_t = 1{|τt| > λ·|τ_MTL − τt|} (|θ0 − θt| > λ·|θ_MTL − θt| with θ_MTL = θ0 + τ_MTL); entries
/// selected by at least k masks keep τ_MTL, the rest are 0. The paper picks λ per task from
/// {0.2, …, 0.6} on validation data; here one λ serves all tasks. k = 2 drops both "selfish"
/// (one task) and "catastrophic" (no task) weights.
enum ConsensusMask {
    static func merge(_ taskVectors: [FloatBuffer], count: Int, lambda: Float, k: Int) -> FloatBuffer {
        let total = TaskVector.sum(taskVectors, count: count)
        let votes = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(count, 1))
        defer { votes.deallocate() }
        votes.initialize(repeating: 0)
        let sum = total.pointer
        for vector in taskVectors {
            let tau = vector.pointer
            for i in 0..<count where abs(tau[i]) > lambda * abs(sum[i] - tau[i]) {
                votes[i] += 1
            }
        }
        let threshold = Int32(clamping: k)
        for i in 0..<count where votes[i] < threshold { sum[i] = 0 }
        return total
    }
}
