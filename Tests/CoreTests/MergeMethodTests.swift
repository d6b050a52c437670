// MergeMethodTests: every merge method against a direct Float64 implementation of its formula,
// the properties that pin each variant, and the LAPACK SVD wrapper.
import XCTest
@testable import Core

final class MergeMethodTests: XCTestCase {
    /// A 2-D weight, a bias, and a wide 2-D tensor.
    static let layout = ParameterLayout([
        ParameterSpec(name: "weight", shape: [6, 4]),
        ParameterSpec(name: "bias", shape: [6]),
        ParameterSpec(name: "projection", shape: [3, 5]),
    ])

    /// Gaussian task vectors with a different scale per task, so tasks disagree in sign and size.
    static func taskVectors(_ count: Int, seed: UInt64, layout: ParameterLayout = layout) -> [FloatBuffer] {
        var stream = RandomStream(seed: seed)
        return (0..<count).map { task in
            let scale = 1 + 0.5 * Double(task)
            return FloatBuffer((0..<layout.totalCount).map { _ in Float(scale * stream.nextGaussian()) })
        }
    }

    static func doubles(_ vectors: [FloatBuffer]) -> [[Double]] {
        vectors.map { $0.array.map(Double.init) }
    }

    func merged(_ vectors: [FloatBuffer], _ settings: MergeSettings, layout: ParameterLayout = layout) throws -> [Float] {
        try TaskVectorMerger.mergedTaskVector(vectors, layout: layout, settings: settings).array
    }

    // MARK: - Each method against its formula

    func testAverageAndTaskArithmeticMatchFormula() throws {
        let vectors = Self.taskVectors(3, seed: 11)
        let sum = MergeReference.sum(Self.doubles(vectors))
        checkTensor("task_arithmetic", try merged(vectors, MergeSettings(method: .taskArithmetic)), sum, relative: 1e-6)
        checkTensor("average", try merged(vectors, MergeSettings(method: .average)), sum.map { $0 / 3 }, relative: 1e-6)
    }

    func testTiesMatchesFormulaForBothTrimScopes() throws {
        let vectors = Self.taskVectors(3, seed: 12)
        for scope in TrimScope.allCases {
            for density in [0.2, 0.5, 1.0] {
                let expected = MergeReference.ties(Self.doubles(vectors), layout: Self.layout, density: density, scope: scope)
                let actual = try merged(vectors, MergeSettings(method: .ties, density: density, trim: scope))
                checkTensor("ties \(scope.rawValue) density \(density)", actual, expected, relative: 1e-6)
            }
        }
    }

    func testDareMatchesFormulaWithTheSameDraws() throws {
        let vectors = Self.taskVectors(3, seed: 13)
        let settings = MergeSettings(method: .dare, density: 0.3, seed: 99)
        let sparse = Self.doubles(vectors).enumerated().map { task, tau in
            MergeReference.dare(tau, density: 0.3, uniforms: MergeReference.dareUniforms(seed: 99, task: task, count: tau.count))
        }
        checkTensor("dare", try merged(vectors, settings), MergeReference.sum(sparse), relative: 1e-6)
    }

    func testDareTiesMatchesFormula() throws {
        let vectors = Self.taskVectors(3, seed: 14)
        let settings = MergeSettings(method: .dareTies, density: 0.6, seed: 5)
        let sparse = Self.doubles(vectors).enumerated().map { task, tau in
            MergeReference.dare(tau, density: 0.6, uniforms: MergeReference.dareUniforms(seed: 5, task: task, count: tau.count))
        }
        checkTensor("dare_ties", try merged(vectors, settings), MergeReference.electedDisjointMean(sparse), relative: 1e-6)
    }

    func testBreadcrumbsMatchesFormula() throws {
        let vectors = Self.taskVectors(3, seed: 15)
        for (density, gamma) in [(0.5, 0.1), (0.3, 0.2), (0.9, 0.0)] {
            let sparse = Self.doubles(vectors).map {
                MergeReference.breadcrumbs($0, layout: Self.layout, density: density, gamma: gamma)
            }
            let actual = try merged(vectors, MergeSettings(method: .breadcrumbs, density: density, gamma: gamma))
            checkTensor("breadcrumbs β \(density) γ \(gamma)", actual, MergeReference.sum(sparse), relative: 1e-6)
        }
    }

    func testConsensusMatchesFormula() throws {
        let vectors = Self.taskVectors(4, seed: 16)
        for (lambda, k) in [(0.4, 2), (1.0, 1), (0.2, 3)] {
            let expected = MergeReference.consensus(Self.doubles(vectors), lambda: lambda, k: k)
            let actual = try merged(vectors, MergeSettings(method: .consensus, consensusLambda: lambda, consensusK: k))
            checkTensor("consensus λ \(lambda) k \(k)", actual, expected, relative: 1e-6)
        }
    }

    func testTaskSingularVectorsMatchFormula() throws {
        // T = 3: weight keeps 1 triplet per task (p = 3 < 4), projection 1 (p = 3 = k).
        // T = 2: weight keeps 2 per task (p = 4 = k), projection 1 (p = 2 < 3).
        for taskCount in [2, 3] {
            let vectors = Self.taskVectors(taskCount, seed: 17)
            let expected = MergeReference.tsv(Self.doubles(vectors), layout: Self.layout)
            let actual = try merged(vectors, MergeSettings(method: .tsv))
            checkTensor("tsv T=\(taskCount)", actual, expected, relative: 2e-5, absolute: 1e-5)
        }
    }

    func testIsoCTSMatchesFormula() throws {
        // (tasks, f): the 6×4 weight and the 3×5 projection get common and task directions in
        // several proportions, none common at f = 0.
        for (taskCount, fraction) in [(2, 0.5), (3, 0.5), (3, 0.0), (2, 0.8)] {
            let vectors = Self.taskVectors(taskCount, seed: 37)
            let expected = MergeReference.isoCTS(Self.doubles(vectors), layout: Self.layout, commonFraction: fraction)
            checkTensor("iso_cts T=\(taskCount) f=\(fraction)",
                        try merged(vectors, MergeSettings(method: .isoCTS, commonFraction: fraction)), expected,
                        relative: 2e-5, absolute: 1e-5)
        }
        XCTAssertEqual(IsotropicMerge.subspaceSizes(rank: 4, tasks: 2, commonFraction: 0.8).common, 4, "½ rounds to even: 0 per task")
        XCTAssertTrue(IsotropicMerge.subspaceSizes(rank: 3, tasks: 2, commonFraction: 0) == (1, 1), "never more than the rank")
        // f = 1 keeps only the sum's directions: Iso-C.
        let vectors = Self.taskVectors(3, seed: 41)
        checkTensor("iso_cts f=1", try merged(vectors, MergeSettings(method: .isoCTS, commonFraction: 1)),
                    MergeReference.isoC(Self.doubles(vectors), layout: Self.layout), relative: 2e-5, absolute: 1e-5)
        // Its spectrum is flat too.
        let cts = try merged(vectors, MergeSettings(method: .isoCTS, commonFraction: 0.5))
        let spectrum = MergeReference.jacobiSVD(cts[Self.layout.range(at: 0)].map(Double.init), rows: 6, columns: 4).s
        for value in spectrum { XCTAssertEqual(value, spectrum[0], accuracy: 1e-4 * spectrum[0]) }
        XCTAssertThrowsError(try MergeSettings(method: .isoCTS, commonFraction: 1.5).validate())
    }

    func testIsoCMatchesFormula() throws {
        for taskCount in [1, 3] {
            let vectors = Self.taskVectors(taskCount, seed: 23)
            let expected = MergeReference.isoC(Self.doubles(vectors), layout: Self.layout)
            checkTensor("iso_c T=\(taskCount)", try merged(vectors, MergeSettings(method: .isoC)), expected,
                        relative: 2e-5, absolute: 1e-5)
        }
        // Its matrices keep the sum's energy (Σσ) with every singular value equal.
        let vectors = Self.taskVectors(3, seed: 29)
        let iso = try merged(vectors, MergeSettings(method: .isoC))
        let sum = MergeReference.sum(Self.doubles(vectors))
        let range = Self.layout.range(at: 0)
        let before = MergeReference.jacobiSVD(Array(sum[range]), rows: 6, columns: 4).s
        let after = MergeReference.jacobiSVD(iso[range].map(Double.init), rows: 6, columns: 4).s
        let mean = before.reduce(0, +) / Double(before.count)
        for value in after { XCTAssertEqual(value, mean, accuracy: 1e-4 * mean) }
        // An untouched matrix stays zero.
        let zeros = FloatBuffer(count: Self.layout.totalCount)
        XCTAssertTrue(try merged([zeros, zeros], MergeSettings(method: .isoC)).allSatisfy { $0 == 0 })
    }

    func testMagMaxTakesTheLargestMagnitudeFirstTaskOnTies() throws {
        let vectors = Self.taskVectors(3, seed: 31)
        let expected = MergeReference.magmax(Self.doubles(vectors))
        XCTAssertEqual(try merged(vectors, MergeSettings(method: .magmax)), expected.map(Float.init))
        let count = Self.layout.totalCount
        let a = FloatBuffer([Float](repeating: 2, count: count)), b = FloatBuffer([Float](repeating: -2, count: count))
        XCTAssertTrue(try merged([a, b], MergeSettings(method: .magmax)).allSatisfy { $0 == 2 }, "equal |τ|: the first task")
        XCTAssertTrue(try merged([b, a], MergeSettings(method: .magmax)).allSatisfy { $0 == -2 })
    }

    func testTaskSingularVectorsWithMoreTasksThanRank() throws {
        // T = 4 > k = 3 for the projection: r = 1 each, p = 4, and the stacked U [3, 4] is wide,
        // so its nearest orthonormal matrix has orthonormal rows.
        let vectors = Self.taskVectors(4, seed: 18)
        let expected = MergeReference.tsv(Self.doubles(vectors), layout: Self.layout)
        let actual = try merged(vectors, MergeSettings(method: .tsv))
        checkTensor("tsv T=4", actual, expected, relative: 2e-5, absolute: 1e-5)
    }

    // MARK: - Properties

    func testOneTaskAtFullDensityTiesIsTaskArithmetic() throws {
        let vectors = Self.taskVectors(1, seed: 21)
        for scope in TrimScope.allCases {
            let ties = try merged(vectors, MergeSettings(method: .ties, density: 1, trim: scope))
            XCTAssertEqual(ties, try merged(vectors, MergeSettings(method: .taskArithmetic)))
        }
    }

    func testTaskSingularVectorsOfOneTaskAtFullRankIsTheTaskVector() throws {
        let vectors = Self.taskVectors(1, seed: 22)
        let actual = try merged(vectors, MergeSettings(method: .tsv))
        checkTensor("tsv of one task", actual, vectors[0].array, relative: 1e-5, absolute: 1e-5)
        let bias = Self.layout.range(of: "bias")!
        XCTAssertEqual(Array(actual[bias]), Array(vectors[0].array[bias]), "non-matrix tensors are the mean")
    }

    func testTaskSingularVectorsIgnoreATaskThatLeftAMatrixUntouched() throws {
        // Task 1 is zero on both matrices: each merged matrix is task 0's rank-r truncation
        // (r = ⌊k/2⌋), with no arbitrary singular vectors of the zero matrix mixed in.
        let vectors = Self.taskVectors(2, seed: 23)
        for name in ["weight", "projection"] {
            for i in Self.layout.range(of: name)! { vectors[1][i] = 0 }
        }
        let actual = try merged(vectors, MergeSettings(method: .tsv))
        let tasks = Self.doubles(vectors)
        let tau = tasks[0]
        for name in ["weight", "projection"] {
            let index = Self.layout.index(of: name)!
            let shape = Self.layout.specs[index].shape
            let range = Self.layout.range(at: index)
            let truncated = MergeReference.truncated(Array(tau[range]), rows: shape[0], columns: shape[1],
                                                     rank: min(shape[0], shape[1]) / 2)
            checkTensor("tsv \(name)", Array(actual[range]), truncated, relative: 2e-5, absolute: 1e-5)
        }
        let bias = Self.layout.range(of: "bias")!
        checkTensor("tsv bias", Array(actual[bias]), bias.map { (tasks[0][$0] + tasks[1][$0]) / 2 }, relative: 1e-6)
    }

    func testGlobalAndPerTensorTrimDiffer() throws {
        // Large weights, tiny bias: the global top half (15 of 30) is all weight entries; per
        // tensor, each tensor keeps half of its own.
        let layout = ParameterLayout([ParameterSpec(name: "weight", shape: [6, 4]), ParameterSpec(name: "bias", shape: [6])])
        var stream = RandomStream(seed: 31)
        let values = (0..<30).map { i -> Float in
            let magnitude = i < 24 ? 10 + stream.nextDouble() : 0.01 * (1 + stream.nextDouble())
            return Float(stream.nextDouble() < 0.5 ? -magnitude : magnitude)
        }
        let vectors = [FloatBuffer(values)]
        let global = try merged(vectors, MergeSettings(method: .ties, density: 0.5, trim: .global), layout: layout)
        let perTensor = try merged(vectors, MergeSettings(method: .ties, density: 0.5, trim: .perTensor), layout: layout)
        let nonZero = { (values: ArraySlice<Float>) in values.filter { $0 != 0 }.count }
        XCTAssertEqual(nonZero(global[0..<24]), 15)
        XCTAssertEqual(nonZero(global[24..<30]), 0)
        XCTAssertEqual(nonZero(perTensor[0..<24]), 12)
        XCTAssertEqual(nonZero(perTensor[24..<30]), 3)
        for (scope, actual) in [(TrimScope.global, global), (.perTensor, perTensor)] {
            let expected = MergeReference.ties(Self.doubles(vectors), layout: layout, density: 0.5, scope: scope)
            checkTensor("ties \(scope.rawValue)", actual, expected, relative: 0)
        }
    }

    func testTrimKeepsExactlyTheCountWithTiesInIndexOrder() {
        // Five entries of magnitude 1: the top 3 are the first three of them in index order.
        let values: [Float] = [0.5, -1, 1, 0.25, 1, -1, 1]
        let buffer = FloatBuffer(values)
        let scratch = FloatBuffer(count: values.count)
        let cut = TopMagnitudeCut.top(3, of: buffer.pointer, in: 0..<values.count, scratch: scratch.pointer)
        let kept = values.indices.filter { cut.contains(values[$0], at: $0) }
        XCTAssertEqual(kept, [1, 2, 4])
        let none = TopMagnitudeCut.top(0, of: buffer.pointer, in: 0..<values.count, scratch: scratch.pointer)
        XCTAssertTrue(values.indices.allSatisfy { !none.contains(values[$0], at: $0) })
        let all = TopMagnitudeCut.top(7, of: buffer.pointer, in: 0..<values.count, scratch: scratch.pointer)
        XCTAssertTrue(values.indices.allSatisfy { all.contains(values[$0], at: $0) })
    }

    func testSelectionMatchesSortingWithManyDuplicates() {
        var stream = RandomStream(seed: 41)
        for count in [1, 2, 3, 10, 257, 1000] {
            // Few distinct values so that the three-way partition meets long runs of equals.
            let values = (0..<count).map { _ in Float(stream.nextInt(below: 7)) * 0.5 }
            let sorted = values.sorted(by: >)
            for k in Set([1, 2, count / 2 + 1, count]) where k >= 1 && k <= count {
                let scratch = FloatBuffer(values)
                XCTAssertEqual(kthLargest(scratch.pointer, count: count, k: k), sorted[k - 1], "count \(count) k \(k)")
            }
        }
    }

    func testTiesGivesCancelledEntriesTheMajoritySign() throws {
        // Entry 0 cancels exactly (+1 and −1), so it takes the sign most entries elected, and
        // its disjoint mean is the one agreeing value.
        let layout = ParameterLayout([ParameterSpec(name: "bias", shape: [4])])
        let mostlyPositive = [FloatBuffer([1, 2, 3, -4]), FloatBuffer([-1, 2, 1, -1])]
        XCTAssertEqual(try merged(mostlyPositive, MergeSettings(method: .ties, density: 1), layout: layout), [1, 2, 2, -2.5])
        let mostlyNegative = [FloatBuffer([1, -2, -3, -4]), FloatBuffer([-1, -2, -1, 1])]
        XCTAssertEqual(try merged(mostlyNegative, MergeSettings(method: .ties, density: 1), layout: layout), [-1, -2, -2, -4])
    }

    func testDareKeepsAboutDensityOfTheEntriesEachScaledByItsInverse() throws {
        let layout = ParameterLayout([ParameterSpec(name: "weight", shape: [200, 100])])
        let vectors = Self.taskVectors(1, seed: 51, layout: layout)
        let density = 0.3
        let actual = try merged(vectors, MergeSettings(method: .dare, density: density, seed: 7), layout: layout)
        let tau = vectors[0].array
        let kept = tau.indices.filter { actual[$0] != 0 }
        let misscaled = kept.filter { actual[$0] != tau[$0] * Float(1 / density) }
        XCTAssertEqual(misscaled.count, 0, "kept entries not exactly τ/density, e.g. \(misscaled.prefix(3))")
        // Binomial(20000, 0.3): mean 6000, sd ≈ 65; a fixed seed, so ±5 sd is a sanity bound.
        XCTAssertEqual(Double(kept.count), 6000, accuracy: 325)
    }

    func testDareMaskOfATaskDependsOnlyOnSeedAndTaskIndex() throws {
        let vectors = Self.taskVectors(2, seed: 52)
        let zero = FloatBuffer(count: Self.layout.totalCount)
        let settings = MergeSettings(method: .dare, density: 0.5, seed: 3)
        let both = try merged(vectors, settings)
        let first = try merged([vectors[0], zero], settings)
        let second = try merged([zero, vectors[1]], settings)
        XCTAssertEqual(both, zip(first, second).map { $0 + $1 })
        XCTAssertNotEqual(both, try merged(vectors, MergeSettings(method: .dare, density: 0.5, seed: 4)))
    }

    func testBreadcrumbsKeepsExactlyBetaAndDropsTheTopGamma() throws {
        let vectors = Self.taskVectors(1, seed: 61)
        let (density, gamma) = (0.5, 0.1)
        let actual = try merged(vectors, MergeSettings(method: .breadcrumbs, density: density, gamma: gamma))
        let tau = vectors[0].array
        for (index, spec) in Self.layout.specs.enumerated() {
            let range = Self.layout.range(at: index)
            let n = Double(range.count)
            let dropped = Int((gamma * n).rounded(.down)), keptCount = Int((density * n).rounded(.down))
            let byMagnitude = range.sorted { abs(tau[$0]) > abs(tau[$1]) }
            XCTAssertEqual(range.filter { actual[$0] != 0 }.count, keptCount, spec.name)
            for (rank, i) in byMagnitude.enumerated() {
                let expected = rank >= dropped && rank < dropped + keptCount ? tau[i] : 0
                XCTAssertEqual(actual[i], expected, "\(spec.name) rank \(rank)")
            }
        }
    }

    func testConsensusWithZeroLambdaVotesWithEachTasksSupport() throws {
        // Sparse tasks: entry i is zero in task t unless drawn active.
        var stream = RandomStream(seed: 71)
        let vectors = Self.taskVectors(3, seed: 72)
        for vector in vectors {
            for i in 0..<vector.count where stream.nextDouble() < 0.6 { vector[i] = 0 }
        }
        let sum = TaskVector.sum(vectors, count: Self.layout.totalCount).array
        for lambda in [0.0, 1e-6] {
            XCTAssertEqual(try merged(vectors, MergeSettings(method: .consensus, consensusLambda: lambda, consensusK: 1)), sum)
        }
        // With λ = 0 a task's mask is its support: k = 2 keeps the entries two tasks touched.
        let shared = try merged(vectors, MergeSettings(method: .consensus, consensusLambda: 0, consensusK: 2))
        for i in sum.indices {
            let active = vectors.filter { $0[i] != 0 }.count
            XCTAssertEqual(shared[i], active >= 2 ? sum[i] : 0, "entry \(i), \(active) tasks active")
        }
        let none = try merged(vectors, MergeSettings(method: .consensus, consensusLambda: 0, consensusK: 4))
        XCTAssertTrue(none.allSatisfy { $0 == 0 }, "k above T keeps nothing")
    }

    func testEveryMethodIsDeterministic() throws {
        let vectors = Self.taskVectors(3, seed: 81)
        for method in MergeMethodName.allCases {
            let settings = MergeSettings(method: method, seed: 9)
            let first = try merged(vectors, settings).map(\.bitPattern)
            let second = try merged(vectors, settings).map(\.bitPattern)
            XCTAssertEqual(first, second, method.rawValue)
        }
    }

    func testErrorsAreOneLine() {
        let vectors = Self.taskVectors(2, seed: 91)
        let cases: [(String, [FloatBuffer], MergeSettings)] = [
            ("no task vectors", [], MergeSettings(method: .taskArithmetic)),
            ("mismatched count", [vectors[0], FloatBuffer(count: 3)], MergeSettings(method: .average)),
            ("density 0", vectors, MergeSettings(method: .ties, density: 0)),
            ("density above 1", vectors, MergeSettings(method: .dare, density: 1.5)),
            ("gamma + density above 1", vectors, MergeSettings(method: .breadcrumbs, density: 0.95, gamma: 0.1)),
            ("k below 1", vectors, MergeSettings(method: .consensus, consensusK: 0)),
            ("non-finite entry", [vectors[0], FloatBuffer([Float](repeating: .nan, count: Self.layout.totalCount))],
             MergeSettings(method: .ties)),
        ]
        for (name, input, settings) in cases {
            XCTAssertThrowsError(try merged(input, settings), name) { error in
                guard let error = error as? OrthofuseError else { return XCTFail("\(name): \(error)") }
                XCTAssertFalse(error.message.contains("\n"), name)
                XCTAssertTrue(error.message.hasPrefix("merge \(settings.method.rawValue):"), error.message)
            }
        }
        // Settings a method does not use are not checked.
        XCTAssertNoThrow(try merged(vectors, MergeSettings(method: .ties, density: 1, gamma: 0.5)))
    }

    func testDefaults() {
        XCTAssertEqual(MergeSettings(method: .ties).density, 0.2)
        XCTAssertEqual(MergeSettings(method: .ties).trim, .global)
        XCTAssertEqual(MergeSettings(method: .dare).density, 0.5)
        XCTAssertEqual(MergeSettings(method: .breadcrumbs).gamma, 0.01)
        XCTAssertEqual(MergeSettings(method: .consensus).consensusK, 2)
        XCTAssertEqual(MergeMethodName(rawValue: "dare_ties"), .dareTies)
        XCTAssertEqual(TrimScope(rawValue: "per-tensor"), .perTensor)
    }

    // MARK: - The SVD wrapper

    func testThinSVDReconstructsTallWideAndSquareMatrices() throws {
        var stream = RandomStream(seed: 101)
        // Both LAPACK paths: divide and conquer, and the QR iteration it falls back to.
        for ((rows, columns), qr) in [(7, 4), (3, 6), (5, 5), (1, 4), (4, 1)].flatMap({ [($0, false), ($0, true)] }) {
            let a = (0..<(rows * columns)).map { _ in Float(stream.nextGaussian()) }
            let svd = try a.withUnsafeBufferPointer {
                try ThinSVD($0.baseAddress!, rows: rows, columns: columns, onlyQRIteration: qr)
            }
            let k = min(rows, columns)
            XCTAssertEqual(svd.rank, k)
            let u = svd.u.array.map(Double.init), s = svd.singularValues.array.map(Double.init)
            let vt = svd.vt.array.map(Double.init)
            var product = [Double](repeating: 0, count: rows * columns)
            for i in 0..<rows {
                for j in 0..<columns {
                    for l in 0..<k { product[i * columns + j] += u[i * k + l] * s[l] * vt[l * columns + j] }
                }
            }
            checkTensor("U·S·Vᵀ \(rows)×\(columns)", a, product, relative: 1e-5, absolute: 1e-5)
            checkTensor("UᵀU \(rows)×\(columns)", MergeReference.gram(u, rows: rows, columns: k).map { Float($0) },
                        MergeReference.identity(k), relative: 0, absolute: 1e-5)
            let v = MergeReference.transpose(vt, rows: k, columns: columns)
            checkTensor("VᵀV \(rows)×\(columns)", MergeReference.gram(v, rows: columns, columns: k).map { Float($0) },
                        MergeReference.identity(k), relative: 0, absolute: 1e-5)
            XCTAssertEqual(s, s.sorted(by: >), "singular values descend")
            XCTAssertTrue(s.allSatisfy { $0 >= 0 })
        }
    }

    func testNearestOrthonormalMatchesPolarFactor() throws {
        var stream = RandomStream(seed: 102)
        for (rows, columns) in [(6, 3), (3, 6)] {
            let a = (0..<(rows * columns)).map { _ in Float(stream.nextGaussian()) }
            let q = try a.withUnsafeBufferPointer { try nearestOrthonormal($0.baseAddress!, rows: rows, columns: columns) }
            let expected = MergeReference.polar(a.map(Double.init), rows: rows, columns: columns)
            checkTensor("polar \(rows)×\(columns)", q.array, expected, relative: 1e-5, absolute: 1e-5)
        }
    }
}

/// The published formulas of each method in Float64, written for clarity (sorts, explicit loops).
enum MergeReference {
    static func sum(_ tasks: [[Double]]) -> [Double] {
        var total = [Double](repeating: 0, count: tasks[0].count)
        for tau in tasks { for i in tau.indices { total[i] += tau[i] } }
        return total
    }

    static func floorCount(_ fraction: Double, _ n: Int) -> Int { Int((fraction * Double(n)).rounded(.down)) }

    /// `range` ordered by |x| descending, equal magnitudes by index.
    static func byMagnitude(_ x: [Double], _ range: Range<Int>) -> [Int] {
        range.sorted { abs(x[$0]) != abs(x[$1]) ? abs(x[$0]) > abs(x[$1]) : $0 < $1 }
    }

    static func tensorRanges(_ layout: ParameterLayout) -> [Range<Int>] {
        layout.specs.indices.map { layout.range(at: $0) }
    }

    static func ties(_ tasks: [[Double]], layout: ParameterLayout, density: Double, scope: TrimScope) -> [Double] {
        let scopes = scope == .global ? [0..<layout.totalCount] : tensorRanges(layout)
        let trimmed = tasks.map { tau in
            var kept = [Double](repeating: 0, count: tau.count)
            for range in scopes {
                for i in byMagnitude(tau, range).prefix(floorCount(density, range.count)) { kept[i] = tau[i] }
            }
            return kept
        }
        return electedDisjointMean(trimmed)
    }

    static func electedDisjointMean(_ sparse: [[Double]]) -> [Double] {
        let total = sum(sparse)
        var elected = total.map { $0 > 0 ? 1.0 : ($0 < 0 ? -1.0 : 0) }
        let majority = elected.reduce(0, +)
        for i in elected.indices where elected[i] == 0 { elected[i] = majority > 0 ? 1 : (majority < 0 ? -1 : 0) }
        return elected.indices.map { i in
            let agreeing = sparse.map { $0[i] }.filter { $0 != 0 && ($0 > 0) == (elected[i] > 0) && elected[i] != 0 }
            return agreeing.isEmpty ? 0 : agreeing.reduce(0, +) / Double(agreeing.count)
        }
    }

    /// The uniforms DARE draws for `task`, one per entry in flat order: SplitMix64 run
    /// sequentially from the task's key (what the counter-based generator indexes into).
    static func dareUniforms(seed: UInt64, task: Int, count: Int) -> [Double] {
        var state = CounterRandom(seed: seed, label: "dare/task \(task)").key
        return (0..<count).map { _ in
            state = state &+ 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return Double((z ^ (z >> 31)) >> 11) * 0x1.0p-53
        }
    }

    static func dare(_ tau: [Double], density: Double, uniforms: [Double]) -> [Double] {
        tau.indices.map { uniforms[$0] < density ? tau[$0] / density : 0 }
    }

    static func breadcrumbs(_ tau: [Double], layout: ParameterLayout, density: Double, gamma: Double) -> [Double] {
        var kept = [Double](repeating: 0, count: tau.count)
        for range in tensorRanges(layout) {
            let dropped = floorCount(gamma, range.count), window = floorCount(density, range.count)
            for i in byMagnitude(tau, range).dropFirst(dropped).prefix(window) { kept[i] = tau[i] }
        }
        return kept
    }

    static func consensus(_ tasks: [[Double]], lambda: Double, k: Int) -> [Double] {
        let total = sum(tasks)
        return total.indices.map { i in
            let votes = tasks.filter { abs($0[i]) > lambda * abs(total[i] - $0[i]) }.count
            return votes >= k ? total[i] : 0
        }
    }

    static func tsv(_ tasks: [[Double]], layout: ParameterLayout) -> [Double] {
        var merged = [Double](repeating: 0, count: layout.totalCount)
        for (index, spec) in layout.specs.enumerated() {
            let range = layout.range(at: index)
            guard spec.isMatrix else {
                for i in range { merged[i] = tasks.map { $0[i] }.reduce(0, +) / Double(tasks.count) }
                continue
            }
            let (m, n) = (spec.shape[0], spec.shape[1])
            let r = max(1, min(m, n) / tasks.count)
            var uColumns: [[Double]] = [], s: [Double] = [], vRows: [[Double]] = []
            for tau in tasks {
                let svd = jacobiSVD(Array(tau[range]), rows: m, columns: n)
                let k = svd.s.count
                for l in 0..<r {
                    uColumns.append((0..<m).map { svd.u[$0 * k + l] })
                    s.append(svd.s[l])
                    vRows.append((0..<n).map { svd.v[$0 * k + l] })
                }
            }
            let p = s.count
            let u = (0..<(m * p)).map { uColumns[$0 % p][$0 / p] }
            let vt = vRows.flatMap { $0 }
            let uOrthonormal = polar(u, rows: m, columns: p), vtOrthonormal = polar(vt, rows: p, columns: n)
            for i in 0..<m {
                for j in 0..<n {
                    var value = 0.0
                    for l in 0..<p { value += uOrthonormal[i * p + l] * s[l] * vtOrthonormal[l * n + j] }
                    merged[range.lowerBound + i * n + j] = value
                }
            }
        }
        return merged
    }

    /// The isotropic merges' frame: each matrix from `matrix(Στ block, the tasks' blocks, m, n)`
    /// (row-major [m, n]); every other tensor the mean of the task vectors.
    static func perMatrix(_ tasks: [[Double]], layout: ParameterLayout,
                          _ matrix: (_ total: [Double], _ blocks: [[Double]], _ m: Int, _ n: Int) -> [Double]) -> [Double] {
        let total = sum(tasks)
        var merged = [Double](repeating: 0, count: layout.totalCount)
        for (index, spec) in layout.specs.enumerated() {
            let range = layout.range(at: index)
            guard spec.isMatrix else {
                for i in range { merged[i] = total[i] / Double(tasks.count) }
                continue
            }
            let block = matrix(Array(total[range]), tasks.map { Array($0[range]) }, spec.shape[0], spec.shape[1])
            for (offset, value) in block.enumerated() { merged[range.lowerBound + offset] = value }
        }
        return merged
    }

    /// Iso-C: per matrix, mean(σ(Στ))·polar(Στ); other tensors the mean of the task vectors.
    static func isoC(_ tasks: [[Double]], layout: ParameterLayout) -> [Double] {
        perMatrix(tasks, layout: layout) { block, _, m, n in
            let s = jacobiSVD(block, rows: m, columns: n).s
            let mean = s.reduce(0, +) / Double(s.count)
            return polar(block, rows: m, columns: n).map { mean * $0 }
        }
    }

    /// Iso-CTS as the released code computes it, in Double: per matrix the top k directions of
    /// Στ and, per task, the top s of τt − U_k·U_kᵀ·τt; both sides orthogonalised (polar);
    /// σ̄ the mean of the singular values taken. Other tensors the mean of the task vectors.
    static func isoCTS(_ tasks: [[Double]], layout: ParameterLayout, commonFraction f: Double) -> [Double] {
        perMatrix(tasks, layout: layout) { total, blocks, m, n in
            let r = min(m, n)
            let s = min(Int((Double(r - Int(Double(r) * f)) / Double(tasks.count)).rounded(.toNearestOrEven)), r / tasks.count)
            let k = r - s * tasks.count
            let whole = jacobiSVD(total, rows: m, columns: n)
            var left: [[Double]] = [], right: [[Double]] = [], values: [Double] = []
            func take(_ svd: (u: [Double], s: [Double], v: [Double]), _ count: Int) {
                for l in 0..<count {
                    left.append((0..<m).map { svd.u[$0 * r + l] })
                    right.append((0..<n).map { svd.v[$0 * r + l] })
                    values.append(svd.s[l])
                }
            }
            for w in blocks where s > 0 {
                var outside = w
                for i in 0..<m {
                    for j in 0..<n {
                        for l in 0..<k {
                            let dot = (0..<m).reduce(0.0) { $0 + whole.u[$1 * r + l] * w[$1 * n + j] }
                            outside[i * n + j] -= whole.u[i * r + l] * dot
                        }
                    }
                }
                take(jacobiSVD(outside, rows: m, columns: n), s)
            }
            take(whole, k)
            let u = polar((0..<(m * r)).map { left[$0 % r][$0 / r] }, rows: m, columns: r)
            let vt = polar(right.flatMap { $0 }, rows: r, columns: n)
            let mean = values.reduce(0, +) / Double(r)
            return (0..<(m * n)).map { entry in
                let (i, j) = entry.quotientAndRemainder(dividingBy: n)
                return mean * (0..<r).reduce(0.0) { $0 + u[i * r + $1] * vt[$1 * n + j] }
            }
        }
    }

    /// MagMax: per entry the task value of largest magnitude, the first on ties.
    static func magmax(_ tasks: [[Double]]) -> [Double] {
        tasks[0].indices.map { i in
            tasks.map { $0[i] }.reduce(tasks[0][i]) { abs($1) > abs($0) ? $1 : $0 }
        }
    }

    /// The best rank-r approximation U_r·S_r·V_rᵀ.
    static func truncated(_ a: [Double], rows m: Int, columns n: Int, rank r: Int) -> [Double] {
        let svd = jacobiSVD(a, rows: m, columns: n)
        let k = svd.s.count
        return (0..<(m * n)).map { index in
            (0..<r).reduce(0) { $0 + svd.u[(index / n) * k + $1] * svd.s[$1] * svd.v[(index % n) * k + $1] }
        }
    }

    /// U·Vᵀ from the SVD A = U·S·Vᵀ.
    static func polar(_ a: [Double], rows m: Int, columns n: Int) -> [Double] {
        let svd = jacobiSVD(a, rows: m, columns: n)
        let k = svd.s.count
        return (0..<(m * n)).map { index in
            (0..<k).reduce(0) { $0 + svd.u[(index / n) * k + $1] * svd.v[(index % n) * k + $1] }
        }
    }

    /// One-sided Jacobi SVD of a row-major [m, n] matrix: u [m, k], s [k] descending, v [n, k]
    /// (k = min(m, n)). Rotates column pairs until all are orthogonal; the column norms are then
    /// the singular values.
    static func jacobiSVD(_ a: [Double], rows m: Int, columns n: Int) -> (u: [Double], s: [Double], v: [Double]) {
        if m < n {
            let t = jacobiSVD(transpose(a, rows: m, columns: n), rows: n, columns: m)
            return (t.v, t.s, t.u)
        }
        var w = a
        var v = identity(n)
        for _ in 0..<100 {
            var rotated = false
            for p in 0..<n {
                for q in (p + 1)..<max(n, p + 1) {
                    var alpha = 0.0, beta = 0.0, gamma = 0.0
                    for i in 0..<m {
                        alpha += w[i * n + p] * w[i * n + p]
                        beta += w[i * n + q] * w[i * n + q]
                        gamma += w[i * n + p] * w[i * n + q]
                    }
                    if abs(gamma) <= 1e-15 * (alpha * beta).squareRoot() { continue }
                    rotated = true
                    let zeta = (beta - alpha) / (2 * gamma)
                    let t = (zeta >= 0 ? 1.0 : -1.0) / (abs(zeta) + (1 + zeta * zeta).squareRoot())
                    let c = 1 / (1 + t * t).squareRoot(), s = c * t
                    for i in 0..<m {
                        let (x, y) = (w[i * n + p], w[i * n + q])
                        w[i * n + p] = c * x - s * y
                        w[i * n + q] = s * x + c * y
                    }
                    for i in 0..<n {
                        let (x, y) = (v[i * n + p], v[i * n + q])
                        v[i * n + p] = c * x - s * y
                        v[i * n + q] = s * x + c * y
                    }
                }
            }
            if !rotated { break }
        }
        let norms = (0..<n).map { j in (0..<m).reduce(0.0) { $0 + w[$1 * n + j] * w[$1 * n + j] }.squareRoot() }
        let order = (0..<n).sorted { norms[$0] > norms[$1] }
        var u = [Double](repeating: 0, count: m * n), sortedV = [Double](repeating: 0, count: n * n)
        for (l, j) in order.enumerated() {
            for i in 0..<m { u[i * n + l] = w[i * n + j] / norms[j] }
            for i in 0..<n { sortedV[i * n + l] = v[i * n + j] }
        }
        return (u, order.map { norms[$0] }, sortedV)
    }

    static func transpose(_ a: [Double], rows m: Int, columns n: Int) -> [Double] {
        (0..<(m * n)).map { index in a[(index % m) * n + index / m] }
    }

    static func identity(_ n: Int) -> [Double] {
        (0..<(n * n)).map { $0 / n == $0 % n ? 1 : 0 }
    }

    /// AᵀA of a row-major [rows, columns] matrix.
    static func gram(_ a: [Double], rows: Int, columns: Int) -> [Double] {
        (0..<(columns * columns)).map { index in
            (0..<rows).reduce(0) { $0 + a[$1 * columns + index / columns] * a[$1 * columns + index % columns] }
        }
    }
}
