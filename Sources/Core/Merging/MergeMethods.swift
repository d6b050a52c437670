// MergeMethods: the merge methods by name, their settings, and the merged task vector Δ of each
// (README, "Merging"), composed as sparsify × sign consensus × combine.

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
    case isoC = "iso_c"
    case isoCTS = "iso_cts"
    case magmax
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
    /// iso_cts: the share of each matrix's rank given to the common subspace (the top singular
    /// directions of Στt), in [0, 1]; the rest is shared equally among the tasks' own directions.
    public var commonFraction: Double

    /// `density` nil takes the method's default (`defaultDensity(for:)`).
    public init(
        method: MergeMethodName, density: Double? = nil, trim: TrimScope = .global, gamma: Double = 0.01,
        seed: UInt64 = 0, consensusLambda: Double = 0.4, consensusK: Int = 2, commonFraction: Double = 0.8
    ) {
        self.method = method
        self.density = density ?? Self.defaultDensity(for: method)
        self.trim = trim
        self.gamma = gamma
        self.seed = seed
        self.consensusLambda = consensusLambda
        self.consensusK = consensusK
        self.commonFraction = commonFraction
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
        case .average, .taskArithmetic, .tsv, .consensus, .isoC, .isoCTS, .magmax: return 1
        }
    }

    /// Whether the method works tensor by tensor (per-tensor TIES, Breadcrumbs' windows, TSV's
    /// matrices): a slice of a sharded merge must then hold whole tensors.
    public var needsWholeTensors: Bool {
        switch method {
        case .ties: trim == .perTensor
        case .breadcrumbs, .tsv, .isoC, .isoCTS: true
        case .average, .taskArithmetic, .dare, .dareTies, .consensus, .magmax: false
        }
    }

    /// The settings' own errors (those that do not depend on the task vectors), one line each.
    public func validate() throws {
        switch method {
        case .ties, .dare, .dareTies, .breadcrumbs:
            guard density > 0 && density <= 1 else {
                throw OrthofuseError("merge \(method.rawValue): density must be in (0, 1], got \(density)")
            }
        case .average, .taskArithmetic, .tsv, .consensus, .isoC, .isoCTS, .magmax:
            break
        }
        if method == .isoCTS {
            guard commonFraction >= 0 && commonFraction <= 1 else {
                throw OrthofuseError("merge iso_cts: common_fraction must be in [0, 1], got \(commonFraction)")
            }
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
    /// - iso_c (Marczak et al. 2025): `IsotropicMerge`, Σt τt with each matrix's spectrum flattened.
    /// - iso_cts (the same paper): `IsotropicMerge.commonAndTaskSpecific`, the sum's top directions
    ///   and each task's own beyond them, orthogonalised, with a flat spectrum.
    /// - magmax (Marczak et al. 2024): `MagnitudeMax`, per entry the task value of largest |τ|.
    ///
    /// Sums run in task order in Float32. Throws (one line) for no task vectors, a vector whose
    /// size is not the layout's, a non-finite entry, or invalid settings (`validate()`).
    public static func mergedTaskVector(
        _ taskVectors: [FloatBuffer], layout: ParameterLayout, settings: MergeSettings
    ) throws -> FloatBuffer {
        try mergedSlice(taskVectors, region: 0..<layout.totalCount, layout: layout, settings: settings, collectives: .whole)
    }

    /// Δ over `region` of the flattened layout only, from each task's values there
    /// (`slices[t][j]` is τt at global index region.lowerBound + j): one rank's share of a sharded
    /// merge, `collectives` joining it with the other ranks' slices. Bitwise equal to that part of
    /// `mergedTaskVector` over the whole vectors: every entry is computed by the same code with
    /// the same global index, sums over tasks run in task order, and what spans slices is either
    /// an integer count (sign totals, histograms; exact in any order) or TIES' global threshold,
    /// found exactly (`SlicedTopMagnitude`). Per-tensor methods (`needsWholeTensors`) need a region
    /// of whole tensors. Every slice must call this with the same settings and task count.
    public static func mergedSlice(
        _ slices: [FloatBuffer], region: Range<Int>, layout: ParameterLayout, settings: MergeSettings,
        collectives: MergeCollectives
    ) throws -> FloatBuffer {
        try mergedSlice(slices, region: region, layout: layout, settings: settings, collectives: collectives, told: nil)
    }

    /// The same for a slice that is `told` the quantities over whole tensors and the whole vector
    /// (a streamed merge's chunk, which may cut a tensor): with them given, per-tensor methods
    /// need no whole tensors, and nothing is asked of `collectives` beyond the finite check.
    static func mergedSlice(
        _ slices: [FloatBuffer], region: Range<Int>, layout: ParameterLayout, settings: MergeSettings,
        collectives: MergeCollectives, told: SliceStatistics?
    ) throws -> FloatBuffer {
        let method = settings.method.rawValue
        guard !slices.isEmpty else {
            throw OrthofuseError("merge \(method): no task vectors to merge")
        }
        let count = region.count
        precondition(region.lowerBound >= 0 && region.upperBound <= layout.totalCount, "region outside the layout")
        precondition(!collectives.isWhole || region == 0..<layout.totalCount, "a whole merge needs the whole vector")
        for (task, slice) in slices.enumerated() where slice.count != count {
            throw OrthofuseError(collectives.isWhole
                ? "merge \(method): task vector \(task) has \(slice.count) values, the layout has \(count)"
                : "merge \(method): task vector \(task)'s slice has \(slice.count) values, its region \(count)")
        }
        try settings.validate()
        if settings.needsWholeTensors, told == nil, !layout.holdsWholeTensors(region) {
            throw OrthofuseError("merge \(method): works per tensor, but the slice \(region) cuts a tensor")
        }
        try checkFinite(slices, region: region, layout: layout, method: settings.method, collectives: collectives)
        let totalOverSlices: (Int) throws -> Int = { local in
            if let total = told?.signTotal { return total }
            return Int(try collectives.sum([Double(local)])[0])
        }

        switch settings.method {
        case .average:
            let total = TaskVector.sum(slices, count: count)
            let divisor = Float(slices.count)
            for i in 0..<count { total.pointer[i] /= divisor }
            return total
        case .taskArithmetic:
            return TaskVector.sum(slices, count: count)
        case .ties:
            let trim: MagnitudeTrim
            if let cuts = told?.trimCuts {
                trim = MagnitudeTrim(region: region, globalCuts: cuts)
            } else if settings.trim == .global, !collectives.isWhole {
                let keep = MagnitudeTrim.keptCount(settings.density, of: layout.totalCount)
                let cuts = try SlicedTopMagnitude.cuts(slices, region: region, keep: keep, collectives: collectives)
                trim = MagnitudeTrim(region: region, globalCuts: cuts)
            } else {
                trim = MagnitudeTrim(slices, region: region, layout: layout, density: settings.density, scope: settings.trim)
            }
            return try SparsifiedCombine.electedDisjointMean(slices, count: count, sparsifier: trim,
                                                             totalOverSlices: totalOverSlices)
        case .dare:
            let drop = RandomDrop(region: region, density: settings.density, seed: settings.seed)
            return SparsifiedCombine.sum(slices, count: count, sparsifier: drop)
        case .dareTies:
            let drop = RandomDrop(region: region, density: settings.density, seed: settings.seed)
            return try SparsifiedCombine.electedDisjointMean(slices, count: count, sparsifier: drop,
                                                             totalOverSlices: totalOverSlices)
        case .breadcrumbs:
            let window = told.map { MagnitudeWindow(region: region, outer: $0.windowOuterCuts, inner: $0.windowInnerCuts) }
                ?? MagnitudeWindow(slices, region: region, layout: layout, density: settings.density, gamma: settings.gamma)
            return SparsifiedCombine.sum(slices, count: count, sparsifier: window)
        case .tsv:
            return try TaskSingularVectorsMerge.merge(slices, layout: layout, region: region)
        case .consensus:
            return ConsensusMask.merge(slices, count: count, lambda: Float(settings.consensusLambda), k: settings.consensusK)
        case .isoC:
            return try IsotropicMerge.merge(slices, layout: layout, region: region)
        case .isoCTS:
            return try IsotropicMerge.merge(slices, layout: layout, region: region, commonFraction: settings.commonFraction)
        case .magmax:
            return MagnitudeMax.merge(slices, count: count)
        }
    }

    /// TIES' and DARE-TIES' sign total over one slice that is `told` its cuts (the first half of
    /// their merge: Σ over the slice's entries of the elected sign), 0 for the other methods.
    static func signTotal(_ slices: [FloatBuffer], region: Range<Int>, settings: MergeSettings, told: SliceStatistics) -> Int {
        switch settings.method {
        case .ties:
            SparsifiedCombine.signTotal(slices, count: region.count, sparsifier: MagnitudeTrim(region: region, globalCuts: told.trimCuts))
        case .dareTies:
            SparsifiedCombine.signTotal(slices, count: region.count,
                                        sparsifier: RandomDrop(region: region, density: settings.density, seed: settings.seed))
        case .average, .taskArithmetic, .dare, .breadcrumbs, .tsv, .consensus, .isoC, .isoCTS, .magmax: 0
        }
    }

    /// Selection and sign election are undefined on NaN; name the first offending tensor (in
    /// task order, then layout order), the same on every slice: each finds its first, and the
    /// smallest (task, tensor) over the slices wins.
    private static func checkFinite(
        _ slices: [FloatBuffer], region: Range<Int>, layout: ParameterLayout, method: MergeMethodName,
        collectives: MergeCollectives
    ) throws {
        let tensors = layout.tensorIndices(overlapping: region)
        var first = Double.infinity
        search: for (task, slice) in slices.enumerated() {
            for index in tensors {
                let span = layout.range(at: index).clamped(to: region)
                if !span.isEmpty, ElementWise.firstNonFinite(slice.pointer + span.lowerBound - region.lowerBound, count: span.count) != nil {
                    first = Double(task * layout.specs.count + index)
                    break search
                }
            }
        }
        first = try collectives.minimum([first])[0]
        guard first.isFinite else { return }
        let code = Int(first)
        let (task, index) = code.quotientAndRemainder(dividingBy: layout.specs.count)
        throw OrthofuseError("merge \(method.rawValue): task vector \(task) has a non-finite value in '\(layout.specs[index].name)'")
    }
}

/// What a merge over one slice of the flattened task vectors needs from the other slices (the
/// ranks of a sharded merge): element-wise sums and minima of Doubles over all slices, and where
/// this slice stands among them. Every slice makes the same calls in the same order, whatever its
/// data, so the calls can be collectives.
public struct MergeCollectives {
    /// This slice's position; slots are numbered in the order of the slices' regions.
    public let slot: Int
    public let slotCount: Int
    public let sum: ([Double]) throws -> [Double]
    public let minimum: ([Double]) throws -> [Double]
    /// One slice that is the whole vector: global quantities are computed directly.
    let isWhole: Bool

    public init(slot: Int, slotCount: Int, sum: @escaping ([Double]) throws -> [Double],
                minimum: @escaping ([Double]) throws -> [Double]) {
        precondition(slotCount >= 1 && (0..<slotCount).contains(slot))
        self.slot = slot
        self.slotCount = slotCount
        self.sum = sum
        self.minimum = minimum
        isWhole = false
    }

    private init() {
        slot = 0
        slotCount = 1
        sum = { $0 }
        minimum = { $0 }
        isWhole = true
    }

    /// The unsharded merge.
    static var whole: MergeCollectives { MergeCollectives() }

    /// One slice that is all there is, but not the whole vector at once (a streamed merge's
    /// chunk, a checkpoint's tensor): sums and minima are its own values.
    public static var alone: MergeCollectives { MergeCollectives(slot: 0, slotCount: 1, sum: { $0 }, minimum: { $0 }) }
}

extension ParameterLayout {
    /// The tensors with at least one entry in `region`, in layout order (empty tensors at its
    /// edges included: they are harmless).
    func tensorIndices(overlapping region: Range<Int>) -> [Int] {
        specs.indices.filter { index in
            let range = range(at: index)
            return range.overlaps(region) || (range.isEmpty && region.contains(range.lowerBound))
        }
    }

    /// True when `region` starts and ends on tensor boundaries.
    func holdsWholeTensors(_ region: Range<Int>) -> Bool {
        func isBoundary(_ index: Int) -> Bool { index == totalCount || offsets.contains(index) }
        return isBoundary(region.lowerBound) && isBoundary(region.upperBound)
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
