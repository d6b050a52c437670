// TaskVectorAnalysis: cosine similarity, sign conflicts, Gram deviation and spectra of task vectors.

/// The analyses of T task vectors over one layout. Sums accumulate in Float64, so the numbers
/// match a Float64 computation from the saved files (scripts/check_report_analyses.py) closely.
public struct TaskVectorAnalysis: Sendable, Equatable {
    /// How many singular values are kept per tensor (the largest ones).
    public static let defaultSpectrumLength = 32

    public var tasks: [String]
    /// The 2-D tensors analysed per layer, in layout order: those some task vector changes
    /// (a tensor a fine-tuning mode never trains is zero in every τ and says nothing).
    public var matrices: [String]
    public var cosine: [[Double]]
    /// tensor → cosine matrix.
    public var cosinePerLayer: [String: [[Double]]]
    public var signConflict: [[Double]]
    /// task → tensor → ‖G − I‖_F.
    public var gramDeviation: [String: [String: Double]]
    /// task → tensor → leading singular values, descending.
    public var singularValues: [String: [String: [Double]]]

    public init(tasks: [String], taskVectors: [FloatBuffer], layout: ParameterLayout,
                spectrumLength: Int = TaskVectorAnalysis.defaultSpectrumLength) throws {
        precondition(tasks.count == taskVectors.count, "one name per task vector")
        precondition(taskVectors.allSatisfy { $0.count == layout.totalCount }, "task vectors must match the layout")
        self.tasks = tasks
        let whole = taskVectors.map { UnsafeBufferPointer($0.buffer) }
        cosine = Self.pairwise(whole, Self.cosineSimilarity)
        signConflict = Self.pairwise(whole, Self.signConflictRatio)

        let changed = layout.specs.indices.filter { index in
            layout.specs[index].isMatrix && whole.contains { vector in
                vector[layout.range(at: index)].contains { $0 != 0 }
            }
        }
        matrices = changed.map { layout.specs[$0].name }
        cosinePerLayer = [:]
        gramDeviation = Dictionary(uniqueKeysWithValues: tasks.map { ($0, [:]) })
        singularValues = gramDeviation.mapValues { _ in [:] }
        for index in changed {
            let spec = layout.specs[index]
            let range = layout.range(at: index)
            let slices = whole.map { UnsafeBufferPointer(rebasing: $0[range]) }
            cosinePerLayer[spec.name] = Self.pairwise(slices, Self.cosineSimilarity)
            for (task, slice) in zip(tasks, slices) {
                let rows = spec.shape[0], columns = spec.shape[1]
                gramDeviation[task]![spec.name] = Self.gramDeviation(slice, rows: rows, columns: columns)
                singularValues[task]![spec.name] = try Self.topSingularValues(
                    slice, rows: rows, columns: columns, count: spectrumLength)
            }
        }
    }

    /// Writes the analyses into the report's fields.
    public func fill(_ report: inout RunReport) {
        report.cosineSimilarity = TaskMatrix(tasks: tasks, matrix: cosine)
        report.cosineSimilarityPerLayer = cosinePerLayer
        report.signConflict = SignConflictReport(tasks: tasks, matrix: signConflict)
        report.orthoRegPenaltyPerLayer = gramDeviation
        report.singularValues = singularValues
    }

    // MARK: The measures, on plain buffers

    /// ⟨a, b⟩ / (‖a‖‖b‖) in Float64; 0 when either vector is zero (the angle is undefined).
    public static func cosineSimilarity(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> Double {
        precondition(a.count == b.count)
        var dot = 0.0, aa = 0.0, bb = 0.0
        for i in 0..<a.count {
            let x = Double(a[i]), y = Double(b[i])
            dot += x * y
            aa += x * x
            bb += y * y
        }
        return aa > 0 && bb > 0 ? dot / (aa.squareRoot() * bb.squareRoot()) : 0
    }

    /// Among the entries where both vectors are non-zero, the fraction with opposite signs
    /// (TIES' sign interference); 0 when no entry is non-zero in both.
    public static func signConflictRatio(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> Double {
        precondition(a.count == b.count)
        var both = 0, opposite = 0
        for i in 0..<a.count where a[i] != 0 && b[i] != 0 {
            both += 1
            if (a[i] > 0) != (b[i] > 0) { opposite += 1 }
        }
        return both > 0 ? Double(opposite) / Double(both) : 0
    }

    /// ‖G − I‖_F of ΔW [rows, columns] with G the smaller Gram: exactly the OrthoReg penalty
    /// (frobenius form) that training applied, computed by the same code.
    public static func gramDeviation(_ delta: UnsafeBufferPointer<Float>, rows: Int, columns: Int) -> Double {
        precondition(delta.count == rows * columns)
        let gram = FloatBuffer(count: min(rows, columns) * min(rows, columns))
        return OrthoRegularizer.penaltyAndGradient(delta: delta.baseAddress!, rows: rows, columns: columns,
                                                   form: .frobenius, gram: gram.pointer, gradientOut: nil)
    }

    /// The `count` largest singular values of `matrix` [rows, columns] (fewer when min(rows, columns) is smaller).
    public static func topSingularValues(_ matrix: UnsafeBufferPointer<Float>, rows: Int, columns: Int,
                                         count: Int) throws -> [Double] {
        precondition(matrix.count == rows * columns)
        let svd = try ThinSVD(matrix.baseAddress!, rows: rows, columns: columns)
        return (0..<min(count, svd.rank)).map { Double(svd.singularValues[$0]) }
    }

    /// measure(i, j) for every pair, computed once per unordered pair (every measure here is symmetric).
    static func pairwise(_ vectors: [UnsafeBufferPointer<Float>],
                         _ measure: (UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>) -> Double) -> [[Double]] {
        var matrix = [[Double]](repeating: [Double](repeating: 0, count: vectors.count), count: vectors.count)
        for i in vectors.indices {
            for j in i..<vectors.count {
                let value = measure(vectors[i], vectors[j])
                matrix[i][j] = value
                matrix[j][i] = value
            }
        }
        return matrix
    }
}
