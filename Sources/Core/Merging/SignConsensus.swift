// SignConsensus: the second and third merge parts: plain sum, or TIES' sign election followed by
// the disjoint mean, over sparsified task vectors.

enum SparsifiedCombine {
    /// Δ = Σt sparsify(τt), accumulated in task order.
    static func sum(_ taskVectors: [FloatBuffer], count: Int, sparsifier: some TaskVectorSparsifier) -> FloatBuffer {
        let total = FloatBuffer(count: count)
        let scratch = FloatBuffer(count: count)
        for (task, vector) in taskVectors.enumerated() {
            sparsifier.sparsify(task: task, vector.pointer, into: scratch.pointer)
            ElementWise.add(total.pointer, scratch.pointer, count: count)
        }
        return total
    }

    /// The elected sign of one entry from its sum Σt τ̂t: +1, −1, or 0 for an exact 0.
    @inline(__always) static func electedSign(_ total: Float) -> Int8 {
        total > 0 ? 1 : (total < 0 ? -1 : 0)
    }

    /// Σ over the entries of the elected sign, before the majority fallback: what the disjoint
    /// mean below sums over all slices to find the whole vector's majority sign.
    static func signTotal(_ taskVectors: [FloatBuffer], count: Int, sparsifier: some TaskVectorSparsifier) -> Int {
        let merged = sum(taskVectors, count: count, sparsifier: sparsifier)
        var total = 0
        for i in 0..<count { total &+= Int(electedSign(merged.pointer[i])) }  // &+=: vectorises; |total| ≤ count
        return total
    }

    /// TIES-Merging (Yadav et al. 2023) steps 2 and 3, as in its released code:
    /// elect γ = sign(Σt τ̂t) per entry (τ̂ the sparsified vectors, summed in task order in
    /// Float32); entries with γ = 0 take the majority sign sign(Σ over all entries of γ) of the
    /// whole vector (also when trimming was per tensor); the disjoint mean is then the mean of the
    /// non-zero τ̂t,i whose sign equals γ_i, and 0 where none does. If even the majority sign is 0
    /// (the code then selects the negative entries there) the entry is 0.
    ///
    /// Two passes over the tasks (sum, then agreeing mean) re-run the sparsifier rather than keep
    /// T sparsified copies: memory stays at a few buffers of the layout whatever T is.
    ///
    /// Over one slice of a sharded merge, `totalOverSlices` sums the slices' sign counts, so that
    /// the majority sign is still the whole vector's (an integer sum: exact in any order).
    static func electedDisjointMean(_ taskVectors: [FloatBuffer], count: Int,
                                    sparsifier: some TaskVectorSparsifier,
                                    totalOverSlices: (Int) throws -> Int = { $0 }) rethrows -> FloatBuffer {
        let scratch = FloatBuffer(count: count)
        let merged = sum(taskVectors, count: count, sparsifier: sparsifier)
        let elected = UnsafeMutableBufferPointer<Int8>.allocate(capacity: max(count, 1))
        defer { elected.deallocate() }
        let total = merged.pointer
        var signTotal = 0
        for i in 0..<count {
            let sign = electedSign(total[i])
            elected[i] = sign
            signTotal &+= Int(sign)
        }
        signTotal = try totalOverSlices(signTotal)
        let majority: Int8 = signTotal > 0 ? 1 : (signTotal < 0 ? -1 : 0)
        for i in 0..<count { elected[i] = elected[i] == 0 ? majority : elected[i] }

        // `merged` now accumulates the agreeing entries, `agreeing` counts them.
        merged.zero()
        let agreeing = FloatBuffer(count: count)
        let counts = agreeing.pointer
        let sparse = scratch.pointer
        for (task, vector) in taskVectors.enumerated() {
            sparsifier.sparsify(task: task, vector.pointer, into: sparse)
            // Branch-free, so that it vectorises: a value agrees when its product with the
            // elected sign is positive (0 never agrees), and adding 0 leaves a total unchanged
            // (a total is never −0: it starts at +0 and only grows away from 0).
            for i in 0..<count {
                let value = sparse[i]
                let agrees = value * Float(elected[i]) > 0
                total[i] += agrees ? value : 0
                counts[i] += agrees ? 1 : 0
            }
        }
        for i in 0..<count { total[i] = counts[i] > 0 ? total[i] / counts[i] : total[i] }
        return merged
    }
}
