// Sparsification: the first of the three merge parts (sparsify × sign consensus × combine):
// magnitude top-k (TIES), random drop and rescale (DARE), magnitude window (Breadcrumbs).

/// Thins one task vector at a time into a scratch buffer. Cheap to re-run: the sign-consensus
/// combine reads each sparsified vector twice instead of storing T copies.
///
/// A sparsifier works on a region of the flattened layout (all of it, or one rank's slice in a
/// sharded merge): `taskVector` and `destination` hold the region's entries, index 0 being global
/// index region.lowerBound. Whatever depends on position (the tie order of a top-k, DARE's draws)
/// uses global indices, so a slice gets exactly the entries the whole vector would.
protocol TaskVectorSparsifier {
    func sparsify(task: Int, _ taskVector: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>)
}

/// Leaves task vectors as they are (average, task arithmetic).
struct NoSparsification: TaskVectorSparsifier {
    let count: Int

    func sparsify(task: Int, _ taskVector: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>) {
        destination.update(from: taskVector, count: count)
    }
}

/// The k largest magnitudes of a range, as a rule that can be applied entry by entry: entry i is
/// among them iff |x_i| > threshold, or |x_i| == threshold and i < tieIndexLimit. Ties at the
/// threshold go to the lowest indices, so exactly k entries qualify.
struct TopMagnitudeCut: Equatable {
    let threshold: Float
    let tieIndexLimit: Int

    /// Selects nothing.
    static let none = TopMagnitudeCut(threshold: .infinity, tieIndexLimit: Int.min)

    @inline(__always) func contains(_ value: Float, at index: Int) -> Bool {
        let magnitude = abs(value)
        return magnitude > threshold || (magnitude == threshold && index < tieIndexLimit)
    }

    /// destination[j] = values[j] where the cut contains it (at global index firstIndex + j),
    /// else 0. The tie test on the index becomes a split of the range, so that each part is one
    /// comparison the compiler vectorises.
    func keep(_ values: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, count: Int, firstIndex: Int) {
        let split = tieIndexLimit <= firstIndex ? 0 : (tieIndexLimit - firstIndex >= count ? count : tieIndexLimit - firstIndex)
        let threshold = threshold
        for j in 0..<split {
            let value = values[j]
            destination[j] = abs(value) >= threshold ? value : 0
        }
        for j in split..<count {
            let value = values[j]
            destination[j] = abs(value) > threshold ? value : 0
        }
    }

    /// The cut keeping exactly k entries of values[range] (absolute indices), 0 ≤ k ≤ range.count.
    /// `scratch` must hold range.count floats.
    static func top(_ k: Int, of values: UnsafePointer<Float>, in range: Range<Int>,
                    scratch: UnsafeMutablePointer<Float>) -> TopMagnitudeCut {
        top(k, of: values + range.lowerBound, count: range.count, firstIndex: range.lowerBound, scratch: scratch)
    }

    /// The cut keeping exactly k of the n values at `values`, whose global indices start at
    /// `firstIndex`; 0 ≤ k ≤ n, `scratch` holds n floats. Cost: one quickselect (O(n) expected)
    /// plus two linear passes, instead of an O(n log n) sort.
    static func top(_ k: Int, of values: UnsafePointer<Float>, count n: Int, firstIndex: Int,
                    scratch: UnsafeMutablePointer<Float>) -> TopMagnitudeCut {
        precondition(k >= 0 && k <= n)
        if k == 0 { return .none }
        for i in 0..<n { scratch[i] = abs(values[i]) }
        let threshold = kthLargest(scratch, count: n, k: k)
        var greater = 0
        for i in 0..<n where abs(values[i]) > threshold { greater += 1 }
        var tiesNeeded = k - greater
        var limit = firstIndex
        for i in 0..<n where abs(values[i]) == threshold {
            tiesNeeded -= 1
            if tiesNeeded == 0 {
                limit = firstIndex + i + 1
                break
            }
        }
        return TopMagnitudeCut(threshold: threshold, tieIndexLimit: limit)
    }
}

/// The k-th largest (k ≥ 1) of values[0..<count], reordering them: quickselect with a
/// median-of-three pivot and three-way partition (many equal values, e.g. zeros of untouched
/// weights, stay linear), falling back to sorting the remaining range after 2·log2(n) + 8 rounds
/// so that adversarial inputs stay O(n log n). Values must not be NaN.
func kthLargest(_ values: UnsafeMutablePointer<Float>, count: Int, k: Int) -> Float {
    precondition(k >= 1 && k <= count)
    let target = count - k  // position in ascending order
    var low = 0
    var high = count - 1
    var rounds = 2 * (Int.bitWidth - count.leadingZeroBitCount) + 8
    while low < high {
        if rounds == 0 {
            var remaining = UnsafeMutableBufferPointer(start: values + low, count: high - low + 1)
            remaining.sort()
            return values[target]
        }
        rounds -= 1
        let a = values[low], b = values[low + (high - low) / 2], c = values[high]
        let pivot = max(min(a, b), min(max(a, b), c))
        // [low, less) < pivot, [less, index) == pivot, (greater, high] > pivot.
        var less = low, index = low, greater = high
        while index <= greater {
            let value = values[index]
            if value < pivot {
                values.swapAt(less, index)
                less += 1
                index += 1
            } else if value > pivot {
                values.swapAt(index, greater)
                greater -= 1
            } else {
                index += 1
            }
        }
        if target < less {
            high = less - 1
        } else if target > greater {
            low = greater + 1
        } else {
            return pivot
        }
    }
    return values[target]
}

extension UnsafeMutablePointer where Pointee == Float {
    @inline(__always) fileprivate func swapAt(_ i: Int, _ j: Int) {
        let value = self[i]
        self[i] = self[j]
        self[j] = value
    }
}

/// TIES step 1 (trim): keep each task vector's ⌊density·n⌋ largest magnitudes, n taken over the
/// whole flattened vector (`global`, the TIES paper and code) or over each tensor (`perTensor`,
/// mergekit); everything else becomes 0. Exactly ⌊density·n⌋ survive per scope: ties at the
/// threshold are kept in index order (the TIES code's `>=` keeps all ties, and one extra entry).
struct MagnitudeTrim: TaskVectorSparsifier {
    let region: Range<Int>
    /// The global ranges the top-k is taken over, each inside `region` and together covering it.
    let scopes: [Range<Int>]
    /// cuts[task][scope]
    let cuts: [[TopMagnitudeCut]]

    /// Cuts found here from the slices over `region`: the whole vector for `global`, whole
    /// tensors for `perTensor`.
    init(_ slices: [FloatBuffer], region: Range<Int>, layout: ParameterLayout, density: Double, scope: TrimScope) {
        let scopes = scope == .global
            ? [region]
            : layout.tensorIndices(overlapping: region).map { layout.range(at: $0) }
        let scratch = FloatBuffer(count: scopes.map(\.count).max() ?? 0)
        self.region = region
        self.scopes = scopes
        cuts = slices.map { slice in
            scopes.map { range in
                TopMagnitudeCut.top(Self.keptCount(density, of: range.count), of: slice.pointer + (range.lowerBound - region.lowerBound),
                                    count: range.count, firstIndex: range.lowerBound, scratch: scratch.pointer)
            }
        }
    }

    /// Global cuts, one per task, found over the whole vector elsewhere (a sharded merge).
    init(region: Range<Int>, globalCuts: [TopMagnitudeCut]) {
        self.region = region
        scopes = [region]
        cuts = globalCuts.map { [$0] }
    }

    /// ⌊density·n⌋, as both the TIES code and mergekit compute it.
    static func keptCount(_ density: Double, of n: Int) -> Int {
        min(Int((density * Double(n)).rounded(.down)), n)
    }

    func sparsify(task: Int, _ taskVector: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>) {
        let offset = region.lowerBound
        for (scope, range) in scopes.enumerated() {
            cuts[task][scope].keep(taskVector + (range.lowerBound - offset), into: destination + (range.lowerBound - offset),
                                   count: range.count, firstIndex: range.lowerBound)
        }
    }
}

/// DARE (Yu et al. 2024, "Language Models are Super Mario"): drop each entry independently with
/// probability p = 1 − density and multiply the survivors by 1/density (the paper's rescale;
/// mergekit's optional L1-norm rescale is not used). Entry i of task t is kept iff
/// u(seed, t, i) < density, u being the counter-based `CounterRandom(seed, "dare/task <t>")` at
/// the global index i: a task's mask depends only on (seed, t), not on which tasks are merged
/// with it, in what order, or which rank holds which slice.
struct RandomDrop: TaskVectorSparsifier {
    let region: Range<Int>
    let density: Double
    let seed: UInt64

    func sparsify(task: Int, _ taskVector: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>) {
        let count = region.count
        if density >= 1 {
            destination.update(from: taskVector, count: count)
            return
        }
        let random = Self.draws(seed: seed, task: task)
        let scale = Float(1 / density)
        let offset = region.lowerBound
        for i in 0..<count {
            destination[i] = random.uniform(at: offset + i) < density ? taskVector[i] * scale : 0
        }
    }

    static func draws(seed: UInt64, task: Int) -> CounterRandom {
        CounterRandom(seed: seed, label: "dare/task \(task)")
    }
}

/// Model Breadcrumbs (Davari & Belilovsky 2024): per tensor and per task, rank entries by
/// magnitude (largest first, ties by index), drop the top ⌊γ·n⌋ as outliers, keep the next
/// ⌊β·n⌋ (β = density) and zero the small rest. Needs γ + β ≤ 1.
struct MagnitudeWindow: TaskVectorSparsifier {
    let region: Range<Int>
    /// The tensors of `region`, which must hold whole tensors.
    let ranges: [Range<Int>]
    /// outer[task][tensor] keeps the top ⌊γn⌋ + ⌊βn⌋; inner[task][tensor] is the top ⌊γn⌋ dropped.
    let outer: [[TopMagnitudeCut]]
    let inner: [[TopMagnitudeCut]]

    init(_ slices: [FloatBuffer], region: Range<Int>, layout: ParameterLayout, density: Double, gamma: Double) {
        self.region = region
        ranges = layout.tensorIndices(overlapping: region).map { layout.range(at: $0) }
        let scratch = FloatBuffer(count: ranges.map(\.count).max() ?? 0)
        var outer: [[TopMagnitudeCut]] = []
        var inner: [[TopMagnitudeCut]] = []
        for slice in slices {
            var outerCuts: [TopMagnitudeCut] = []
            var innerCuts: [TopMagnitudeCut] = []
            for range in ranges {
                let ranks = Self.ranks(of: range.count, density: density, gamma: gamma)
                let values = slice.pointer + (range.lowerBound - region.lowerBound)
                outerCuts.append(.top(ranks.window, of: values, count: range.count, firstIndex: range.lowerBound,
                                      scratch: scratch.pointer))
                innerCuts.append(.top(ranks.dropped, of: values, count: range.count, firstIndex: range.lowerBound,
                                      scratch: scratch.pointer))
            }
            outer.append(outerCuts)
            inner.append(innerCuts)
        }
        self.outer = outer
        self.inner = inner
    }

    /// One slice inside a tensor whose per-task cuts were found elsewhere (a streamed merge's chunk).
    init(region: Range<Int>, outer: [TopMagnitudeCut], inner: [TopMagnitudeCut]) {
        self.region = region
        ranges = [region]
        self.outer = outer.map { [$0] }
        self.inner = inner.map { [$0] }
    }

    /// For a tensor of n entries: the top ⌊γn⌋ + ⌊βn⌋ (at most n) the window ends at, and the top
    /// ⌊γn⌋ (at most that) dropped from it.
    static func ranks(of n: Int, density: Double, gamma: Double) -> (window: Int, dropped: Int) {
        let dropped = Int((gamma * Double(n)).rounded(.down))
        let kept = Int((density * Double(n)).rounded(.down))
        let window = min(dropped + kept, n)
        return (window, min(dropped, window))
    }

    func sparsify(task: Int, _ taskVector: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>) {
        let offset = region.lowerBound
        for (tensor, range) in ranges.enumerated() {
            let keep = outer[task][tensor], drop = inner[task][tensor]
            for i in range {
                let value = taskVector[i - offset]
                destination[i - offset] = keep.contains(value, at: i) && !drop.contains(value, at: i) ? value : 0
            }
        }
    }
}
