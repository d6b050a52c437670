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
        var builder = Builder(tasks: tasks, layout: layout, spectrumLength: spectrumLength)
        for index in layout.specs.indices {
            let range = layout.range(at: index)
            try builder.add(tensor: index, slices: taskVectors.map { UnsafeBufferPointer(rebasing: $0.buffer[range]) })
        }
        self = builder.finish()
    }

    private init(tasks: [String], matrices: [String], cosine: [[Double]], cosinePerLayer: [String: [[Double]]],
                 signConflict: [[Double]], gramDeviation: [String: [String: Double]],
                 singularValues: [String: [String: [Double]]]) {
        self.tasks = tasks
        self.matrices = matrices
        self.cosine = cosine
        self.cosinePerLayer = cosinePerLayer
        self.signConflict = signConflict
        self.gramDeviation = gramDeviation
        self.singularValues = singularValues
    }

    /// The analyses built one tensor at a time (every task's values of that tensor together), so
    /// a sharded run can gather one tensor at a time instead of whole task vectors. Whole-vector
    /// measures accumulate per-tensor sums in Float64.
    public struct Builder {
        let tasks: [String]
        let layout: ParameterLayout
        let spectrumLength: Int
        private var dot: [[Double]]
        private var bothNonZero: [[Int]]
        private var opposite: [[Int]]
        private var matrices: [String] = []
        private var cosinePerLayer: [String: [[Double]]] = [:]
        private var gramDeviation: [String: [String: Double]]
        private var singularValues: [String: [String: [Double]]]

        public init(tasks: [String], layout: ParameterLayout, spectrumLength: Int = TaskVectorAnalysis.defaultSpectrumLength) {
            self.tasks = tasks
            self.layout = layout
            self.spectrumLength = spectrumLength
            let count = tasks.count
            dot = Array(repeating: Array(repeating: 0, count: count), count: count)
            bothNonZero = Array(repeating: Array(repeating: 0, count: count), count: count)
            opposite = bothNonZero
            gramDeviation = Dictionary(uniqueKeysWithValues: tasks.map { ($0, [:]) })
            singularValues = gramDeviation.mapValues { _ in [:] }
        }

        /// Adds tensor `index` of the layout: `slices[t]` is task t's values of it. Tensors may come
        /// in any order; the per-layer results are keyed by name, `matrices` follows layout order.
        public mutating func add(tensor index: Int, slices: [UnsafeBufferPointer<Float>]) throws {
            let spec = layout.specs[index]
            precondition(slices.count == tasks.count && slices.allSatisfy { $0.count == spec.count },
                         "one slice of the tensor's size per task")
            for i in slices.indices {
                for j in i..<slices.count {
                    let (product, both, against) = Self.pairSums(slices[i], slices[j])
                    dot[i][j] += product
                    bothNonZero[i][j] += both
                    opposite[i][j] += against
                }
            }
            // A tensor no task vector changes says nothing about the tasks.
            guard spec.isMatrix, slices.contains(where: { $0.contains { $0 != 0 } }) else { return }
            matrices.append(spec.name)
            cosinePerLayer[spec.name] = TaskVectorAnalysis.pairwise(slices, TaskVectorAnalysis.cosineSimilarity)
            let rows = spec.shape[0], columns = spec.shape[1]
            for (task, slice) in zip(tasks, slices) {
                gramDeviation[task]![spec.name] = TaskVectorAnalysis.gramDeviation(slice, rows: rows, columns: columns)
                singularValues[task]![spec.name] = try TaskVectorAnalysis.topSingularValues(
                    slice, rows: rows, columns: columns, count: spectrumLength)
            }
        }

        public func finish() -> TaskVectorAnalysis {
            let count = tasks.count
            var cosine = Array(repeating: Array(repeating: 0.0, count: count), count: count)
            var signConflict = cosine
            for i in 0..<count {
                for j in i..<count {
                    let norms = dot[i][i] * dot[j][j]
                    cosine[i][j] = norms > 0 ? dot[i][j] / (dot[i][i].squareRoot() * dot[j][j].squareRoot()) : 0
                    signConflict[i][j] = bothNonZero[i][j] > 0 ? Double(opposite[i][j]) / Double(bothNonZero[i][j]) : 0
                    cosine[j][i] = cosine[i][j]
                    signConflict[j][i] = signConflict[i][j]
                }
            }
            let order = Dictionary(uniqueKeysWithValues: layout.specs.enumerated().map { ($1.name, $0) })
            return TaskVectorAnalysis(
                tasks: tasks, matrices: matrices.sorted { order[$0]! < order[$1]! }, cosine: cosine,
                cosinePerLayer: cosinePerLayer, signConflict: signConflict, gramDeviation: gramDeviation,
                singularValues: singularValues)
        }

        /// ⟨a, b⟩ in Float64, and how many entries are non-zero in both / of opposite signs.
        private static func pairSums(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> (Double, Int, Int) {
            var product = 0.0, both = 0, against = 0
            for k in 0..<a.count {
                let x = a[k], y = b[k]
                product += Double(x) * Double(y)
                if x != 0 && y != 0 {
                    both += 1
                    if (x > 0) != (y > 0) { against += 1 }
                }
            }
            return (product, both, against)
        }
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
