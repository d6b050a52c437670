// SlicedSelection: TIES' global top-k cut over task vectors split into slices across ranks, found
// exactly with a few sums of histograms instead of gathering the vectors.

enum SlicedTopMagnitude {
    /// The digits of |τ|'s 31 bits, most significant first: (shift, width).
    private static let digits: [(shift: UInt32, width: UInt32)] = [(20, 11), (10, 10), (0, 10)]

    /// Per task, the cut `TopMagnitudeCut.top(keep, …)` gives over the whole vector (the same
    /// threshold and tie index limit), from this slice's values over `region` and sums over all
    /// slices.
    ///
    /// Finite non-negative floats order like their bit patterns, so the k-th largest |τ| is found
    /// digit by digit on those bits: each round, every slice histograms the entries whose higher
    /// digits equal the prefix found so far; the histograms are summed; the bucket holding the
    /// k-th largest extends the prefix, and the entries in buckets above it count as greater.
    /// After three rounds the prefix is the threshold itself. Ties at the threshold are kept in
    /// global index order: the slices' tie counts, summed by slot, tell which slice holds the last
    /// kept tie, and that slice names its index.
    ///
    /// Collectives: 5 sums (of at most T·2048 values), whatever the data; 3 passes over the slice
    /// plus part of one. Values must be finite.
    static func cuts(_ slices: [FloatBuffer], region: Range<Int>, keep k: Int,
                     collectives: MergeCollectives) throws -> [TopMagnitudeCut] {
        let taskCount = slices.count
        let n = region.count
        var prefix = [UInt32](repeating: 0, count: taskCount)
        // 1-based rank, from the top, of the wanted entry among those matching the prefix.
        var wanted = [Int](repeating: k, count: taskCount)
        var greater = [Int](repeating: 0, count: taskCount)
        // The last round's local histogram, per task: its threshold bucket is this slice's tie count.
        var lastLocal: [[Int]] = []

        for (round, digit) in digits.enumerated() {
            let buckets = 1 << Int(digit.width)
            var histograms = [Double](repeating: 0, count: taskCount * buckets)
            lastLocal = []
            for task in 0..<taskCount {
                let local = histogram(slices[task].pointer, count: n, digit: digit, prefix: round == 0 ? nil : prefix[task])
                for bucket in 0..<buckets { histograms[task * buckets + bucket] = Double(local[bucket]) }
                lastLocal.append(local)
            }
            histograms = try collectives.sum(histograms)
            for task in 0..<taskCount where k > 0 {
                var above = 0
                var bucket = buckets - 1
                while bucket >= 0 {
                    let count = Int(histograms[task * buckets + bucket])
                    if above + count >= wanted[task] { break }
                    above += count
                    bucket -= 1
                }
                guard bucket >= 0 else {
                    throw OrthofuseError("merge ties: the slices hold fewer than \(k) entries of task vector \(task)")
                }
                greater[task] += above
                wanted[task] -= above
                prefix[task] = (prefix[task] << digit.width) | UInt32(bucket)
            }
        }

        // Ties at the threshold, by slot: which slice holds the wanted[task]-th one.
        let lowMask = UInt32((1 << Int(digits.last!.width)) - 1)
        let slots = collectives.slotCount
        var ties = [Double](repeating: 0, count: taskCount * slots)
        for task in 0..<taskCount where k > 0 {
            ties[task * slots + collectives.slot] = Double(lastLocal[task][Int(prefix[task] & lowMask)])
        }
        ties = try collectives.sum(ties)
        var limits = [Double](repeating: 0, count: taskCount)
        for task in 0..<taskCount where k > 0 {
            let before = (0..<collectives.slot).reduce(0) { $0 + Int(ties[task * slots + $1]) }
            let mine = Int(ties[task * slots + collectives.slot])
            guard wanted[task] > before, wanted[task] <= before + mine else { continue }
            var remaining = wanted[task] - before
            let values = slices[task].pointer
            for i in 0..<n where magnitudeBits(values[i]) == prefix[task] {
                remaining -= 1
                if remaining == 0 {
                    limits[task] = Double(region.lowerBound + i + 1)
                    break
                }
            }
        }
        limits = try collectives.sum(limits)
        return (0..<taskCount).map { task in
            k == 0 ? .none : TopMagnitudeCut(threshold: Float(bitPattern: prefix[task]), tieIndexLimit: Int(limits[task]))
        }
    }

    /// This slice's count per bucket of `digit`, over the entries whose higher digits equal
    /// `prefix` (all entries when nil: the first digit has no higher ones).
    private static func histogram(_ values: UnsafeMutablePointer<Float>, count n: Int,
                                  digit: (shift: UInt32, width: UInt32), prefix: UInt32?) -> [Int] {
        var counts = [Int](repeating: 0, count: 1 << Int(digit.width))
        counts.withUnsafeMutableBufferPointer { counts in
            guard let prefix else {
                for i in 0..<n { counts[Int(magnitudeBits(values[i]) >> digit.shift)] += 1 }
                return
            }
            let mask = UInt32(counts.count - 1)
            let prefixShift = digit.shift + digit.width
            for i in 0..<n {
                let key = magnitudeBits(values[i])
                if key >> prefixShift == prefix { counts[Int((key >> digit.shift) & mask)] += 1 }
            }
        }
        return counts
    }

    /// |x|'s bit pattern: for finite x, ordered as |x| is.
    @inline(__always) private static func magnitudeBits(_ value: Float) -> UInt32 {
        value.bitPattern & 0x7fff_ffff
    }
}
