// BLAS: the GEMM entry point of orthofuse (OpenBLAS cblas_sgemm) and the BLAS runtime settings.
import CBLAS
import Kernels

/// Row-major single-precision GEMM, C[m×n] = alpha · op(A) · op(B) + beta · C,
/// with op(A) m×k and op(B) k×n. Leading dimensions are those of the stored (row-major) arrays.
@inline(__always)
public func sgemm(
    transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
    alpha: Float, a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    if m == 0 || n == 0 { return }
    cblas_sgemm(
        CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
        blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
}

/// Row-major symmetric rank-k update into the *upper* triangle of C[n×n]:
/// C = alpha · A·Aᵀ (A n×k) or, with `transpose`, alpha · Aᵀ·A (A k×n). Half the work of sgemm;
/// the lower triangle is left untouched (see `mirrorUpperTriangle`).
@inline(__always)
public func ssyrkUpper(
    transpose: Bool, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    if n == 0 { return }
    cblas_ssyrk(CblasRowMajor, CblasUpper, transpose ? CblasTrans : CblasNoTrans,
                blasint(n), blasint(k), alpha, a, blasint(lda), beta, c, blasint(ldc))
}

/// Copies the upper triangle of a row-major n×n matrix onto its lower triangle.
public func mirrorUpperTriangle(_ c: UnsafeMutablePointer<Float>, n: Int) {
    of_mirror_upper(c, n)
}

public enum BLASRuntime {
    /// Fixes OpenBLAS to `threads` threads. One thread per rank keeps results bitwise
    /// independent of the machine's load and of how many ranks share a host.
    public static func setThreads(_ threads: Int) {
        openblas_set_num_threads(Int32(max(1, threads)))
    }

    /// The kernel family OpenBLAS selected at load time (e.g. "SkylakeX", "Prescott").
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }
}
