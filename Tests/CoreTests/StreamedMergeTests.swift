// StreamedMergeTests: the chunked merge of models too large to hold gives bitwise the whole-vector
// merge for every method it streams, whatever the chunk size and the threads, and fails on the
// first bad input in layout order.
import XCTest
@testable import Core

final class StreamedMergeTests: XCTestCase {
    /// Tensors that chunks of 7 cut unevenly, one empty, one smaller than a chunk.
    static let layout = ParameterLayout([
        ParameterSpec(name: "embed", shape: [9, 11]),
        ParameterSpec(name: "empty", shape: [0, 3]),
        ParameterSpec(name: "norm", shape: [5]),
        ParameterSpec(name: "proj", shape: [4, 13]),
    ])

    /// Models in memory: the base and fine-tuned values of every input, and the merged output.
    final class MemoryIO: StreamedMergeIO, @unchecked Sendable {
        let layout: ParameterLayout
        let inputs: [[Float]]
        let output: UnsafeMutableBufferPointer<Float>
        /// (input, tensor) whose reads fail, as a bad file would.
        let failing: Set<[Int]>

        init(layout: ParameterLayout, inputs: [[Float]], failing: Set<[Int]> = []) {
            self.layout = layout
            self.inputs = inputs
            self.failing = failing
            output = .allocate(capacity: layout.totalCount)
            output.initialize(repeating: .nan)
        }

        deinit { output.deallocate() }

        var stagingBytesPerElement: Int { 4 }

        func read(input: Int, tensor: Int, elements: Range<Int>, into values: UnsafeMutablePointer<Float>,
                  staging: UnsafeMutableRawPointer) throws {
            if failing.contains([input, tensor]) { throw OrthofuseError("input \(input) tensor \(tensor) is bad") }
            let start = layout.range(at: tensor).lowerBound
            for (j, element) in elements.enumerated() { values[j] = inputs[input][start + element] }
        }

        func write(tensor: Int, elements: Range<Int>, values: UnsafePointer<Float>, staging: UnsafeMutableRawPointer) throws {
            let start = layout.range(at: tensor).lowerBound
            for (j, element) in elements.enumerated() { output[start + element] = values[j] }
        }
    }

    /// θ0 and T fine-tuned models whose task vectors take few distinct values (many ties at any
    /// top-k threshold, as BF16 checkpoints have), with signs that disagree across tasks.
    static func models(tasks: Int, seed: UInt64) -> [[Float]] {
        var stream = RandomStream(seed: seed)
        let base = (0..<layout.totalCount).map { _ in Float(stream.nextGaussian()) }
        return [base] + (0..<tasks).map { _ in
            base.map { $0 + Float((stream.nextGaussian() * 3).rounded()) / 8 }
        }
    }

    static func expected(_ models: [[Float]], settings: MergeSettings, alpha: Float) throws -> [Float] {
        let base = FloatBuffer(models[0])
        let taskVectors = models.dropFirst().map { TaskVector.difference(finetuned: FloatBuffer($0), base: base) }
        let delta = try TaskVectorMerger.mergedTaskVector(Array(taskVectors), layout: layout, settings: settings)
        let merged = FloatBuffer(count: layout.totalCount)
        TaskArithmetic.merge(base: base, taskVectorSum: delta, alpha: alpha, into: merged)
        return merged.array
    }

    static let streamedSettings: [MergeSettings] = [
        MergeSettings(method: .taskArithmetic), MergeSettings(method: .average), MergeSettings(method: .dare, seed: 5),
        MergeSettings(method: .consensus), MergeSettings(method: .magmax),
        MergeSettings(method: .ties, density: 0.3), MergeSettings(method: .ties, density: 0.3, trim: .perTensor),
        MergeSettings(method: .ties, density: 1), MergeSettings(method: .dareTies, density: 0.6, seed: 2),
        MergeSettings(method: .breadcrumbs, density: 0.5, gamma: 0.1),
    ]

    func testEveryStreamedMethodIsBitwiseTheWholeVectorMerge() throws {
        let models = Self.models(tasks: 3, seed: 41)
        for settings in Self.streamedSettings {
            let expected = try Self.expected(models, settings: settings, alpha: 0.7)
            // Scopes held whole (the default for tensors this small) and found by histograms (0).
            for (chunk, threads, wholeScopes) in [(7, 1, 0), (7, 3, 0), (1, 2, 0), (1000, 2, 0), (7, 2, 1 << 20), (1, 1, 1 << 20)] {
                let io = MemoryIO(layout: Self.layout, inputs: models)
                let merge = StreamedMerge(layout: Self.layout, taskCount: 3, settings: settings, alpha: 0.7,
                                          threads: threads, chunkElements: chunk, wholeScopeLimit: wholeScopes)
                let passes = try merge.run(io)
                XCTAssertEqual(Array(io.output).map(\.bitPattern), expected.map(\.bitPattern),
                               "\(settings.method.rawValue) \(settings.trim) chunk \(chunk), \(threads) threads, whole scopes \(wholeScopes)")
                let entryWise: Set<MergeMethodName> = [.taskArithmetic, .average, .dare, .consensus, .magmax]
                XCTAssertEqual(passes == 1, entryWise.contains(settings.method), "\(settings.method.rawValue): \(passes) passes")
            }
        }
    }

    /// The ties at a threshold are kept in index order across chunks: exactly ⌊density·n⌋ entries
    /// survive when every |τ| of a tensor is equal.
    func testTiesAcrossChunksKeepExactlyTheTopK() throws {
        let layout = ParameterLayout([ParameterSpec(name: "w", shape: [50])])
        let base = [Float](repeating: 1, count: 50)
        let models = [base, base.map { $0 + 0.25 }]
        let io = MemoryIO(layout: layout, inputs: models)
        let settings = MergeSettings(method: .ties, density: 0.3, trim: .perTensor)
        for wholeScopes in [0, 50] {
            _ = try StreamedMerge(layout: layout, taskCount: 1, settings: settings, alpha: 1, threads: 2, chunkElements: 4,
                                  wholeScopeLimit: wholeScopes).run(io)
            XCTAssertEqual(Array(io.output), [Float](repeating: 1.25, count: 15) + [Float](repeating: 1, count: 35))
        }
    }

    func testTheFirstBadInputInLayoutOrderIsReported() throws {
        let models = Self.models(tasks: 2, seed: 3)
        for settings in [MergeSettings(method: .taskArithmetic), MergeSettings(method: .ties, trim: .perTensor)] {
            let io = MemoryIO(layout: Self.layout, inputs: models, failing: [[2, 3], [1, 2]])
            let merge = StreamedMerge(layout: Self.layout, taskCount: 2, settings: settings, alpha: 1, threads: 3, chunkElements: 2)
            XCTAssertThrowsError(try merge.run(io), settings.method.rawValue) { error in
                XCTAssertEqual("\(error)", "input 1 tensor 2 is bad")
            }
        }
    }

    /// A task vector that overflows Float (θt − θ0 beyond its range) is named as the in-memory merge names it.
    func testAnOverflowingTaskVectorIsNamed() throws {
        let layout = ParameterLayout([ParameterSpec(name: "w", shape: [3])])
        let models: [[Float]] = [[0, -3e38, 0], [0, 3e38, 0]]
        let io = MemoryIO(layout: layout, inputs: models)
        XCTAssertThrowsError(try StreamedMerge(layout: layout, taskCount: 1, settings: MergeSettings(method: .taskArithmetic),
                                               alpha: 1, threads: 1, chunkElements: 2).run(io)) { error in
            XCTAssertEqual("\(error)", "merge task_arithmetic: task vector 0 has a non-finite value in 'w'")
        }
    }
}
