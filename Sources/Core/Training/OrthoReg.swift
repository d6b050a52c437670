// OrthoReg: the orthogonality penalty on weight updates ΔW = W − W0 and its analytic gradient.
//
// For ΔW [m, n] let k = min(m, n) and G the k×k Gram: ΔWᵀΔW when m ≥ n, else ΔWΔWᵀ.
//   squared     (the paper):         R = ‖G − I‖²_F,  ∂R/∂ΔW = 4 ΔW (G − I)  or  4 (G − I) ΔW
//   frobenius   (the released code): R = ‖G − I‖_F,   ∂R/∂ΔW = 2 ΔW (G − I) / R  (0 when R = 0)
//   offdiagonal (decorrelation):     R = ‖G − diag G‖_F, ∂R/∂ΔW = 2 ΔW O / R with O = G − diag G
//   l2          (control, L2-SP):    R = ‖ΔW‖²_F,     ∂R/∂ΔW = 2 ΔW
// No normalisation by size; the identity includes the diagonal, so the penalty is
// Σ_i (σ_i² − 1)² over the singular values of ΔW in the squared form. The off-diagonal form
// only decorrelates the columns (or rows) of ΔW and leaves their norms free, so it cannot inflate
// τ the way pushing every singular value to 1 does; l2 shrinks τ without decorrelating, the
// control that separates the two effects.

public enum OrthoRegForm: String, Sendable, Codable, CaseIterable {
    /// ‖G − I‖_F, the plain norm of the released code; the default because it is what the
    /// published λ values (10 full fine-tuning, 1 LoRA) were tuned with.
    case frobenius
    /// ‖G − I‖²_F, as written in the paper.
    case squared
    /// ‖G − diag(G)‖_F: decorrelates the columns (rows) of ΔW without forcing unit norms.
    case offdiagonal
    /// ‖ΔW‖²_F: a pull toward θ0 on the same weights (L2-SP), the control for mere shrinking.
    case l2
}

public struct OrthoRegSettings: Sendable, Equatable {
    public var lambda: Float
    public var form: OrthoRegForm

    public init(lambda: Float, form: OrthoRegForm = .frobenius) {
        self.lambda = lambda
        self.form = form
    }

    public var isActive: Bool { lambda > 0 }
}

/// Applies the penalty to a set of matrices of a flat layout, with preallocated scratch
/// (ΔW and G) sized for the largest matrix.
public final class OrthoRegularizer {
    public let settings: OrthoRegSettings
    private let matrices: [(offset: Int, rows: Int, columns: Int)]
    private let delta: FloatBuffer
    private let gram: FloatBuffer

    /// `parameterIndices`: the layout entries to regularise (each must be 2-D).
    public init(settings: OrthoRegSettings, layout: ParameterLayout, parameterIndices: [Int]) {
        self.settings = settings
        matrices = parameterIndices.map { index in
            let spec = layout.specs[index]
            precondition(spec.isMatrix, "OrthoReg applies to 2-D weights only (\(spec.name))")
            return (layout.offsets[index], spec.shape[0], spec.shape[1])
        }
        let largest = matrices.map { $0.rows * $0.columns }.max() ?? 0
        let largestGram = matrices.map { min($0.rows, $0.columns) }.map { $0 * $0 }.max() ?? 0
        delta = FloatBuffer(count: largest)
        gram = FloatBuffer(count: largestGram)
    }

    /// Adds λ·∂R/∂W into `gradient` for every matrix; returns Σ R (without λ).
    @discardableResult
    public func apply(parameters: UnsafePointer<Float>, base: UnsafePointer<Float>,
                      gradient: UnsafeMutablePointer<Float>) -> Double {
        var total = 0.0
        for matrix in matrices {
            let count = matrix.rows * matrix.columns
            ElementWise.subtract(delta.pointer, parameters + matrix.offset, base + matrix.offset, count: count)
            total += Self.penaltyAndGradient(
                delta: delta.pointer, rows: matrix.rows, columns: matrix.columns, form: settings.form,
                gram: gram.pointer, gradientOut: gradient + matrix.offset, addingWithWeight: settings.lambda)
        }
        return total
    }

    /// The penalty of all matrices (no gradient), e.g. for logging or analysis.
    public func value(parameters: UnsafePointer<Float>, base: UnsafePointer<Float>) -> Double {
        var total = 0.0
        for matrix in matrices {
            let count = matrix.rows * matrix.columns
            ElementWise.subtract(delta.pointer, parameters + matrix.offset, base + matrix.offset, count: count)
            total += Self.penaltyAndGradient(delta: delta.pointer, rows: matrix.rows, columns: matrix.columns,
                                             form: settings.form, gram: gram.pointer, gradientOut: nil)
        }
        return total
    }

    /// The penalty of all matrices of an update vector Δθ itself (a task vector), without
    /// forming θ − θ0.
    public func value(updates: UnsafePointer<Float>) -> Double {
        matrices.map {
            Self.penaltyAndGradient(delta: updates + $0.offset, rows: $0.rows, columns: $0.columns,
                                    form: settings.form, gram: gram.pointer, gradientOut: nil)
        }.reduce(0, +)
    }

    /// R(ΔW) for one matrix and, when `gradientOut` is given, ∂R/∂ΔW [rows, columns] into it, or
    /// with `weight` w, gradientOut += w·∂R/∂ΔW (the training step's λ, added by the GEMM itself:
    /// no product buffer, no extra pass). `gram` is scratch of at least k² floats.
    public static func penaltyAndGradient(
        delta: UnsafePointer<Float>, rows m: Int, columns n: Int, form: OrthoRegForm,
        gram: UnsafeMutablePointer<Float>, gradientOut: UnsafeMutablePointer<Float>?,
        addingWithWeight weight: Float? = nil
    ) -> Double {
        if form == .l2 {
            // No Gram: R = ‖ΔW‖²_F, ∂R/∂ΔW = 2 ΔW.
            if let gradientOut {
                if let weight {
                    ElementWise.axpy(gradientOut, 2 * weight, delta, count: m * n)
                } else {
                    gradientOut.update(from: delta, count: m * n)
                    ElementWise.scale(gradientOut, 2, count: m * n)
                }
            }
            return ElementWise.sumOfSquares(delta, count: m * n)
        }
        let tall = m >= n
        let k = tall ? n : m
        // G = ΔWᵀΔW [n, n] (tall) or ΔWΔWᵀ [m, m] (wide), as a symmetric rank-k update.
        ssyrkUpper(transpose: tall, n: k, k: tall ? m : n, alpha: 1, a: delta, lda: n, beta: 0, c: gram, ldc: k)
        mirrorUpperTriangle(gram, n: k)
        // The target of G: I for the orthogonality forms, G's own diagonal for decorrelation.
        for i in 0..<k {
            if form == .offdiagonal { gram[i * k + i] = 0 } else { gram[i * k + i] -= 1 }
        }
        let squaredNorm = ElementWise.sumOfSquares(gram, count: k * k)
        let value = form == .squared ? squaredNorm : squaredNorm.squareRoot()
        guard let gradientOut else { return value }
        let scale: Float
        switch form {
        case .squared: scale = 4
        case .frobenius, .offdiagonal: scale = value > 0 ? Float(2 / value) : 0
        case .l2: preconditionFailure("handled above")
        }
        // ∂R/∂ΔW = scale · ΔW D (tall) or scale · D ΔW (wide), D = G − I or G − diag G (symmetric).
        // For the off-diagonal form the diagonal of G enters R only through D, whose diagonal is 0.
        let alpha = scale * (weight ?? 1), beta: Float = weight == nil ? 0 : 1
        if tall {
            sgemm(transposeA: false, transposeB: false, m: m, n: n, k: n, alpha: alpha,
                  a: delta, lda: n, b: gram, ldb: n, beta: beta, c: gradientOut, ldc: n)
        } else {
            sgemm(transposeA: false, transposeB: false, m: m, n: n, k: m, alpha: alpha,
                  a: gram, lda: m, b: delta, ldb: n, beta: beta, c: gradientOut, ldc: n)
        }
        return value
    }

    /// ‖G − I‖ of one matrix, allocating its own scratch (analysis, not the training step).
    public static func penalty(delta: [Float], rows: Int, columns: Int, form: OrthoRegForm) -> Double {
        let k = min(rows, columns)
        let gram = FloatBuffer(count: k * k)
        return delta.withUnsafeBufferPointer {
            penaltyAndGradient(delta: $0.baseAddress!, rows: rows, columns: columns, form: form,
                               gram: gram.pointer, gradientOut: nil)
        }
    }
}
