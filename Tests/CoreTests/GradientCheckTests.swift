// GradientCheckTests: analytic gradients of every layer, the MLP, the loss and OrthoReg against
// central finite differences of independent Float64 reference implementations.
import Foundation
import XCTest
@testable import Core

/// Float64 re-implementations of the forward passes, written as plain loops.
private enum Reference {
    static func activation(_ x: Double, _ kind: Activation) -> Double {
        switch kind {
        case .relu: return max(x, 0)
        case .gelu: return 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
        }
    }

    /// Mean cross-entropy with label smoothing ε.
    static func crossEntropy(_ logits: [Double], labels: [Int], classes: Int, smoothing: Double) -> Double {
        let batch = labels.count
        var total = 0.0
        for b in 0..<batch {
            let row = Array(logits[(b * classes)..<((b + 1) * classes)])
            let m = row.max()!
            let logSum = m + log(row.map { exp($0 - m) }.reduce(0, +))
            for c in 0..<classes {
                let q = (c == labels[b] ? 1 - smoothing : 0) + smoothing / Double(classes)
                total -= q * (row[c] - logSum)
            }
        }
        return total / Double(batch)
    }

    /// MLP (layers.i Linear + activation) then head, returning the loss.
    static func mlpLoss(parameters: [Double], head: [Double], input: [Double], labels: [Int],
                        configuration: MLPConfiguration, classes: Int, smoothing: Double) -> Double {
        let batch = labels.count
        var x = input
        var fanIn = configuration.inputCount
        var offset = 0
        for width in configuration.hidden {
            var y = [Double](repeating: 0, count: batch * width)
            for b in 0..<batch {
                for o in 0..<width {
                    var s = parameters[offset + width * fanIn + o]
                    for i in 0..<fanIn { s += x[b * fanIn + i] * parameters[offset + o * fanIn + i] }
                    y[b * width + o] = activation(s, configuration.activation)
                }
            }
            offset += width * fanIn + width
            x = y
            fanIn = width
        }
        var logits = [Double](repeating: 0, count: batch * classes)
        for b in 0..<batch {
            for c in 0..<classes {
                var s = head[classes * fanIn + c]
                for i in 0..<fanIn { s += x[b * fanIn + i] * head[c * fanIn + i] }
                logits[b * classes + c] = s
            }
        }
        return crossEntropy(logits, labels: labels, classes: classes, smoothing: smoothing)
    }
}

private func randomValues(_ count: Int, scale: Double, random: inout RandomStream) -> [Float] {
    (0..<count).map { _ in Float(random.nextGaussian() * scale) }
}

final class GradientCheckTests: XCTestCase {
    private func checkMLP(activation: Activation, smoothing: Float, file: StaticString = #filePath, line: UInt = #line) {
        let configuration = MLPConfiguration(inputCount: 7, hidden: [6, 5], activation: activation)
        let batch = 4
        let classes = 3
        var random = RandomStream(seed: 42, label: "mlp-\(activation)")
        let backbone = MLPBackbone(configuration, maxBatch: batch)
        let parameters = FloatBuffer(count: backbone.layout.totalCount)
        parameters.copy(from: randomValues(parameters.count, scale: 0.5, random: &random))
        let head = ClassificationHead(classes: classes, featureCount: 5)
        head.parameters.copy(from: randomValues(head.parameters.count, scale: 0.5, random: &random))
        let input = randomValues(batch * 7, scale: 1, random: &random)
        let labels: [Int32] = [0, 2, 1, 2]

        // Analytic gradients through forward + backward.
        let parameterGradient = FloatBuffer(count: parameters.count)
        let headGradient = FloatBuffer(count: head.parameters.count)
        let inputGradient = FloatBuffer(count: input.count)
        let logits = FloatBuffer(count: batch * classes)
        let logitGradient = FloatBuffer(count: batch * classes)
        let featureGradient = FloatBuffer(count: batch * 5)
        input.withUnsafeBufferPointer { inputPointer in
            let features = backbone.forward(parameters: parameters.pointer, inputs: inputPointer.baseAddress!, batch: batch)
            head.forward(logits: logits.pointer, features: features, batch: batch)
            labels.withUnsafeBufferPointer {
                _ = CrossEntropy.forwardBackward(logitGradient: logitGradient.pointer, logits: logits.pointer,
                                                 labels: $0.baseAddress!, batch: batch, classes: classes,
                                                 labelSmoothing: smoothing)
            }
            head.backward(featureGradient: featureGradient.pointer, parameterGradient: headGradient.pointer,
                          logitGradient: logitGradient.pointer, features: features, batch: batch)
            backbone.backward(featureGradient: featureGradient.pointer, parameters: parameters.pointer,
                              inputs: inputPointer.baseAddress!, batch: batch,
                              parameterGradient: parameterGradient.pointer, inputGradient: inputGradient.pointer)
        }

        let p = parameters.array.map(Double.init)
        let h = head.parameters.array.map(Double.init)
        let x = input.map(Double.init)
        let y = labels.map(Int.init)
        let s = Double(smoothing)
        let numericParameters = numericGradient(p) {
            Reference.mlpLoss(parameters: $0, head: h, input: x, labels: y, configuration: configuration, classes: classes, smoothing: s)
        }
        let numericHead = numericGradient(h) {
            Reference.mlpLoss(parameters: p, head: $0, input: x, labels: y, configuration: configuration, classes: classes, smoothing: s)
        }
        let numericInput = numericGradient(x) {
            Reference.mlpLoss(parameters: p, head: h, input: $0, labels: y, configuration: configuration, classes: classes, smoothing: s)
        }
        checkTensor("backbone gradient (\(activation))", parameterGradient.array, numericParameters, relative: 1e-3, absolute: 1e-5, file: file, line: line)
        checkTensor("head gradient (\(activation))", headGradient.array, numericHead, relative: 1e-3, absolute: 1e-5, file: file, line: line)
        checkTensor("input gradient (\(activation))", inputGradient.array, numericInput, relative: 1e-3, absolute: 1e-5, file: file, line: line)
    }

    func testMLPWithReLUMatchesFiniteDifferences() {
        checkMLP(activation: .relu, smoothing: 0)
    }

    func testMLPWithGELUAndLabelSmoothingMatchesFiniteDifferences() {
        checkMLP(activation: .gelu, smoothing: 0.1)
    }

    func testLinearLayerGradients() {
        // loss = Σ c ⊙ Linear(x): dL/d(out) = c, so every gradient is checkable in isolation.
        let rows = 3, inputs = 5, outputs = 4
        var random = RandomStream(seed: 7)
        let x = randomValues(rows * inputs, scale: 1, random: &random)
        let w = randomValues(outputs * inputs, scale: 1, random: &random)
        let b = randomValues(outputs, scale: 1, random: &random)
        let c = randomValues(rows * outputs, scale: 1, random: &random)
        func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {
            var total = 0.0
            for r in 0..<rows {
                for o in 0..<outputs {
                    var s = b[o]
                    for i in 0..<inputs { s += x[r * inputs + i] * w[o * inputs + i] }
                    total += Double(c[r * outputs + o]) * s
                }
            }
            return total
        }
        var out = [Float](repeating: 0, count: rows * outputs)
        var dx = [Float](repeating: 0.5, count: rows * inputs)  // backward adds: start non-zero
        var dw = [Float](repeating: 0, count: outputs * inputs)
        var db = [Float](repeating: 0, count: outputs)
        Linear.forward(out: &out, inp: x, weight: w, bias: b, rows: rows, inputs: inputs, outputs: outputs)
        Linear.backward(dinp: &dx, dweight: &dw, dbias: &db, dout: c, inp: x, weight: w,
                        rows: rows, inputs: inputs, outputs: outputs)
        let xd = x.map(Double.init), wd = w.map(Double.init), bd = b.map(Double.init)
        checkTensor("dx", dx, numericGradient(xd) { loss($0, wd, bd) }.map { $0 + 0.5 }, relative: 1e-4, absolute: 1e-4)
        checkTensor("dw", dw, numericGradient(wd) { loss(xd, $0, bd) }, relative: 1e-4, absolute: 1e-4)
        checkTensor("db", db, numericGradient(bd) { loss(xd, wd, $0) }, relative: 1e-4, absolute: 1e-4)
    }

    func testActivationGradients() {
        var random = RandomStream(seed: 11)
        let x = randomValues(37, scale: 1.5, random: &random)  // 37: exercises SIMD and tail loops
        for kind in Activation.allCases {
            var dx = [Float](repeating: 0, count: x.count)
            let upstream = [Float](repeating: 1, count: x.count)
            kind.backward(dinp: &dx, dout: upstream, inp: x, count: x.count)
            let numeric = x.map { value -> Double in
                let v = Double(value), h = 1e-6
                return (Reference.activation(v + h, kind) - Reference.activation(v - h, kind)) / (2 * h)
            }
            checkTensor("\(kind) derivative", dx, numeric, relative: 1e-4, absolute: 1e-5)
            var y = [Float](repeating: 0, count: x.count)
            kind.forward(out: &y, inp: x, count: x.count)
            checkTensor("\(kind) forward", y, x.map { Reference.activation(Double($0), kind) }, relative: 1e-5, absolute: 1e-6)
        }
    }

    func testOrthoRegGradientBothFormsBothOrientations() {
        for (rows, columns) in [(7, 4), (3, 6), (5, 5)] {
            for form in OrthoRegForm.allCases {
                var random = RandomStream(seed: UInt64(rows * 100 + columns), label: form.rawValue)
                let delta = randomValues(rows * columns, scale: 0.6, random: &random)
                let k = min(rows, columns)
                var gram = [Float](repeating: 0, count: k * k)
                var gradient = [Float](repeating: 0, count: rows * columns)
                let value = OrthoRegularizer.penaltyAndGradient(delta: delta, rows: rows, columns: columns, form: form,
                                                                gram: &gram, gradientOut: &gradient)
                let d = delta.map(Double.init)
                let expectedValue = OrthoRegReference.value(d, rows: rows, columns: columns, form: form)
                XCTAssertEqual(value, expectedValue, accuracy: 1e-4 * max(1, expectedValue), "\(form) \(rows)x\(columns) value")
                let numeric = numericGradient(d) { OrthoRegReference.value($0, rows: rows, columns: columns, form: form) }
                checkTensor("OrthoReg \(form) \(rows)x\(columns) gradient", gradient, numeric, relative: 1e-3, absolute: 1e-4)
            }
        }
    }

    func testOrthoRegAtZeroUpdate() {
        // At ΔW = 0: G − I = −I, so the plain norm is √k with zero gradient, the squared form k.
        let delta = [Float](repeating: 0, count: 12)
        var gram = [Float](repeating: 0, count: 9)
        var gradient = [Float](repeating: 1, count: 12)
        let plain = OrthoRegularizer.penaltyAndGradient(delta: delta, rows: 4, columns: 3, form: .frobenius,
                                                        gram: &gram, gradientOut: &gradient)
        XCTAssertEqual(plain, 3.0.squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(gradient, [Float](repeating: 0, count: 12))
        let squared = OrthoRegularizer.penaltyAndGradient(delta: delta, rows: 4, columns: 3, form: .squared,
                                                          gram: &gram, gradientOut: nil)
        XCTAssertEqual(squared, 3, accuracy: 1e-6)
        // The decorrelation and L2 forms are 0 at θ0 with a zero gradient: they never push ΔW away from 0.
        for form in [OrthoRegForm.offdiagonal, .l2] {
            gradient = [Float](repeating: 1, count: 12)
            let value = OrthoRegularizer.penaltyAndGradient(delta: delta, rows: 4, columns: 3, form: form,
                                                            gram: &gram, gradientOut: &gradient)
            XCTAssertEqual(value, 0, "\(form)")
            XCTAssertEqual(gradient, [Float](repeating: 0, count: 12), "\(form)")
        }
    }

    func testOffDiagonalFormIgnoresColumnNorms() {
        // ΔW with orthogonal columns of any lengths has no off-diagonal Gram entries: R = 0 and no
        // gradient, where the plain form still pulls the norms toward 1.
        let delta: [Float] = [3, 0, 0, 0.5, 0, 0]  // 3×2, columns (3, 0, 0) and (0, 0.5, 0)
        var gram = [Float](repeating: 0, count: 4)
        var gradient = [Float](repeating: 1, count: 6)
        let value = OrthoRegularizer.penaltyAndGradient(delta: delta, rows: 3, columns: 2, form: .offdiagonal,
                                                        gram: &gram, gradientOut: &gradient)
        XCTAssertEqual(value, 0)
        XCTAssertEqual(gradient, [Float](repeating: 0, count: 6))
        let plain = OrthoRegularizer.penaltyAndGradient(delta: delta, rows: 3, columns: 2, form: .frobenius,
                                                        gram: &gram, gradientOut: nil)
        XCTAssertEqual(plain, (64.0 + 0.5625).squareRoot(), accuracy: 1e-5)
    }

    func testOrthoRegularizerAddsLambdaTimesGradientOnlyToItsMatrices() {
        // Into a gradient that already holds the loss's (here 0.3 everywhere): every form, tall and wide.
        for (rows, columns) in [(4, 3), (3, 4)] {
            for form in OrthoRegForm.allCases {
                let weights = rows * columns
                let layout = ParameterLayout([ParameterSpec(name: "w", shape: [rows, columns]), ParameterSpec(name: "b", shape: [4])])
                var random = RandomStream(seed: 3, label: form.rawValue)
                let base = FloatBuffer(randomValues(weights + 4, scale: 1, random: &random))
                let parameters = FloatBuffer(randomValues(weights + 4, scale: 1, random: &random))
                let gradient = FloatBuffer([Float](repeating: 0.3, count: weights + 4))
                let regularizer = OrthoRegularizer(settings: OrthoRegSettings(lambda: 2.5, form: form), layout: layout,
                                                   parameterIndices: [0])
                let value = regularizer.apply(parameters: parameters.pointer, base: base.pointer, gradient: gradient.pointer)
                let delta = (0..<weights).map { Double(parameters[$0]) - Double(base[$0]) }
                let expected = OrthoRegReference.value(delta, rows: rows, columns: columns, form: form)
                XCTAssertEqual(value, expected, accuracy: 1e-4 * max(1, expected), "\(form) \(rows)x\(columns)")
                let numeric = numericGradient(delta) { 2.5 * OrthoRegReference.value($0, rows: rows, columns: columns, form: form) }
                checkTensor("λ·∇R \(form) \(rows)x\(columns)", gradient.array[0..<weights].map { $0 - 0.3 }, numeric,
                            relative: 1e-3, absolute: 1e-4)
                XCTAssertEqual(Array(gradient.array[weights...]), [0.3, 0.3, 0.3, 0.3], "bias must not be regularised")
            }
        }
    }

    func testCrossEntropyGradient() {
        var random = RandomStream(seed: 5)
        let batch = 5, classes = 4
        let logits = randomValues(batch * classes, scale: 2, random: &random)
        let labels: [Int32] = [0, 3, 1, 1, 2]
        for smoothing in [Float(0), 0.2] {
            var gradient = [Float](repeating: 0, count: logits.count)
            let loss = CrossEntropy.forwardBackward(logitGradient: &gradient, logits: logits, labels: labels,
                                                    batch: batch, classes: classes, labelSmoothing: smoothing)
            let y = labels.map(Int.init)
            let expected = Reference.crossEntropy(logits.map(Double.init), labels: y, classes: classes, smoothing: Double(smoothing))
            XCTAssertEqual(loss, expected, accuracy: 1e-6)
            let numeric = numericGradient(logits.map(Double.init)) {
                Reference.crossEntropy($0, labels: y, classes: classes, smoothing: Double(smoothing))
            }
            checkTensor("cross-entropy gradient ε=\(smoothing)", gradient, numeric, relative: 1e-4, absolute: 1e-6)
        }
    }
}
