// TensorCheck: comparison helpers that fail loudly, with the worst element and sample values.
import XCTest

/// Asserts |actual − expected| ≤ absolute + relative·|expected| element-wise; on failure reports
/// the worst index, both values there, and the first few values side by side.
func checkTensor(
    _ name: String, _ actual: [Float], _ expected: [Double], relative: Double = 1e-4, absolute: Double = 1e-6,
    file: StaticString = #filePath, line: UInt = #line
) {
    guard actual.count == expected.count else {
        XCTFail("\(name): \(actual.count) values, expected \(expected.count)", file: file, line: line)
        return
    }
    var worst = -1
    var worstExcess = 0.0
    var maxDifference = 0.0
    for i in actual.indices {
        let difference = abs(Double(actual[i]) - expected[i])
        maxDifference = max(maxDifference, difference)
        let excess = difference - (absolute + relative * abs(expected[i]))
        if excess > worstExcess || (!actual[i].isFinite) {
            worstExcess = max(excess, worstExcess)
            worst = i
        }
    }
    if worst >= 0 {
        let sample = (0..<min(4, actual.count)).map { "\(actual[$0]) vs \(expected[$0])" }.joined(separator: ", ")
        XCTFail("\(name): max |diff| \(maxDifference); worst at [\(worst)]: \(actual[worst]) vs \(expected[worst]); first: \(sample)",
                file: file, line: line)
    }
}

func checkTensor(
    _ name: String, _ actual: [Float], _ expected: [Float], relative: Double = 1e-4, absolute: Double = 1e-6,
    file: StaticString = #filePath, line: UInt = #line
) {
    checkTensor(name, actual, expected.map(Double.init), relative: relative, absolute: absolute, file: file, line: line)
}

/// Largest relative error max|a − e| / max|e| (what the parity notes report).
func maxRelativeError(_ actual: [Float], _ expected: [Float]) -> Double {
    let scale = expected.map { abs(Double($0)) }.max() ?? 0
    let difference = zip(actual, expected).map { abs(Double($0) - Double($1)) }.max() ?? 0
    return scale > 0 ? difference / scale : difference
}

/// ∂f/∂x_i by central differences with step h, in Float64 (against which Float32 analytic
/// gradients are checked).
func numericGradient(_ x: [Double], h: Double = 1e-6, _ f: ([Double]) -> Double) -> [Double] {
    var gradient = [Double](repeating: 0, count: x.count)
    var probe = x
    for i in x.indices {
        probe[i] = x[i] + h
        let up = f(probe)
        probe[i] = x[i] - h
        let down = f(probe)
        probe[i] = x[i]
        gradient[i] = (up - down) / (2 * h)
    }
    return gradient
}
