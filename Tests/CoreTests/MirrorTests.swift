// MirrorTests: the tiled copy of a Gram matrix's upper triangle onto its lower one (after ssyrk)
// equals the element-by-element definition for every size, tile edges included.
import XCTest
@testable import Core

final class MirrorTests: XCTestCase {
    func testTiledMirrorCopiesTheUpperTriangleExactly() {
        for n in [0, 1, 2, 5, 31, 32, 33, 64, 70, 257] {
            var matrix = (0..<(n * n)).map { Float($0) + 0.5 }
            let original = matrix
            matrix.withUnsafeMutableBufferPointer { mirrorUpperTriangle($0.baseAddress!, n: n) }
            for row in 0..<n {
                for column in 0..<n {
                    let expected = column >= row ? original[row * n + column] : original[column * n + row]
                    XCTAssertEqual(matrix[row * n + column], expected, "n \(n), [\(row), \(column)]")
                }
            }
        }
    }
}
