// SIMDMath: 8-lane exp and erf for the element-wise kernels (GELU), accurate to float precision.

public enum SIMDMath {
    public typealias Vector = SIMD8<Float>

    /// e^x: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two parts for exactness), a degree-6
    /// Taylor polynomial for e^r (relative error < 2e-7), and 2^n built in the exponent bits.
    /// Arguments are clamped to [−87, 88], where float neither overflows nor goes subnormal.
    @inline(__always)
    public static func exp(_ x: Vector) -> Vector {
        // Masked selects rather than clamped(): the generic pointwise min/max are not inlined.
        var clamped = x.replacing(with: -87, where: x .< -87)
        clamped.replace(with: 88, where: clamped .> 88)
        // Round to nearest by adding 1.5·2²³: the sum's low mantissa bits then hold n itself,
        // which avoids the per-lane float→int conversion calls of the generic SIMD initialisers.
        let shifted = clamped * 1.442695040888963 + 12582912
        let n = shifted - 12582912
        let r = clamped - n * 0.693359375 + n * 2.12194440e-4
        var p = Vector(repeating: 1.0 / 720)
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let integer = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        let exponent = (integer &+ 127) &<< 23
        return p * unsafeBitCast(exponent, to: Vector.self)
    }

    /// erf(x) by Abramowitz & Stegun 7.1.26 on |x| (formula error ≤ 1.5e-7, ≤ 5e-7 in float), odd symmetry.
    @inline(__always)
    public static func erf(_ x: Vector) -> Vector {
        let magnitude = x.replacing(with: -x, where: x .< 0)
        let t = 1 / (1 + 0.3275911 * magnitude)
        var p = Vector(repeating: 1.061405429)
        p = p * t - 1.453152027
        p = p * t + 1.421413741
        p = p * t - 0.284496736
        p = p * t + 0.254829592
        let value = 1 - p * t * exp(-(magnitude * magnitude))
        return value.replacing(with: -value, where: x .< 0)
    }
}
