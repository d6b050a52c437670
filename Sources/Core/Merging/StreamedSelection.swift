// StreamedSelection: exact top-k cuts of |τ| over many chunks (a tensor, or the whole vector)
// in two histogram passes (a small tensor: read whole, one quickselect), for a streamed merge:
// the cut `TopMagnitudeCut.top` would give if the whole scope were in memory.

/// Finite non-negative floats order like their bit patterns, so the k-th largest |τ| is found on
/// those 31 bits in two digits: a pass histograms the high 15 bits (exponent and 7 mantissa
/// bits) and names the bucket holding the k-th largest; a second histograms the low 16 bits of
/// the entries in that bucket, which names the threshold itself. Ties at the threshold are kept
/// in index order (as `TopMagnitudeCut.top` keeps them): when only some of them are, a third
/// pass counts them per chunk, and the chunk holding the last kept one names its index.
///
/// Counts add with `&+=`: they cannot overflow, and the checked `+=` keeps loops from vectorising.
final class StreamedSelection<IO: StreamedMergeIO> {
    private let merge: StreamedMerge
    private let io: IO
    private let workers: ChunkWorkers
    /// Passes over the inputs so far, counted as whole passes over the model: the histogram
    /// passes of every tensor make two, the tie passes (when some were needed) one more.
    private(set) var passes = 0
    private var countedTiePass = false

    private static var highBuckets: Int { 1 << 15 }
    private static var lowBuckets: Int { 1 << 16 }

    init(merge: StreamedMerge, io: IO, workers: ChunkWorkers) {
        self.merge = merge
        self.io = io
        self.workers = workers
    }

    @inline(__always) private static func magnitudeBits(_ value: Float) -> UInt32 {
        value.bitPattern & 0x7fff_ffff
    }

    /// For each target (a task and how many of its largest |τ| to keep), its cut over `scope` —
    /// and, `across` slices (ranks), over every slice's scope together, the slices' scopes
    /// lying in slot order along the vector: their histograms and tie counts are summed.
    func cuts(_ targets: [(task: Int, keep: Int)], over scope: [StreamedMerge.Chunk],
              across: SliceAgreement? = nil) throws -> [TopMagnitudeCut] {
        let wanted = targets.indices.filter { targets[$0].keep > 0 }
        var cuts = [TopMagnitudeCut](repeating: .none, count: targets.count)
        guard !wanted.isEmpty else { return cuts }
        let tasks = Array(Set(wanted.map { targets[$0].task })).sorted()
        let inputs = [0] + tasks.map { $0 + 1 }
        let size = scope.reduce(0) { $0 + $1.elements.count }
        if across == nil, size <= merge.wholeScopeLimit {
            return try inMemoryCuts(targets, over: scope, size: size, tasks: tasks, inputs: inputs)
        }
        passes = max(passes, 2)

        // Pass 1: the high digit's bucket of every wanted rank.
        let high = try combined(across, count: Self.highBuckets * merge.taskCount) {
            try histograms(over: scope, inputs: inputs, buckets: Self.highBuckets, count: merge.taskCount) { worker, chunk, counts in
            for task in tasks {
                let values = worker.inputs[task + 1].pointer, offset = task * Self.highBuckets
                for i in 0..<chunk.elements.count { counts[offset + Int(Self.magnitudeBits(values[i]) >> 16)] &+= 1 }
            }
        } }
        var bucket = [Int](repeating: 0, count: targets.count)
        var rank = [Int](repeating: 0, count: targets.count)  // 1-based, from the top, within the bucket
        for target in wanted {
            (bucket[target], rank[target]) = Self.bucket(holding: targets[target].keep, in: high, from: targets[target].task * Self.highBuckets,
                                                         count: Self.highBuckets)
        }

        // Pass 2: the low digit, within each target's bucket.
        let low = try combined(across, count: Self.lowBuckets * targets.count) {
            try histograms(over: scope, inputs: inputs, buckets: Self.lowBuckets, count: targets.count) { worker, chunk, counts in
            for target in wanted {
                let values = worker.inputs[targets[target].task + 1].pointer
                let prefix = UInt32(bucket[target]), offset = target * Self.lowBuckets
                for i in 0..<chunk.elements.count {
                    let key = Self.magnitudeBits(values[i])
                    if key >> 16 == prefix { counts[offset + Int(key & 0xffff)] &+= 1 }
                }
            }
        } }
        var partialTies: [(target: Int, key: UInt32, keptTies: Int)] = []
        for target in wanted {
            let (digit, ties) = Self.bucket(holding: rank[target], in: low, from: target * Self.lowBuckets, count: Self.lowBuckets)
            let key = UInt32(bucket[target]) << 16 | UInt32(digit)
            if ties == low[target * Self.lowBuckets + digit] {
                cuts[target] = TopMagnitudeCut(threshold: Float(bitPattern: key), tieIndexLimit: .max)  // every tie kept
            } else {
                partialTies.append((target, key, ties))
            }
        }
        if !partialTies.isEmpty {
            let limits = try lastKeptTies(partialTies.map { (targets[$0.target].task, $0.key, $0.keptTies) }, over: scope,
                                          across: across)
            for (tie, limit) in zip(partialTies, limits) {
                cuts[tie.target] = TopMagnitudeCut(threshold: Float(bitPattern: tie.key), tieIndexLimit: limit)
            }
        }
        return cuts
    }

    /// The cuts of a small scope, found by `TopMagnitudeCut.top` on its task vectors read whole
    /// (the scope's chunks are consecutive in the layout).
    private func inMemoryCuts(_ targets: [(task: Int, keep: Int)], over scope: [StreamedMerge.Chunk], size: Int,
                              tasks: [Int], inputs: [Int]) throws -> [TopMagnitudeCut] {
        passes = max(passes, 1)
        let start = scope[0].global.lowerBound
        let values = Dictionary(uniqueKeysWithValues: tasks.map { ($0, FloatBuffer(uninitializedCount: size)) })
        try workers.forEach(scope, reading: inputs, io: io) { worker, chunk in
            for task in tasks {
                (values[task]!.pointer + (chunk.global.lowerBound - start)).update(from: worker.inputs[task + 1].pointer,
                                                                                   count: chunk.elements.count)
            }
        }
        let scratch = FloatBuffer(uninitializedCount: size)
        return targets.map { target in
            TopMagnitudeCut.top(target.keep, of: values[target.task]!.pointer, count: size, firstIndex: start, scratch: scratch.pointer)
        }
    }

    /// `local()`, summed over the slices when there are several.
    private func combined(_ across: SliceAgreement?, count: Int, _ local: () throws -> [Int]) throws -> [Int] {
        guard let across else { return try local() }
        return try across.sum(count: count) { try local().map(Double.init) }.map { Int($0) }
    }

    /// The bucket (scanning from the top of counts[from..<from + count]) that holds the
    /// `rank`-th largest entry, and that entry's rank within it.
    private static func bucket(holding rank: Int, in counts: [Int], from start: Int, count: Int) -> (Int, Int) {
        var above = 0
        for bucket in stride(from: count - 1, through: 0, by: -1) {
            let inBucket = counts[start + bucket]
            if above + inBucket >= rank { return (bucket, rank - above) }
            above += inBucket
        }
        preconditionFailure("a histogram holds fewer entries than the rank sought")
    }

    /// Histograms of `count` × `buckets` counts over the scope, each worker adding its chunks
    /// into its own array; their sum (integers: the same in any order).
    private func histograms(over scope: [StreamedMerge.Chunk], inputs: [Int], buckets: Int, count: Int,
                            _ add: (ChunkWorker, StreamedMerge.Chunk, UnsafeMutablePointer<Int>) -> Void) throws -> [Int] {
        let size = buckets * count
        for worker in workers.workers { worker.clearHistogram(size) }
        try workers.forEach(scope, reading: inputs, io: io) { worker, chunk in
            worker.histogram.withUnsafeMutableBufferPointer { add(worker, chunk, $0.baseAddress!) }
        }
        var total = [Int](repeating: 0, count: size)
        for worker in workers.workers {
            for i in 0..<size { total[i] &+= worker.histogram[i] }
        }
        return total
    }

    /// For each tie (a task, the bits of its threshold |τ|, and how many entries at the threshold
    /// are kept), the global index + 1 of the last kept one in index order: the tie index limit
    /// that keeps exactly that many. One pass counts every tie per chunk; the slices' totals say
    /// which slice holds the last kept one, and that slice finds it in the one chunk that does.
    private func lastKeptTies(_ ties: [(task: Int, key: UInt32, kept: Int)], over scope: [StreamedMerge.Chunk],
                              across: SliceAgreement?) throws -> [Int] {
        if !countedTiePass {
            passes += 1
            countedTiePass = true
        }
        let slot = across?.collectives.slot ?? 0, slots = across?.collectives.slotCount ?? 1
        let tasks = Array(Set(ties.map(\.task))).sorted()
        let inputs = [0] + tasks.map { $0 + 1 }
        // perChunk[tie * scope.count + chunk]: written by one worker each.
        var perChunk = [Int](repeating: 0, count: ties.count * scope.count)
        let bySlot = try combined(across, count: ties.count * slots) {
            let position = Dictionary(uniqueKeysWithValues: scope.enumerated().map { ($1.global.lowerBound, $0) })
            try perChunk.withUnsafeMutableBufferPointer { perChunk in
                try workers.forEach(scope, reading: inputs, io: io) { worker, chunk in
                    let index = position[chunk.global.lowerBound]!
                    for (number, tie) in ties.enumerated() {
                        let values = worker.inputs[tie.task + 1].pointer
                        var found = 0
                        for i in 0..<chunk.elements.count { found &+= Self.magnitudeBits(values[i]) == tie.key ? 1 : 0 }
                        perChunk[number * scope.count + index] = found
                    }
                }
            }
            var mine = [Int](repeating: 0, count: ties.count * slots)
            for number in ties.indices {
                mine[number * slots + slot] = perChunk[(number * scope.count)..<((number + 1) * scope.count)].reduce(0, +)
            }
            return mine
        }
        return try combined(across, count: ties.count) {
            try ties.enumerated().map { number, tie in
                let before = (0..<slot).reduce(0) { $0 + bySlot[number * slots + $1] }
                guard tie.kept > before, tie.kept <= before + bySlot[number * slots + slot] else { return 0 }
                var remaining = tie.kept - before
                var index = 0
                while remaining > perChunk[number * scope.count + index] {
                    remaining -= perChunk[number * scope.count + index]
                    index += 1
                }
                var limit = 0
                try workers.forEach([scope[index]], reading: [0, tie.task + 1], io: io) { worker, chunk in
                    let values = worker.inputs[tie.task + 1].pointer
                    for i in 0..<chunk.elements.count where Self.magnitudeBits(values[i]) == tie.key {
                        remaining -= 1
                        if remaining == 0 {
                            limit = chunk.global.lowerBound + i + 1
                            return
                        }
                    }
                }
                return limit
            }
        }
    }
}
