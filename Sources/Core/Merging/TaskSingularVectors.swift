// TaskSingularVectors: TSV-Merge, per-matrix low-rank task updates whitened against each other.

/// TSV-M (Gargiulo et al. 2025, "Task Singular Vectors: Reducing Task Interference in Model
/// Merging"), as its released `compute_and_sum_svd_mem_reduction`:
///
/// For each 2-D tensor [m, n] (k = min(m, n)) and each task t, the thin SVD τt = Ut·St·Vtᵀ keeps
/// its r = max(1, ⌊k/T⌋) leading triplets. The kept U columns, singular values and Vᵀ rows are
/// concatenated in task order into U [m, p], S [p], Vᵀ [p, n]; U and Vᵀ are replaced by their
/// nearest orthonormal matrices U⊥ = P·Qᵀ (from U = P·Σ·Qᵀ), likewise Vᵀ⊥; the merged tensor is
/// U⊥·diag(S)·Vᵀ⊥. Every other tensor is the mean of the task vectors.
///
/// Where this departs from the reference code, and why:
/// - r is at least 1. The reference takes ⌊k/T⌋, which is 0 when T > k, and then returns a
///   zero matrix for that tensor. With r = 1 and T > k, p = T exceeds k and the stacked matrix
///   is wide on one side: its nearest orthonormal matrix then has orthonormal rows instead of
///   columns (still the polar factor P·Qᵀ), and the product stays [m, n].
/// - Triplets with σ ≤ σ1·max(m, n)·ε (ε = Float.ulpOfOne, LAPACK's numerical-rank tolerance) are
///   not stacked: their singular vectors are round-off, arbitrary yet still rotating the other
///   tasks' directions in the orthogonalisation, while contributing σ ≈ 0. A task whose tensor is
///   zero (a weight it did not train) thus contributes nothing, as does the rank deficiency of a
///   LoRA update. The reference stacks them. For full-rank updates nothing changes.
enum TaskSingularVectorsMerge {
    /// The merged tensors of `region` (whole tensors: the layout's or one rank's share), from each
    /// task's values over it; index 0 of the slices and the result is global index region.lowerBound.
    static func merge(_ slices: [FloatBuffer], layout: ParameterLayout, region: Range<Int>) throws -> FloatBuffer {
        let merged = FloatBuffer(count: region.count)
        let taskCount = slices.count
        for index in layout.tensorIndices(overlapping: region) {
            let spec = layout.specs[index]
            let range = layout.range(at: index)
            let offset = range.lowerBound - region.lowerBound
            if spec.isMatrix {
                try mergeMatrix(slices, offset: offset, rows: spec.shape[0], columns: spec.shape[1],
                                into: merged.pointer + offset)
            } else {
                for slice in slices {
                    ElementWise.add(merged.pointer + offset, slice.pointer + offset, count: range.count)
                }
                let divisor = Float(taskCount)
                for i in offset..<(offset + range.count) { merged[i] /= divisor }
            }
        }
        return merged
    }

    /// The merged [rows, columns] block written at `destination` (which starts zeroed).
    static func mergeMatrix(_ taskVectors: [FloatBuffer], offset: Int, rows: Int, columns: Int,
                            into destination: UnsafeMutablePointer<Float>) throws {
        let rank = min(rows, columns)
        if rank == 0 { return }
        let perTask = max(1, rank / taskVectors.count)
        // Kept triplets of every task, in task order.
        var kept: [(svd: ThinSVD, count: Int)] = []
        for vector in taskVectors {
            let block = vector.pointer + offset
            var isZero = true
            for i in 0..<(rows * columns) where block[i] != 0 {
                isZero = false
                break
            }
            if isZero { continue }
            let svd = try ThinSVD(block, rows: rows, columns: columns)
            let tolerance = svd.singularValues[0] * Float(max(rows, columns)) * Float.ulpOfOne
            var count = 0
            while count < min(perTask, rank) && svd.singularValues[count] > tolerance { count += 1 }
            if count > 0 { kept.append((svd, count)) }
        }
        let stacked = kept.reduce(0) { $0 + $1.count }
        if stacked == 0 { return }

        let u = FloatBuffer(count: rows * stacked)         // [rows, stacked]
        let s = FloatBuffer(count: stacked)
        let vt = FloatBuffer(count: stacked * columns)     // [stacked, columns]
        var column = 0
        for (svd, count) in kept {
            for row in 0..<rows {
                (u.pointer + row * stacked + column).update(from: svd.u.pointer + row * rank, count: count)
            }
            (s.pointer + column).update(from: svd.singularValues.pointer, count: count)
            (vt.pointer + column * columns).update(from: svd.vt.pointer, count: count * columns)
            column += count
        }
        let uOrthonormal = try nearestOrthonormal(u.pointer, rows: rows, columns: stacked)
        let vtOrthonormal = try nearestOrthonormal(vt.pointer, rows: stacked, columns: columns)
        // U⊥·diag(S): scale column j by S[j].
        for row in 0..<rows {
            let line = uOrthonormal.pointer + row * stacked
            for j in 0..<stacked { line[j] *= s[j] }
        }
        sgemm(transposeA: false, transposeB: false, m: rows, n: columns, k: stacked,
              alpha: 1, a: uOrthonormal.pointer, lda: stacked, b: vtOrthonormal.pointer, ldb: columns,
              beta: 0, c: destination, ldc: columns)
    }
}
