// OrthoRegReference: the OrthoReg penalty of one ΔW [m, n] in Float64, straight from its formula
// (G the smaller Gram matrix), against which the kernels and the analyses are checked.
@testable import Core

enum OrthoRegReference {
    /// frobenius ‖G − I‖_F, squared ‖G − I‖²_F, offdiagonal ‖G − diag G‖_F, l2 ‖ΔW‖²_F.
    static func value(_ delta: [Double], rows m: Int, columns n: Int, form: OrthoRegForm) -> Double {
        if form == .l2 { return delta.map { $0 * $0 }.reduce(0, +) }
        let k = min(m, n)
        var sum = 0.0
        for i in 0..<k {
            for j in 0..<k {
                var g = 0.0
                if m >= n {
                    for r in 0..<m { g += delta[r * n + i] * delta[r * n + j] }
                } else {
                    for c in 0..<n { g += delta[i * n + c] * delta[j * n + c] }
                }
                if i == j { g = form == .offdiagonal ? 0 : g - 1 }
                sum += g * g
            }
        }
        return form == .squared ? sum : sum.squareRoot()
    }
}
