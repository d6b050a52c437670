// OptimizerTests: AdamW, SGD, the schedule and clipping against their formulas in Float64.
import Foundation
import Kernels
import XCTest
@testable import Core

final class OptimizerTests: XCTestCase {
    func testAdamWMatchesFormulaOverSeveralSteps() {
        let lr = 0.01, wd = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8
        let optimizer = Optimizer(settings: .adamw(learningRate: Float(lr), weightDecay: Float(wd)), parameterCount: 4)
        let parameters = FloatBuffer([0.5, -1, 2, 3])
        var p = parameters.array.map(Double.init)
        var m = [Double](repeating: 0, count: 4), v = m
        let gradients: [[Float]] = [[0.1, -0.2, 0.3, 9], [0.05, 0.1, -0.4, 9], [-0.3, 0.2, 0.1, 9]]
        for (t, g) in gradients.enumerated() {
            // Only indices 0..<3 train; index 3 must stay put.
            optimizer.step(parameters: parameters.pointer, gradient: g, rate: Float(lr), ranges: [0..<3])
            for i in 0..<3 {
                p[i] *= 1 - lr * wd
                m[i] = b1 * m[i] + (1 - b1) * Double(g[i])
                v[i] = b2 * v[i] + (1 - b2) * Double(g[i]) * Double(g[i])
                let mHat = m[i] / (1 - pow(b1, Double(t + 1)))
                let vHat = v[i] / (1 - pow(b2, Double(t + 1)))
                p[i] -= lr * mHat / (vHat.squareRoot() + eps)
            }
        }
        checkTensor("AdamW parameters", parameters.array, p, relative: 1e-5, absolute: 1e-6)
        XCTAssertEqual(parameters[3], 3, "frozen entries are untouched")
    }

    func testSGDWithMomentumMatchesTorchRule() {
        let optimizer = Optimizer(settings: OptimizerSettings(kind: .sgd(momentum: 0.9), learningRate: 0.1, weightDecay: 0.01),
                                  parameterCount: 2)
        let parameters = FloatBuffer([1, -2])
        var p = [1.0, -2.0]
        var buffer = [0.0, 0.0]
        for (t, g) in [[Float(0.5), -0.5], [0.25, 1]].enumerated() {
            optimizer.step(parameters: parameters.pointer, gradient: g, rate: 0.1, ranges: [0..<2])
            for i in 0..<2 {
                let d = Double(g[i]) + 0.01 * p[i]
                buffer[i] = t == 0 ? d : 0.9 * buffer[i] + d
                p[i] -= 0.1 * buffer[i]
            }
        }
        checkTensor("SGD parameters", parameters.array, p, relative: 1e-6)
    }

    func testWarmupThenCosine() {
        let schedule = LearningRateSchedule(baseRate: 1, warmupSteps: 10, totalSteps: 110, decay: .cosine)
        XCTAssertEqual(schedule.rate(at: 0), 0.1, accuracy: 1e-7)
        XCTAssertEqual(schedule.rate(at: 9), 1, accuracy: 1e-7)
        XCTAssertEqual(schedule.rate(at: 10), 1, accuracy: 1e-7)
        XCTAssertEqual(schedule.rate(at: 60), 0.5, accuracy: 1e-6)
        XCTAssertEqual(schedule.rate(at: 109), Float(0.5 * (1 + cos(Double.pi * 99 / 100))), accuracy: 1e-6)
        XCTAssertEqual(LearningRateSchedule(baseRate: 2, totalSteps: 5).rate(at: 4), 2)
    }

    func testGradientClippingScalesToMaxNorm() {
        let gradient = FloatBuffer([3, 4, 100])
        let norm = GradientClipping.clip(gradient.pointer, ranges: [0..<2], maxNorm: 1)
        XCTAssertEqual(norm, 5, accuracy: 1e-9)
        XCTAssertEqual(gradient[0], Float(3 / (5 + 1e-6)), accuracy: 1e-6)
        XCTAssertEqual(gradient[1], Float(4 / (5 + 1e-6)), accuracy: 1e-6)
        XCTAssertEqual(gradient[2], 100, "outside the clipped ranges")
        let small = FloatBuffer([0.3, 0.4])
        GradientClipping.clip(small.pointer, ranges: [0..<2], maxNorm: 1)
        XCTAssertEqual(small.array, [0.3, 0.4], "below the threshold nothing changes")
    }

    func testTaskArithmeticIsBasePlusAlphaTimesSum() {
        var random = RandomStream(seed: 9)
        let base = FloatBuffer((0..<33).map { _ in Float(random.nextGaussian()) })
        let vectors = (0..<3).map { _ in FloatBuffer((0..<33).map { _ in Float(random.nextGaussian()) }) }
        let merged = FloatBuffer(count: 33)
        TaskArithmetic.merge(base: base, taskVectorSum: TaskVector.sum(vectors, count: 33), alpha: 0.35, into: merged)
        let expected = (0..<33).map { i in
            Double(base[i]) + 0.35 * vectors.map { Double($0[i]) }.reduce(0, +)
        }
        checkTensor("θ0 + αΣτ", merged.array, expected, relative: 1e-6, absolute: 1e-6)
        let difference = TaskVector.difference(finetuned: merged, base: base)
        checkTensor("τ = θ − θ0", difference.array, (0..<33).map { Double(merged[$0]) - Double(base[$0]) }, relative: 1e-6)
    }

    func testRandomStreamsAreDeterministicAndLabelled() {
        var a = RandomStream(seed: 1993, label: "mnist")
        var b = RandomStream(seed: 1993, label: "mnist")
        var c = RandomStream(seed: 1993, label: "fashion")
        let first = (0..<5).map { _ in a.next() }
        XCTAssertEqual(first, (0..<5).map { _ in b.next() })
        XCTAssertNotEqual(first, (0..<5).map { _ in c.next() })
        var d = RandomStream(seed: 5)
        let permutation = d.permutation(100)
        XCTAssertEqual(permutation.sorted(), Array(0..<100))
        var e = RandomStream(seed: 6)
        let draws = (0..<10_000).map { _ in e.nextInt(below: 10) }
        for value in 0..<10 {
            XCTAssertEqual(Double(draws.filter { $0 == value }.count), 1000, accuracy: 150)
        }
    }
}

final class KernelMathTests: XCTestCase {
    /// The exp and erf inside the C kernels (GELU, softmax) against libm in Double.
    func testExpAndErfAgainstLibm() {
        var worstExp = 0.0, worstErf = 0.0
        var x: Float = -20
        while x <= 20 {
            let v = Double(x)
            worstExp = max(worstExp, abs(Double(of_exp_value(x)) - Foundation.exp(v)) / Foundation.exp(v))
            worstErf = max(worstErf, abs(Double(of_erf_value(x)) - Foundation.erf(v)))
            x += 0.0013
        }
        XCTAssertLessThan(worstExp, 3e-7, "exp relative error")
        XCTAssertLessThan(worstErf, 5e-7, "erf absolute error")
        XCTAssertEqual(of_exp_value(-200), of_exp_value(-87), "clamped below at −87")
        XCTAssertEqual(Double(of_exp_value(-87)) / Foundation.exp(-87), 1, accuracy: 3e-7)
        XCTAssertTrue(of_exp_value(0) == 1)
    }

    /// GELU's forward and slope (accumulated and overwritten) against the Double formula, over a
    /// length that leaves a tail after any vector width.
    func testGELUAgainstDoubleFormula() {
        let count = 1003
        let x = (0..<count).map { Float($0 - 501) * 0.011 }
        var out = [Float](repeating: 0, count: count)
        GELU.forward(out: &out, inp: x, count: count)
        let upstream = (0..<count).map { Float(($0 % 7) - 3) * 0.25 }
        var added = [Float](repeating: 1, count: count), overwritten = [Float](repeating: 9, count: count)
        GELU.backward(dinp: &added, dout: upstream, inp: x, count: count)
        GELU.backward(dinp: &overwritten, dout: upstream, inp: x, count: count, accumulate: false)
        for i in 0..<count {
            let v = Double(x[i])
            let cdf = 0.5 * (1 + Foundation.erf(v / 2.0.squareRoot()))
            let slope = cdf + v * Foundation.exp(-0.5 * v * v) / (2 * Double.pi).squareRoot()
            XCTAssertEqual(Double(out[i]), v * cdf, accuracy: 1e-6)
            XCTAssertEqual(Double(overwritten[i]), Double(upstream[i]) * slope, accuracy: 1e-6)
            XCTAssertEqual(Double(added[i]), 1 + Double(upstream[i]) * slope, accuracy: 1e-6)
        }
    }
}
