// IsotropicAndMagnitudeMerges: Iso-C (the summed task matrix with its spectrum flattened),
// Iso-CTS (common and task-specific directions, flattened) and MagMax (per entry, the task value
// of largest magnitude).

/// Iso-C (Marczak et al. 2025, "No Task Left Behind: Isotropic Model Merging with Common and
/// Task-Specific Subspaces"): for each 2-D tensor, M = Σt τt with thin SVD M = U·S·Vᵀ becomes
/// σ̄·U·Vᵀ, σ̄ the mean of all min(m, n) singular values: the same energy (trace of S) spread
/// evenly over every direction, so that no task's directions are drowned by the few dominant
/// ones of the sum. Every other tensor is the mean of the task vectors (as the released code).
/// A zero matrix (no task trained it) stays zero.
///
/// Iso-CTS (same paper), with `commonFraction` f: of each matrix's r = min(m, n) directions,
/// k go to the common subspace — the top k singular directions of Στt — and s = (r − k)/T to
/// each task: the top s of τt − U_k·U_kᵀ·τt, its part outside the common subspace. k starts at
/// ⌊f·r⌋ and moves so that the tasks' share r − k is a multiple of T (round((r − ⌊f·r⌋)/T)·T,
/// halves to even, as the released code). The r left directions [U_task,1 … U_task,T, U_k] and
/// right ones are each replaced by their nearest orthonormal basis (the polar factor), and the
/// matrix is σ̄·U·Vᵀ with σ̄ the mean of the r singular values they came with. f = 1 is Iso-C.
enum IsotropicMerge {
    /// Iso-C when `commonFraction` is nil, Iso-CTS with it.
    static func merge(_ slices: [FloatBuffer], layout: ParameterLayout, region: Range<Int>,
                      commonFraction: Double? = nil) throws -> FloatBuffer {
        let merged = FloatBuffer(count: region.count)
        for index in layout.tensorIndices(overlapping: region) {
            let spec = layout.specs[index]
            let range = layout.range(at: index)
            let offset = range.lowerBound - region.lowerBound
            for slice in slices {
                ElementWise.add(merged.pointer + offset, slice.pointer + offset, count: range.count)
            }
            if spec.isMatrix, let commonFraction {
                try commonAndTaskSpecific(merged.pointer + offset, tasks: slices.map { UnsafePointer($0.pointer + offset) },
                                          rows: spec.shape[0], columns: spec.shape[1], commonFraction: commonFraction)
            } else if spec.isMatrix {
                try flattenSpectrum(merged.pointer + offset, rows: spec.shape[0], columns: spec.shape[1])
            } else {
                let divisor = Float(slices.count)
                for i in offset..<(offset + range.count) { merged[i] /= divisor }
            }
        }
        return merged
    }

    /// Replaces the [rows, columns] matrix at `block` by σ̄·U·Vᵀ of its own SVD, in place.
    static func flattenSpectrum(_ block: UnsafeMutablePointer<Float>, rows: Int, columns: Int) throws {
        let count = rows * columns
        guard count > 0, (0..<count).contains(where: { block[$0] != 0 }) else { return }
        let svd = try ThinSVD(block, rows: rows, columns: columns)
        var total = 0.0
        for i in 0..<svd.rank { total += Double(svd.singularValues[i]) }
        let mean = Float(total / Double(svd.rank))
        sgemm(transposeA: false, transposeB: false, m: rows, n: columns, k: svd.rank,
              alpha: mean, a: svd.u.pointer, lda: svd.rank, b: svd.vt.pointer, ldb: columns,
              beta: 0, c: block, ldc: columns)
    }
}

extension IsotropicMerge {
    /// Iso-CTS' subspace sizes for rank r and T tasks: k common directions and s per task,
    /// k + T·s = r (s = 0 when r < T's share rounds to nothing).
    static func subspaceSizes(rank r: Int, tasks: Int, commonFraction: Double) -> (common: Int, perTask: Int) {
        let initial = Int(Double(r) * commonFraction)
        let share = (Double(r - initial) / Double(tasks)).rounded(.toNearestOrEven)
        // The rounding can ask for more than the rank holds when f is small; the tasks then get
        // what fits.
        let perTask = min(Int(share), r / tasks)
        return (r - perTask * tasks, perTask)
    }

    /// Replaces `sum` (Στt of one [rows, columns] matrix) by its Iso-CTS merge, in place; `tasks`
    /// are the τt of the same matrix.
    static func commonAndTaskSpecific(_ sum: UnsafeMutablePointer<Float>, tasks: [UnsafePointer<Float>],
                                      rows m: Int, columns n: Int, commonFraction: Double) throws {
        let count = m * n
        guard count > 0, (0..<count).contains(where: { sum[$0] != 0 }) else { return }
        let whole = try ThinSVD(sum, rows: m, columns: n)
        let r = whole.rank
        let (k, s) = subspaceSizes(rank: r, tasks: tasks.count, commonFraction: commonFraction)
        // The r directions side by side: left [m, r] (columns), right [r, n] (rows), and the
        // singular values they came with; each task's s first, then the common k (the released
        // code's order, which the orthogonalisation below does not depend on).
        let left = FloatBuffer(count: m * r), right = FloatBuffer(count: r * n)
        var values = [Double](repeating: 0, count: r)
        func place(_ svd: ThinSVD, directions: Int, at slot: Int) {
            for i in 0..<m {
                (left.pointer + i * r + slot).update(from: svd.u.pointer + i * svd.rank, count: directions)
            }
            (right.pointer + slot * n).update(from: svd.vt.pointer, count: directions * n)
            for d in 0..<directions { values[slot + d] = Double(svd.singularValues[d]) }
        }
        if s > 0 {
            let projection = FloatBuffer(count: k * n), outside = FloatBuffer(count: count)
            for (t, task) in tasks.enumerated() {
                // τt − U_k·(U_kᵀ·τt): the task's part outside the common subspace.
                outside.pointer.update(from: task, count: count)
                if k > 0 {
                    sgemm(transposeA: true, transposeB: false, m: k, n: n, k: m, alpha: 1, a: whole.u.pointer, lda: r,
                          b: task, ldb: n, beta: 0, c: projection.pointer, ldc: n)
                    sgemm(transposeA: false, transposeB: false, m: m, n: n, k: k, alpha: -1, a: whole.u.pointer, lda: r,
                          b: projection.pointer, ldb: n, beta: 1, c: outside.pointer, ldc: n)
                }
                place(try ThinSVD(outside.pointer, rows: m, columns: n), directions: s, at: t * s)
            }
        }
        place(whole, directions: k, at: tasks.count * s)
        let leftBasis = try nearestOrthonormal(left.pointer, rows: m, columns: r)
        let rightBasis = try nearestOrthonormal(right.pointer, rows: r, columns: n)
        let mean = Float(values.reduce(0, +) / Double(r))
        sgemm(transposeA: false, transposeB: false, m: m, n: n, k: r, alpha: mean, a: leftBasis.pointer, lda: r,
              b: rightBasis.pointer, ldb: n, beta: 0, c: sum, ldc: n)
    }
}

/// MagMax (Marczak et al. 2024, "MagMax: Leveraging Model Merging for Seamless Continual
/// Learning"): Δ_i = τ_{t*,i} with t* = argmax_t |τ_{t,i}|, the first task on equal magnitudes.
/// Entry-wise, so any slice of a sharded merge gives the same bits.
enum MagnitudeMax {
    static func merge(_ slices: [FloatBuffer], count: Int) -> FloatBuffer {
        let merged = FloatBuffer(count: count)
        merged.copy(from: slices[0])
        for slice in slices.dropFirst() {
            for i in 0..<count where abs(slice[i]) > abs(merged[i]) { merged[i] = slice[i] }
        }
        return merged
    }
}
