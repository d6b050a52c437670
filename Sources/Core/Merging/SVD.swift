// SVD: the thin singular value decomposition of a row-major matrix (LAPACK sgesdd) and the
// nearest matrix with orthonormal columns or rows (the polar factor) built on it.
import CBLAS

/// A = U · diag(S) · Vᵀ for a row-major A[rows, columns], with k = min(rows, columns):
/// U[rows, k] and Vᵀ[k, columns] row-major with orthonormal columns / rows, S[k] descending, ≥ 0.
///
/// LAPACK is column-major. A row-major A read column-major is Aᵀ (columns × rows), so sgesdd is
/// asked for Aᵀ = U'·S·V'ᵀ. Then A = V'·S·U'ᵀ: LAPACK's `u` (columns × k, column-major) read
/// row-major is U'ᵀ = Vᵀ of A, and its `vt` (k × rows, column-major) read row-major is V' = U of
/// A. The outputs are therefore written straight into `vt` and `u` with no transposition.
public struct ThinSVD: Sendable {
    public let rows: Int
    public let columns: Int
    /// min(rows, columns): the number of singular triplets.
    public let rank: Int
    public let u: FloatBuffer
    public let singularValues: FloatBuffer
    public let vt: FloatBuffer

    /// Decomposes `matrix` (read, not modified). Throws if it holds a non-finite value or if
    /// LAPACK does not converge. Deterministic for a fixed OpenBLAS thread count.
    /// `onlyQRIteration` skips divide and conquer (tests use it to check the fallback).
    public init(_ matrix: UnsafePointer<Float>, rows: Int, columns: Int, onlyQRIteration: Bool = false) throws {
        precondition(rows >= 0 && columns >= 0, "negative matrix size")
        self.rows = rows
        self.columns = columns
        rank = min(rows, columns)
        u = FloatBuffer(count: rows * rank)
        singularValues = FloatBuffer(count: rank)
        vt = FloatBuffer(count: rank * columns)
        if rank == 0 { return }
        for i in 0..<(rows * columns) where !matrix[i].isFinite {
            throw OrthofuseError("SVD of a \(rows)×\(columns) matrix: non-finite value at [\(i / columns), \(i % columns)]")
        }
        // sgesdd overwrites its input.
        let work = FloatBuffer(count: rows * columns)
        work.pointer.update(from: matrix, count: rows * columns)
        if onlyQRIteration {
            let info = Self.qrIteration(work.pointer, m: Int32(columns), n: Int32(rows), singularValues: singularValues,
                                        u: vt, vt: u)
            guard info == 0 else { throw OrthofuseError("SVD of a \(rows)×\(columns) matrix did not converge (LAPACK sgesvd info \(info))") }
            return
        }

        var jobz = CChar(UInt8(ascii: "S"))
        var m = Int32(columns), n = Int32(rows)
        var lda = m, ldu = m, ldvt = Int32(rank)
        var info: Int32 = 0
        var iwork = [Int32](repeating: 0, count: 8 * rank)
        // Workspace query first; the size comes back as a Float, which rounds above 2^24, so
        // take at least LAPACK's documented minimum for JOBZ = 'S' (4k² + 7k).
        var query: Float = 0
        var lwork: Int32 = -1
        sgesdd_(&jobz, &m, &n, work.pointer, &lda, singularValues.pointer, vt.pointer, &ldu,
                u.pointer, &ldvt, &query, &lwork, &iwork, &info, 1)
        guard info == 0 else {
            throw OrthofuseError("SVD of a \(rows)×\(columns) matrix: LAPACK sgesdd workspace query failed (info \(info))")
        }
        let minimum = 4 * rank * rank + 7 * rank
        let size = max(Int(query.rounded(.up)), minimum)
        guard size <= Int(Int32.max) else {
            throw OrthofuseError("SVD of a \(rows)×\(columns) matrix needs more LAPACK workspace than it can address")
        }
        lwork = Int32(size)
        let workspace = FloatBuffer(count: size)
        sgesdd_(&jobz, &m, &n, work.pointer, &lda, singularValues.pointer, vt.pointer, &ldu,
                u.pointer, &ldvt, workspace.pointer, &lwork, &iwork, &info, 1)
        if info > 0 {
            // Divide and conquer did not converge (seen on real task vectors): QR iteration does.
            work.pointer.update(from: matrix, count: rows * columns)
            info = Self.qrIteration(work.pointer, m: m, n: n, singularValues: singularValues, u: vt, vt: u)
            guard info == 0 else {
                throw OrthofuseError("SVD of a \(rows)×\(columns) matrix did not converge (LAPACK sgesdd, then sgesvd info \(info))")
            }
        } else if info < 0 {
            throw OrthofuseError("SVD of a \(rows)×\(columns) matrix: LAPACK sgesdd rejected argument \(-info)")
        }
    }

    /// sgesvd on the column-major m × n `a` (overwritten), thin U [m, k] into `u`, Vᵀ [k, n] into
    /// `vt` (LAPACK's own naming: the caller swaps them as for sgesdd); returns LAPACK's info.
    private static func qrIteration(_ a: UnsafeMutablePointer<Float>, m: Int32, n: Int32, singularValues: FloatBuffer,
                                    u: FloatBuffer, vt: FloatBuffer) -> Int32 {
        var job = CChar(UInt8(ascii: "S"))
        var m = m, n = n
        var lda = m, ldu = m, ldvt = min(m, n)
        var info: Int32 = 0
        var query: Float = 0
        var lwork: Int32 = -1
        sgesvd_(&job, &job, &m, &n, a, &lda, singularValues.pointer, u.pointer, &ldu, vt.pointer, &ldvt,
                &query, &lwork, &info, 1, 1)
        guard info == 0 else { return info }
        let k = Int(min(m, n)), largest = Int(max(m, n))
        let size = max(Int(query.rounded(.up)), 3 * k + largest, 5 * k, 1)
        guard size <= Int(Int32.max) else { return -12 }
        lwork = Int32(size)
        let workspace = FloatBuffer(count: size)
        sgesvd_(&job, &job, &m, &n, a, &lda, singularValues.pointer, u.pointer, &ldu, vt.pointer, &ldvt,
                workspace.pointer, &lwork, &info, 1, 1)
        return info
    }
}

/// The nearest matrix to `matrix` [rows, columns] (Frobenius norm) with orthonormal columns
/// (rows ≥ columns) or orthonormal rows (rows < columns): P·Qᵀ from the thin SVD A = P·Σ·Qᵀ,
/// i.e. the orthogonal polar factor, the solution of the orthogonal Procrustes problem.
public func nearestOrthonormal(_ matrix: UnsafePointer<Float>, rows: Int, columns: Int) throws -> FloatBuffer {
    let svd = try ThinSVD(matrix, rows: rows, columns: columns)
    let result = FloatBuffer(count: rows * columns)
    sgemm(transposeA: false, transposeB: false, m: rows, n: columns, k: svd.rank,
          alpha: 1, a: svd.u.pointer, lda: max(svd.rank, 1), b: svd.vt.pointer, ldb: max(columns, 1),
          beta: 0, c: result.pointer, ldc: max(columns, 1))
    return result
}
