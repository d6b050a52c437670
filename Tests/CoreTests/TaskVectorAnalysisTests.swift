// TaskVectorAnalysisTests: each analysis against its Float64 formula, ξ on a crafted model, negation's rule.
import XCTest
@testable import Core
@testable import Reporting

final class TaskVectorAnalysisTests: XCTestCase {
    /// Two matrices, a bias, and a matrix no task changes (it must be left out per layer).
    private let layout = ParameterLayout([
        ParameterSpec(name: "a.weight", shape: [3, 4]),
        ParameterSpec(name: "a.bias", shape: [3]),
        ParameterSpec(name: "b.weight", shape: [5, 2]),
        ParameterSpec(name: "frozen.weight", shape: [2, 2]),
    ])

    /// Seeded Gaussian task vectors with some exact zeros (sign conflicts count only non-zero pairs).
    private func vectors(_ count: Int) -> [FloatBuffer] {
        (0..<count).map { task in
            var random = RandomStream(seed: 5, label: "vector\(task)")
            let vector = FloatBuffer(count: layout.totalCount)
            let frozen = layout.range(of: "frozen.weight")!
            for i in 0..<layout.totalCount where !frozen.contains(i) {
                vector[i] = random.nextDouble() < 0.2 ? 0 : Float(random.nextGaussian())
            }
            return vector
        }
    }

    private func values(_ vector: FloatBuffer, _ name: String? = nil) -> [Double] {
        let range = name.map { layout.range(of: $0)! } ?? 0..<layout.totalCount
        return range.map { Double(vector[$0]) }
    }

    private func cosine(_ a: [Double], _ b: [Double]) -> Double {
        let dot = zip(a, b).map(*).reduce(0, +)
        let na = a.map { $0 * $0 }.reduce(0, +).squareRoot(), nb = b.map { $0 * $0 }.reduce(0, +).squareRoot()
        return na > 0 && nb > 0 ? dot / (na * nb) : 0
    }

    func testCosineSignConflictAndGramDeviationMatchTheirFormulas() throws {
        let taskVectors = vectors(3)
        let names = ["x", "y", "z"]
        let analysis = try TaskVectorAnalysis(tasks: names, taskVectors: taskVectors, layout: layout)
        XCTAssertEqual(analysis.matrices, ["a.weight", "b.weight"], "2-D tensors some task changes, layout order")
        for i in 0..<3 {
            for j in 0..<3 {
                XCTAssertEqual(analysis.cosine[i][j], cosine(values(taskVectors[i]), values(taskVectors[j])), accuracy: 1e-12)
                for name in analysis.matrices {
                    XCTAssertEqual(analysis.cosinePerLayer[name]![i][j],
                                   cosine(values(taskVectors[i], name), values(taskVectors[j], name)), accuracy: 1e-12)
                }
                let a = values(taskVectors[i]), b = values(taskVectors[j])
                let both = a.indices.filter { a[$0] != 0 && b[$0] != 0 }
                let opposite = both.filter { (a[$0] > 0) != (b[$0] > 0) }
                XCTAssertEqual(analysis.signConflict[i][j], Double(opposite.count) / Double(both.count), accuracy: 1e-15)
            }
            XCTAssertEqual(analysis.cosine[i][i], 1, accuracy: 1e-12)
            XCTAssertEqual(analysis.signConflict[i][i], 0)
            for (name, shape) in [("a.weight", (3, 4)), ("b.weight", (5, 2))] {
                let expected = OrthoRegReference.value(values(taskVectors[i], name), rows: shape.0, columns: shape.1, form: .frobenius)
                XCTAssertEqual(analysis.gramDeviation[names[i]]![name]!, expected, accuracy: 1e-5 * max(1, expected))
            }
        }
        XCTAssertLessThan(analysis.signConflict[0][1], 1)
        XCTAssertGreaterThan(analysis.signConflict[0][1], 0)

        var report = RunReport(run: .init(job: "j", seed: 1, ranks: 1, finetuneMode: "full", orthoRegLambda: 0,
                                          orthoRegForm: "frobenius", blasCore: "", wallSeconds: 0, version: ""),
                               tasks: [], merges: [])
        analysis.fill(&report)
        XCTAssertEqual(report.cosineSimilarity?.tasks, names)
        XCTAssertEqual(report.orthoRegPenaltyPerLayer?["y"]?["b.weight"], analysis.gramDeviation["y"]?["b.weight"])
    }

    func testZeroVectorsAndDisjointSupports() {
        let zero = [Float](repeating: 0, count: 4)
        let a: [Float] = [1, -2, 0, 0], b: [Float] = [0, 0, 3, 4], c: [Float] = [-1, -2, 5, 0]
        func run(_ x: [Float], _ y: [Float], _ f: (UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>) -> Double) -> Double {
            x.withUnsafeBufferPointer { p in y.withUnsafeBufferPointer { q in f(p, q) } }
        }
        XCTAssertEqual(run(a, zero, TaskVectorAnalysis.cosineSimilarity), 0, "undefined angle reported as 0")
        XCTAssertEqual(run(a, b, TaskVectorAnalysis.cosineSimilarity), 0)
        XCTAssertEqual(run(a, b, TaskVectorAnalysis.signConflictRatio), 0, "no entry non-zero in both")
        // a and c share entries 0 and 1: signs differ at 0 only.
        XCTAssertEqual(run(a, c, TaskVectorAnalysis.signConflictRatio), 0.5)
        XCTAssertEqual(run(a, c, TaskVectorAnalysis.cosineSimilarity), 3 / (5.0.squareRoot() * 30.0.squareRoot()), accuracy: 1e-12)
    }

    func testSpectrumOfAKnownMatrix() throws {
        // ΔW = diag(3, 2, 0.5) · [I | 0] (3×4): singular values 3, 2, 0.5; then ‖G − I‖_F = √Σ(σ² − 1)².
        var w = [Float](repeating: 0, count: 12)
        w[0] = 3; w[5] = 2; w[10] = 0.5
        let spectrum = try w.withUnsafeBufferPointer {
            try TaskVectorAnalysis.topSingularValues($0, rows: 3, columns: 4, count: 32)
        }
        XCTAssertEqual(spectrum.count, 3)
        for (value, expected) in zip(spectrum, [3.0, 2, 0.5]) { XCTAssertEqual(value, expected, accuracy: 1e-5) }
        let top = try w.withUnsafeBufferPointer { try TaskVectorAnalysis.topSingularValues($0, rows: 3, columns: 4, count: 2) }
        XCTAssertEqual(top.count, 2, "only the largest `count`")
        let deviation = w.withUnsafeBufferPointer { TaskVectorAnalysis.gramDeviation($0, rows: 3, columns: 4) }
        XCTAssertEqual(deviation, (64 + 9 + 0.5625).squareRoot(), accuracy: 1e-5)
        // A random matrix: Σσ² = ‖W‖²_F.
        var random = RandomStream(seed: 3, label: "spectrum")
        let m = (0..<(7 * 5)).map { _ in Float(random.nextGaussian()) }
        let all = try m.withUnsafeBufferPointer { try TaskVectorAnalysis.topSingularValues($0, rows: 7, columns: 5, count: 32) }
        XCTAssertEqual(all.map { $0 * $0 }.reduce(0, +), m.map { Double($0) * Double($0) }.reduce(0, +), accuracy: 1e-4)
        XCTAssertEqual(all, all.sorted(by: >))
    }

    // MARK: ξ

    /// f(x) = ReLU(W·x + b) on 2 inputs, head = identity: the class is the larger feature.
    /// θ0: W = I, b = 0. τ1 raises b0 by 3, τ2 raises b1 by 3. Task 1's inputs (1, 0), (2, 0) keep
    /// class 0 under θ0 + α1τ1; adding α2τ2 flips (1, 0) when α2 − α1 > 1/3 and (2, 0) when
    /// α2 − α1 > 2/3. Task 2 (inputs (0, 1), (0, 2)) mirrors it, so
    /// ξ = (1{d > 1/3} + 1{d > 2/3} + 1{−d > 1/3} + 1{−d > 2/3}) / 2 with d = α2 − α1.
    func testDisentanglementErrorOfACraftedModel() {
        let backbone = MLPBackbone(MLPConfiguration(inputCount: 2, hidden: [2], activation: .relu), maxBatch: 1)
        let base = FloatBuffer([1, 0, 0, 1, 0, 0])
        let first = FloatBuffer([0, 0, 0, 0, 3, 0]), second = FloatBuffer([0, 0, 0, 0, 0, 3])
        let head = ClassificationHead(classes: 2, featureCount: 2)
        head.parameters.copy(from: [1, 0, 0, 1, 0, 0])
        let firstData = Dataset(inputs: [1, 0, 2, 0], labels: [0, 0], sampleShape: [2])
        let secondData = Dataset(inputs: [0, 1, 0, 2], labels: [1, 1], sampleShape: [2])
        let grid = [0, 0.25, 0.5, 0.75, 1]
        let xi = WeightDisentanglement.errorGrid(
            backbone: backbone, base: base,
            first: .init(taskVector: first, head: head, data: firstData),
            second: .init(taskVector: second, head: head, data: secondData), grid: grid)
        for (i, alpha1) in grid.enumerated() {
            for (j, alpha2) in grid.enumerated() {
                let d = alpha2 - alpha1
                let flips = [d > 1.0 / 3, d > 2.0 / 3, -d > 1.0 / 3, -d > 2.0 / 3].filter { $0 }.count
                XCTAssertEqual(xi[i][j], Double(flips) / 2, "ξ(\(alpha1), \(alpha2))")
            }
        }
        XCTAssertEqual(xi[0][4], 1, "α2 = 1 alone flips both inputs of task 1")
        XCTAssertEqual(WeightDisentanglement.disagreement([0, 1, 2, 3], [0, 1, 0, 0]), 0.5)
    }

    // MARK: Negation

    func testNegationPicksTheLowestTargetAccuracyThatKeepsTheControl() {
        // Floor 0.95 × 0.8 = 0.76: α indices 0–2 qualify; the target is lowest at 2.
        var choice = NegationRule.choose(targetAccuracy: [0.9, 0.7, 0.5, 0.3, 0.2], controlAccuracy: [0.8, 0.79, 0.77, 0.74, 0.5],
                                         controlBaseAccuracy: 0.8, threshold: 0.95)
        XCTAssertEqual(choice.index, 2)
        XCTAssertTrue(choice.constraintMet)
        // A lower threshold admits index 3.
        choice = NegationRule.choose(targetAccuracy: [0.9, 0.7, 0.5, 0.3, 0.2], controlAccuracy: [0.8, 0.79, 0.77, 0.74, 0.5],
                                     controlBaseAccuracy: 0.8, threshold: 0.9)
        XCTAssertEqual(choice.index, 3)
        // Ties: the smallest α.
        choice = NegationRule.choose(targetAccuracy: [0.9, 0.5, 0.5], controlAccuracy: [1, 1, 1], controlBaseAccuracy: 1, threshold: 0.95)
        XCTAssertEqual(choice.index, 1)
        // The floor itself qualifies.
        choice = NegationRule.choose(targetAccuracy: [0.9, 0.4], controlAccuracy: [0.5, 0.25], controlBaseAccuracy: 0.5, threshold: 0.5)
        XCTAssertEqual(choice.index, 1)
        // Nothing qualifies: the best control accuracy, flagged.
        choice = NegationRule.choose(targetAccuracy: [0.9, 0.5, 0.2], controlAccuracy: [0.5, 0.6, 0.55], controlBaseAccuracy: 0.8, threshold: 0.95)
        XCTAssertEqual(choice.index, 1)
        XCTAssertFalse(choice.constraintMet)
    }
}
