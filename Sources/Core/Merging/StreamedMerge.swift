// StreamedMerge: a merge of models too large to hold — checkpoints of billions of parameters — in
// chunks of a few hundred kilobytes that every thread reads, merges and writes in turn. What
// spans a chunk (a tensor's or the whole vector's top-|τ| cut, TIES' majority sign) is found
// first in passes over the chunks (StreamedSelection), then each chunk's merge is the sharded
// merge's slice code told those quantities: bitwise the whole-vector merge, whatever the threads.
import Foundation

/// What a streamed merge reads and writes, chunk by chunk, from several threads at once.
public protocol StreamedMergeIO: Sendable {
    /// Bytes of scratch per element that `read` and `write` may use (`staging`).
    var stagingBytesPerElement: Int { get }
    /// Elements `elements` (indices within the tensor) of layout tensor `tensor` of input `input`
    /// (0 the base, t + 1 task t's fine-tuned model) as Float32, checked finite.
    func read(input: Int, tensor: Int, elements: Range<Int>, into values: UnsafeMutablePointer<Float>,
              staging: UnsafeMutableRawPointer) throws
    /// The merged model's values of those elements.
    func write(tensor: Int, elements: Range<Int>, values: UnsafePointer<Float>, staging: UnsafeMutableRawPointer) throws
}

/// The quantities a chunk of a streamed merge is told rather than finds: per task, the top-|τ|
/// cut of the scope the chunk lies in (TIES' trim: its tensor or the whole vector), breadcrumbs'
/// two cuts of its tensor, and TIES' sign total over the whole vector.
struct SliceStatistics {
    var trimCuts: [TopMagnitudeCut] = []
    var windowOuterCuts: [TopMagnitudeCut] = []
    var windowInnerCuts: [TopMagnitudeCut] = []
    var signTotal: Int?
}

public struct StreamedMerge {
    public let layout: ParameterLayout
    public let taskCount: Int
    public let settings: MergeSettings
    public let alpha: Float
    public let threads: Int
    public let chunkElements: Int
    /// The layout tensors this process merges (all of them, or one rank's share: whole tensors
    /// in layout order, the ranks' shares following each other in slot order).
    public let tensors: [Int]
    /// The sums over every process's share (`alone` for one process).
    public let collectives: MergeCollectives
    /// A top-k scope (a tensor) of at most this many entries, in one process, is held whole, one
    /// task vector at a time: its cuts come from `TopMagnitudeCut.top` in one pass, instead of
    /// histograms of 2^16 buckets in two. The same cuts either way.
    public let wholeScopeLimit: Int

    /// 64 Ki entries (norms, biases, small matrices): below it a quickselect beats zeroing and
    /// summing the histograms; above it the histograms' two linear passes beat the quickselect
    /// (per-tensor TIES on the 0.48 B benchmark: 12 s with a limit of 1 Mi, against 7–9 s).
    public static let defaultWholeScopeLimit = 1 << 16

    /// 64 Ki elements: each thread's T + 2 chunk buffers stay in its cache, and a pass over the
    /// inputs is a few thousand chunks for a model of hundreds of millions of parameters.
    public static let defaultChunkElements = 1 << 16

    /// Every method but those that need whole matrices at once (SVDs: tsv, iso_c, iso_cts).
    public static func supports(_ method: MergeMethodName) -> Bool {
        switch method {
        case .average, .taskArithmetic, .dare, .consensus, .magmax, .ties, .dareTies, .breadcrumbs: true
        case .tsv, .isoC, .isoCTS: false
        }
    }

    public init(layout: ParameterLayout, taskCount: Int, settings: MergeSettings, alpha: Float,
                threads: Int, chunkElements: Int = StreamedMerge.defaultChunkElements,
                tensors: [Int]? = nil, collectives: MergeCollectives = .alone,
                wholeScopeLimit: Int = StreamedMerge.defaultWholeScopeLimit) {
        precondition(Self.supports(settings.method) && taskCount >= 1 && threads >= 1 && chunkElements >= 1)
        self.layout = layout
        self.taskCount = taskCount
        self.settings = settings
        self.alpha = alpha
        self.threads = threads
        self.chunkElements = chunkElements
        self.tensors = tensors ?? Array(layout.specs.indices)
        self.collectives = collectives
        self.wholeScopeLimit = wholeScopeLimit
    }

    /// A stretch of at most `chunkElements` entries of one tensor.
    struct Chunk {
        let tensor: Int
        /// Indices within the tensor.
        let elements: Range<Int>
        /// The same entries' indices in the flattened layout.
        let global: Range<Int>
    }

    func chunks(ofTensor tensor: Int) -> [Chunk] {
        let range = layout.range(at: tensor)
        return stride(from: 0, to: range.count, by: chunkElements).map { start in
            let elements = start..<min(start + chunkElements, range.count)
            return Chunk(tensor: tensor, elements: elements,
                         global: (range.lowerBound + elements.lowerBound)..<(range.lowerBound + elements.upperBound))
        }
    }

    /// Merges this process's tensors and writes them through `io`; returns the passes made over
    /// the inputs (1 for entry-wise methods; the cuts' and the sign total's passes before the
    /// last). Errors are the first in layout order that a sequential merge would meet; with
    /// several processes, each one's (the others throw PeerFailure at their next sum).
    public func run(_ io: some StreamedMergeIO) throws -> Int {
        let all = tensors.flatMap(chunks(ofTensor:))
        let pool = ChunkWorkers(count: threads, inputs: taskCount + 1, chunkElements: chunkElements,
                                stagingBytes: chunkElements * io.stagingBytesPerElement)
        let selection = StreamedSelection(merge: self, io: io, workers: pool)
        var told = [SliceStatistics](repeating: SliceStatistics(), count: layout.specs.count)
        var passes = 1
        if settings.method == .ties || settings.method == .dareTies {
            // The cuts (per tensor: this process's own) and this share's sign total, summed; every
            // process makes the same sums in the same order, whatever its share and its data.
            let total = try SliceAgreement(collectives: collectives).sum(count: 1) {
                try findCuts(&told, over: all, selection: selection)
                return [Double(try signTotal(of: all, told: told, pool: pool, io: io))]
            }
            for tensor in tensors { told[tensor].signTotal = Int(total[0]) }
            passes += 1
        } else {
            try findCuts(&told, over: all, selection: selection)
        }
        try writeMerged(all, told: told, pool: pool, io: io)
        return passes + selection.passes
    }

    /// The top-|τ| cuts each chunk is told: TIES' (per tensor, or of the whole vector over every
    /// process's share) and Breadcrumbs' two per tensor.
    private func findCuts<IO>(_ told: inout [SliceStatistics], over all: [Chunk], selection: StreamedSelection<IO>) throws {
        switch settings.method {
        case .ties where settings.trim == .global:
            let keep = MagnitudeTrim.keptCount(settings.density, of: layout.totalCount)
            let cuts = try selection.cuts((0..<taskCount).map { ($0, keep) }, over: all,
                                          across: SliceAgreement(collectives: collectives))
            for tensor in tensors { told[tensor].trimCuts = cuts }
        case .ties:
            for tensor in tensors {
                let keep = MagnitudeTrim.keptCount(settings.density, of: layout.range(at: tensor).count)
                told[tensor].trimCuts = try selection.cuts((0..<taskCount).map { ($0, keep) }, over: chunks(ofTensor: tensor))
            }
        case .breadcrumbs:
            for tensor in tensors {
                let ranks = MagnitudeWindow.ranks(of: layout.range(at: tensor).count, density: settings.density, gamma: settings.gamma)
                let targets = (0..<taskCount).flatMap { [($0, ranks.window), ($0, ranks.dropped)] }
                let cuts = try selection.cuts(targets, over: chunks(ofTensor: tensor))
                told[tensor].windowOuterCuts = stride(from: 0, to: cuts.count, by: 2).map { cuts[$0] }
                told[tensor].windowInnerCuts = stride(from: 1, to: cuts.count, by: 2).map { cuts[$0] }
            }
        case .average, .taskArithmetic, .dare, .consensus, .magmax, .dareTies, .tsv, .isoC, .isoCTS:
            break
        }
    }

    /// This process's share of TIES' (or DARE-TIES') sign total, with the cuts known: one pass.
    private func signTotal(of all: [Chunk], told: [SliceStatistics], pool: ChunkWorkers, io: some StreamedMergeIO) throws -> Int {
        let share = SharedCount()
        try pool.forEach(all, reading: Array(0...taskCount), io: io) { worker, chunk in
            share.add(TaskVectorMerger.signTotal(worker.taskVectors(chunk), region: chunk.global, settings: settings,
                                                 told: told[chunk.tensor]))
        }
        return share.value
    }

    /// The last pass: each chunk merged as told, θ0 + α·Δ written through `io`.
    private func writeMerged(_ all: [Chunk], told: [SliceStatistics], pool: ChunkWorkers, io: some StreamedMergeIO) throws {
        try pool.forEach(all, reading: Array(0...taskCount), io: io) { worker, chunk in
            let delta = try TaskVectorMerger.mergedSlice(worker.taskVectors(chunk), region: chunk.global, layout: layout,
                                                         settings: settings, collectives: .alone, told: told[chunk.tensor])
            let merged = worker.output.pointer
            TaskArithmetic.merge(base: worker.inputs[0].pointer, taskVectorSum: delta.pointer, alpha: alpha,
                                 into: merged, count: chunk.elements.count)
            try io.write(tensor: chunk.tensor, elements: chunk.elements, values: merged, staging: worker.staging)
        }
    }
}

/// Sums over the processes of a merge that each enters even after failing on its own, so that
/// none waits for one that gave up: when any failed, every one throws (its own error, the others
/// PeerFailure).
struct SliceAgreement {
    let collectives: MergeCollectives

    /// `local()`'s `count` values summed over the processes.
    func sum(count: Int, _ local: () throws -> [Double]) throws -> [Double] {
        var values = [Double](repeating: 0, count: count)
        var failure: (any Error)?
        do {
            values = try local()
            precondition(values.count == count)
        } catch {
            failure = error
        }
        let summed = try collectives.sum(values + [failure == nil ? 0 : 1])
        guard summed[count] == 0 else { throw failure ?? PeerFailure() }
        return Array(summed[..<count])
    }
}

/// Each thread's buffers for a streamed merge: one chunk of every input, the merged chunk, the
/// IO's staging bytes, and the selection's histograms.
final class ChunkWorker: @unchecked Sendable {
    // Sendable: each worker is used by one thread at a time (ChunkWorkers.forEach hands them out).
    /// inputs[0] the base; inputs[t + 1] task t, holding τt = θt − θ0 once read with the base.
    let inputs: [FloatBuffer]
    let output: FloatBuffer
    let staging: UnsafeMutableRawPointer
    /// Kept between passes (zeroed, not reallocated): the selection makes two per tensor.
    var histogram: [Int] = []

    init(inputs: Int, chunkElements: Int, stagingBytes: Int) {
        self.inputs = (0..<inputs).map { _ in FloatBuffer(count: chunkElements) }
        output = FloatBuffer(count: chunkElements)
        staging = UnsafeMutableRawPointer.allocate(byteCount: max(stagingBytes, 16), alignment: 64)
    }

    deinit { staging.deallocate() }

    /// `histogram` as `count` zeros.
    func clearHistogram(_ count: Int) {
        if histogram.count == count {
            histogram.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        } else {
            histogram = [Int](repeating: 0, count: count)
        }
    }

    /// The tasks' values of `chunk` as slices of its length.
    func taskVectors(_ chunk: StreamedMerge.Chunk) -> [FloatBuffer] {
        inputs.dropFirst().map { FloatBuffer(viewing: $0, offset: 0, count: chunk.elements.count) }
    }
}

final class ChunkWorkers: @unchecked Sendable {
    // Sendable: `forEach` gives each worker to one thread and guards the shared cursor.
    let workers: [ChunkWorker]

    init(count: Int, inputs: Int, chunkElements: Int, stagingBytes: Int) {
        workers = (0..<count).map { _ in ChunkWorker(inputs: inputs, chunkElements: chunkElements, stagingBytes: stagingBytes) }
    }

    /// Runs `body` on every chunk on all workers at once, each chunk's `inputs` read first (and,
    /// with the base among them, the tasks' turned into task vectors). After a failure no later
    /// chunk starts, and the failure of the earliest chunk is thrown.
    func forEach(_ chunks: [StreamedMerge.Chunk], reading inputs: [Int], io: some StreamedMergeIO,
                 _ body: (ChunkWorker, StreamedMerge.Chunk) throws -> Void) throws {
        let cursor = ChunkCursor(count: chunks.count, workers: min(workers.count, chunks.count))
        let withBase = inputs.contains(0)
        try withoutActuallyEscaping(body) { body in
            try run(chunks, inputs: inputs, withBase: withBase, io: io, cursor: cursor, body)
        }
    }

    private func run(_ chunks: [StreamedMerge.Chunk], inputs: [Int], withBase: Bool, io: some StreamedMergeIO,
                     cursor: ChunkCursor, _ body: @escaping (ChunkWorker, StreamedMerge.Chunk) throws -> Void) throws {
        // Each call gets a worker of its own; what `body` shares it guards (or only reads).
        nonisolated(unsafe) let body = body
        DispatchQueue.concurrentPerform(iterations: min(workers.count, chunks.count)) { slot in
            let worker = workers[slot]
            while let index = cursor.next(slot) {
                let chunk = chunks[index]
                do {
                    for input in inputs {
                        try io.read(input: input, tensor: chunk.tensor, elements: chunk.elements,
                                    into: worker.inputs[input].pointer, staging: worker.staging)
                    }
                    if withBase {
                        for input in inputs where input > 0 {
                            let values = worker.inputs[input].pointer
                            ElementWise.subtract(values, values, worker.inputs[0].pointer, count: chunk.elements.count)
                        }
                    }
                    try body(worker, chunk)
                } catch {
                    cursor.fail(index, error)
                }
            }
        }
        if let failure = cursor.failure { throw failure }
    }
}

/// The chunks each worker takes, in order, and the earliest failure. Worker w of W takes the
/// w-th of W contiguous runs of chunks: the workers then mostly write different output files,
/// which the file system would otherwise make them take turns on.
private final class ChunkCursor: @unchecked Sendable {
    private let lock = NSLock()
    private var upcoming: [Int]
    private let ends: [Int]
    private var failed: (index: Int, error: any Error)?

    init(count: Int, workers: Int) {
        upcoming = (0..<workers).map { count * $0 / workers }
        ends = (0..<workers).map { count * ($0 + 1) / workers }
    }

    /// Worker `worker`'s next chunk; none past a failure of an earlier chunk.
    func next(_ worker: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        let index = upcoming[worker]
        guard index < ends[worker], failed == nil || index < failed!.index else { return nil }
        upcoming[worker] += 1
        return index
    }

    func fail(_ index: Int, _ error: any Error) {
        lock.lock()
        if failed == nil || index < failed!.index { failed = (index, error) }
        lock.unlock()
    }

    var failure: (any Error)? {
        lock.lock()
        defer { lock.unlock() }
        return failed?.error
    }
}

/// An integer total added to from several threads.
final class SharedCount: @unchecked Sendable {
    private let lock = NSLock()
    private var total = 0

    func add(_ amount: Int) {
        lock.lock()
        total += amount
        lock.unlock()
    }

    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return total
    }
}
