// LoRAAdapters: the A and B matrices of a LoRA run, materialised into θ and chained back from dW.
import Foundation

/// LoRA adapters of one run: A and B of every target in one flat buffer, with the scratch the
/// chain rule needs. ΔW = scale·B·A.
final class LoRAAdapters {
    struct Target {
        let offset: Int  // of W in the backbone layout
        let rows: Int  // out
        let columns: Int  // in
        let a: Int  // offset of A [rank, in] in `values`
        let b: Int  // offset of B [out, rank] in `values`
    }

    let rank: Int
    let scale: Float
    let targets: [Target]
    let values: FloatBuffer
    let gradient: FloatBuffer
    /// ΔW of the largest target (OrthoReg's gradient w.r.t. it is added into dW directly).
    let delta: FloatBuffer
    let gram: FloatBuffer

    init(layout: ParameterLayout, targets indices: [Int], rank: Int, alpha: Float, random: RandomStream) {
        self.rank = rank
        scale = alpha / Float(rank)
        var offset = 0
        var targets: [Target] = []
        for index in indices {
            let spec = layout.specs[index]
            precondition(spec.isMatrix, "LoRA adapts 2-D weights only (\(spec.name))")
            let target = Target(offset: layout.offsets[index], rows: spec.shape[0], columns: spec.shape[1],
                                a: offset, b: offset + rank * spec.shape[1])
            offset += rank * (spec.shape[0] + spec.shape[1])
            targets.append(target)
        }
        self.targets = targets
        values = FloatBuffer(count: offset)
        gradient = FloatBuffer(count: offset)
        let largest = targets.map { $0.rows * $0.columns }.max() ?? 0
        let largestGram = targets.map { min($0.rows, $0.columns) }.map { $0 * $0 }.max() ?? 0
        delta = FloatBuffer(count: largest)
        gram = FloatBuffer(count: largestGram)
        var stream = random
        for target in targets {
            let bound = 1 / Double(target.columns).squareRoot()
            for i in 0..<(rank * target.columns) {
                values[target.a + i] = Float((2 * stream.nextDouble() - 1) * bound)
            }
        }
    }

    /// delta = scale · B · A for `target`.
    func computeDelta(_ target: Target) {
        sgemm(transposeA: false, transposeB: false, m: target.rows, n: target.columns, k: rank, alpha: scale,
              a: values.pointer + target.b, lda: rank, b: values.pointer + target.a, ldb: target.columns,
              beta: 0, c: delta.pointer, ldc: target.columns)
    }

    /// θ[target] = θ0[target] + scale·B·A for every target.
    func materialize(parameters: FloatBuffer, base: FloatBuffer) {
        for target in targets {
            computeDelta(target)
            let count = target.rows * target.columns
            (parameters.pointer + target.offset).update(from: base.pointer + target.offset, count: count)
            ElementWise.add(parameters.pointer + target.offset, delta.pointer, count: count)
        }
    }

    /// From the backbone gradient dW of each target (plus λ·∂R/∂ΔW when OrthoReg is on):
    /// dA = scale·Bᵀ·dW, dB = scale·dW·Aᵀ. Returns Σ R.
    func backpropagate(backboneGradient: FloatBuffer, orthoReg: OrthoRegSettings) -> Double {
        var penalty = 0.0
        for target in targets {
            let dW = backboneGradient.pointer + target.offset
            if orthoReg.isActive {
                computeDelta(target)
                penalty += OrthoRegularizer.penaltyAndGradient(
                    delta: delta.pointer, rows: target.rows, columns: target.columns, form: orthoReg.form,
                    gram: gram.pointer, gradientOut: dW, addingWithWeight: orthoReg.lambda)
            }
            // dA [rank, in] = scale · Bᵀ [rank, out] · dW [out, in]
            sgemm(transposeA: true, transposeB: false, m: rank, n: target.columns, k: target.rows, alpha: scale,
                  a: values.pointer + target.b, lda: rank, b: dW, ldb: target.columns,
                  beta: 0, c: gradient.pointer + target.a, ldc: target.columns)
            // dB [out, rank] = scale · dW [out, in] · Aᵀ [in, rank]
            sgemm(transposeA: false, transposeB: true, m: target.rows, n: rank, k: target.columns, alpha: scale,
                  a: dW, lda: target.columns, b: values.pointer + target.a, ldb: target.columns,
                  beta: 0, c: gradient.pointer + target.b, ldc: rank)
        }
        return penalty
    }

    /// The dense task vector: scale·B·A on the targets, exactly zero elsewhere.
    func taskVector(count: Int) -> FloatBuffer {
        let result = FloatBuffer(count: count)
        for target in targets {
            computeDelta(target)
            (result.pointer + target.offset).update(from: delta.pointer, count: target.rows * target.columns)
        }
        return result
    }
}
