// BLASCheck: a quick sgemm speed measurement for `orthofuse doctor`.
import Core
import Foundation

enum BLASCheck {
    static func sgemmGigaflops(size n: Int) -> Double {
        BLASRuntime.setThreads(1)
        let a = FloatBuffer([Float](repeating: 0.5, count: n * n))
        let b = FloatBuffer([Float](repeating: 0.25, count: n * n))
        let c = FloatBuffer(count: n * n)
        func multiply() {
            sgemm(transposeA: false, transposeB: false, m: n, n: n, k: n, alpha: 1, a: a.pointer, lda: n,
                  b: b.pointer, ldb: n, beta: 0, c: c.pointer, ldc: n)
        }
        multiply()
        let repeats = 10
        let start = Date()
        for _ in 0..<repeats { multiply() }
        let seconds = Date().timeIntervalSince(start)
        return 2 * Double(n * n * n) * Double(repeats) / seconds / 1e9
    }
}
