// Layers: forward and backward kernels of the dense layers (Linear, ReLU, GELU, QuickGELU).
//
// Legend: B batch rows, I input features, O output features.
// Argument order everywhere: outputs, inputs, weights, sizes. Backward takes the output
// gradient first and *adds* into parameter and input gradients, so residual paths and
// accumulation need no special cases and zeroing is explicit.
import Foundation
import Kernels

public enum Linear {
    /// out[B, O] = inp[B, I] · weight[O, I]ᵀ + bias[O]. Rows of `inp` lie `inputStride` floats
    /// apart and rows of `out` `outputStride` apart (default: packed), so that a layer can read or
    /// write a column block or every k-th row of a larger matrix in place.
    public static func forward(
        out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, rows: Int, inputs: Int, outputs: Int,
        inputStride: Int? = nil, outputStride: Int? = nil
    ) {
        let ldInput = inputStride ?? inputs, ldOutput = outputStride ?? outputs
        if let bias {
            for r in 0..<rows { (out + r * ldOutput).update(from: bias, count: outputs) }
        }
        sgemm(transposeA: false, transposeB: true, m: rows, n: outputs, k: inputs,
              alpha: 1, a: inp, lda: ldInput, b: weight, ldb: inputs,
              beta: bias == nil ? 0 : 1, c: out, ldc: ldOutput)
    }

    /// Tangent of the forward pass (JVP): ẏ = ẋ · Wᵀ + x · Ẇᵀ + ḃ, with ẋ nil when the input is
    /// constant (the network's input).
    public static func forwardTangent(
        outTangent: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, inpTangent: UnsafePointer<Float>?,
        weight: UnsafePointer<Float>, weightTangent: UnsafePointer<Float>, biasTangent: UnsafePointer<Float>?,
        rows: Int, inputs: Int, outputs: Int
    ) {
        forward(out: outTangent, inp: inp, weight: weightTangent, bias: biasTangent, rows: rows, inputs: inputs, outputs: outputs)
        if let inpTangent {
            sgemm(transposeA: false, transposeB: true, m: rows, n: outputs, k: inputs,
                  alpha: 1, a: inpTangent, lda: inputs, b: weight, ldb: inputs, beta: 1, c: outTangent, ldc: outputs)
        }
    }

    /// dinp[B, I] += dout[B, O] · weight[O, I];  dweight[O, I] += doutᵀ · inp;  dbias[O] += Σ_B dout.
    /// With `accumulateInput` false, dinp is overwritten (no zeroing pass before). Rows of `inp`
    /// and `dinp` lie `inputStride` floats apart, rows of `dout` `outputStride` (as in `forward`).
    public static func backward(
        dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
        dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        rows: Int, inputs: Int, outputs: Int, accumulateInput: Bool = true,
        inputStride: Int? = nil, outputStride: Int? = nil
    ) {
        let ldInput = inputStride ?? inputs, ldOutput = outputStride ?? outputs
        if let dinp {
            sgemm(transposeA: false, transposeB: false, m: rows, n: inputs, k: outputs,
                  alpha: 1, a: dout, lda: ldOutput, b: weight, ldb: inputs, beta: accumulateInput ? 1 : 0,
                  c: dinp, ldc: ldInput)
        }
        if let dweight {
            sgemm(transposeA: true, transposeB: false, m: outputs, n: inputs, k: rows,
                  alpha: 1, a: dout, lda: ldOutput, b: inp, ldb: ldInput, beta: 1, c: dweight, ldc: inputs)
        }
        if let dbias {
            for r in 0..<rows {
                ElementWise.add(dbias, dout + r * ldOutput, count: outputs)
            }
        }
    }
}

public enum Activation: String, Sendable, Codable, CaseIterable {
    case relu
    case gelu

    /// out = act(inp), element-wise over `count` values.
    public func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        switch self {
        case .relu: ReLU.forward(out: out, inp: inp, count: count)
        case .gelu: GELU.forward(out: out, inp: inp, count: count)
        }
    }

    /// Tangent (JVP): outTangent = act'(inp) ⊙ inpTangent.
    public func forwardTangent(outTangent: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                               inpTangent: UnsafePointer<Float>, count: Int) {
        outTangent.update(repeating: 0, count: count)
        backward(dinp: outTangent, dout: inpTangent, inp: inp, count: count)
    }

    /// dinp += act'(inp) ⊙ dout.
    public func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        switch self {
        case .relu: ReLU.backward(dinp: dinp, dout: dout, inp: inp, count: count)
        case .gelu: GELU.backward(dinp: dinp, dout: dout, inp: inp, count: count)
        }
    }
}

public enum ReLU {
    public static func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        let zero = SIMD16<Float>(repeating: 0)
        var i = 0
        while i + 16 <= count {
            let x = UnsafeRawPointer(inp + i).loadUnaligned(as: SIMD16<Float>.self)
            // A masked select: the generic pointwiseMax is not inlined and costs a call per vector.
            UnsafeMutableRawPointer(out + i).storeBytes(of: x.replacing(with: zero, where: x .< zero), as: SIMD16<Float>.self)
            i += 16
        }
        while i < count {
            out[i] = max(inp[i], 0)
            i += 1
        }
    }

    public static func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        let zero = SIMD16<Float>(repeating: 0)
        var i = 0
        while i + 16 <= count {
            let x = UnsafeRawPointer(inp + i).loadUnaligned(as: SIMD16<Float>.self)
            let g = UnsafeRawPointer(dout + i).loadUnaligned(as: SIMD16<Float>.self)
            let d = UnsafeRawPointer(dinp + i).loadUnaligned(as: SIMD16<Float>.self)
            let masked = zero.replacing(with: g, where: x .> zero)
            UnsafeMutableRawPointer(dinp + i).storeBytes(of: d + masked, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count {
            if inp[i] > 0 { dinp[i] += dout[i] }
            i += 1
        }
    }
}

/// GELU with the exact erf form, x·Φ(x), as PyTorch's default `nn.GELU()`; computed by the C
/// kernels (Kernels.c), vectorised for the CPU's width, erf and exp within 5e-7 of libm's.
public enum GELU {
    public static func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        of_gelu_forward(out, inp, count)
    }

    /// out = GELU(x) and slope = GELU'(x) (bitwise what `backward` multiplies by), one exp for both.
    public static func forward(out: UnsafeMutablePointer<Float>, slope: UnsafeMutablePointer<Float>,
                               inp: UnsafePointer<Float>, count: Int) {
        of_gelu_forward_slope(out, slope, inp, count)
    }

    /// dinp += dout ⊙ (Φ(x) + x·φ(x)); with `accumulate` false, dinp is overwritten instead.
    public static func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                                count: Int, accumulate: Bool = true) {
        of_gelu_backward(dinp, dout, inp, count, accumulate ? 1 : 0)
    }
}

/// QuickGELU, x·σ(1.702x): the activation of OpenAI's CLIP weights (open_clip's `QuickGELU`).
public enum QuickGELU {
    /// out = QuickGELU(x) and slope = its derivative σ + 1.702·x·σ·(1 − σ), one exp for both.
    public static func forward(out: UnsafeMutablePointer<Float>, slope: UnsafeMutablePointer<Float>,
                               inp: UnsafePointer<Float>, count: Int) {
        of_quick_gelu_forward_slope(out, slope, inp, count)
    }
}

/// The activation inside a transformer block's MLP (`activation:` of a clip_vit model).
public enum TransformerActivation: String, Sendable, Codable, CaseIterable {
    case gelu
    case quickGELU = "quick_gelu"

    /// out = act(inp) and slope = act'(inp), which backward and the tangent multiply by.
    public func forward(out: UnsafeMutablePointer<Float>, slope: UnsafeMutablePointer<Float>,
                        inp: UnsafePointer<Float>, count: Int) {
        switch self {
        case .gelu: GELU.forward(out: out, slope: slope, inp: inp, count: count)
        case .quickGELU: QuickGELU.forward(out: out, slope: slope, inp: inp, count: count)
        }
    }
}

/// Element-wise kernels over flat buffers (the C kernels where a loop is the whole job).
public enum ElementWise {
    /// y += x
    public static func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        of_add(y, x, count)
    }

    /// y += a · x
    public static func axpy(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, count: Int) {
        of_axpy(y, a, x, count)
    }

    /// out = a - b
    public static func subtract(_ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
        of_subtract(out, a, b, count)
    }

    /// out = a ⊙ b
    public static func multiply(_ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                count: Int) {
        of_multiply(out, a, b, count)
    }

    /// x *= a
    public static func scale(_ x: UnsafeMutablePointer<Float>, _ a: Float, count: Int) {
        of_scale(x, a, count)
    }

    /// The index of the first infinite or NaN value, nil when all are finite.
    public static func firstNonFinite(_ x: UnsafePointer<Float>, count: Int) -> Int? {
        let index = of_first_nonfinite(x, count)
        return index < 0 ? nil : index
    }

    /// Σ x² accumulated in Double (used for norms that decide clipping).
    public static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
        var accumulator = SIMD16<Float>(repeating: 0)
        var total = 0.0
        var i = 0
        while i + 16 <= count {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            accumulator += v * v
            i += 16
            // Flush into Double every 4096 values so long vectors do not lose precision.
            if i & 4095 == 0 {
                total += Double(accumulator.sum())
                accumulator = .init(repeating: 0)
            }
        }
        total += Double(accumulator.sum())
        while i < count {
            total += Double(x[i]) * Double(x[i])
            i += 1
        }
        return total
    }
}
