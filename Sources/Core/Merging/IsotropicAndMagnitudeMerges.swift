// IsotropicAndMagnitudeMerges: Iso-C (the summed task matrix with its spectrum flattened) and
// MagMax (per entry, the task value of largest magnitude).

/// Iso-C (Marczak et al. 2025, "No Task Left Behind: Isotropic Model Merging with Common and
/// Task-Specific Subspaces"): for each 2-D tensor, M = Σt τt with thin SVD M = U·S·Vᵀ becomes
/// σ̄·U·Vᵀ, σ̄ the mean of all min(m, n) singular values: the same energy (trace of S) spread
/// evenly over every direction, so that no task's directions are drowned by the few dominant
/// ones of the sum. Every other tensor is the mean of the task vectors (as the released code).
/// A zero matrix (no task trained it) stays zero.
enum IsotropicMerge {
    static func merge(_ slices: [FloatBuffer], layout: ParameterLayout, region: Range<Int>) throws -> FloatBuffer {
        let merged = FloatBuffer(count: region.count)
        for index in layout.tensorIndices(overlapping: region) {
            let spec = layout.specs[index]
            let range = layout.range(at: index)
            let offset = range.lowerBound - region.lowerBound
            for slice in slices {
                ElementWise.add(merged.pointer + offset, slice.pointer + offset, count: range.count)
            }
            if spec.isMatrix {
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
