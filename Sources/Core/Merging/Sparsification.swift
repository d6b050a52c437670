// Sparsification: the first of the three merge parts (sparsify × sign consensus × combine):
// magnitude top-k (TIES), random drop and rescale (DARE), magnitude window (Breadcrumbs).

/// Thins one task vector at a time into a scratch buffer of the full layout. Cheap to re-run:
/// the sign-consensus combine reads each sparsified vector twice instead of storing T copies.
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

    /// The cut keeping exactly k entries of values[range] (absolute indices), 0 ≤ k ≤ range.count.
    /// `scratch` must hold range.count floats. Cost: one quickselect (O(n) expected) plus two
    /// linear passes, instead of an O(n log n) sort.
    static func top(_ k: Int, of values: UnsafePointer<Float>, in range: Range<Int>,
                    scratch: UnsafeMutablePointer<Float>) -> TopMagnitudeCut {
        precondition(k >= 0 && k <= range.count)
        if k == 0 { return .none }
        let n = range.count
        for i in 0..<n { scratch[i] = abs(values[range.lowerBound + i]) }
        let threshold = kthLargest(scratch, count: n, k: k)
        var greater = 0
        for i in range where abs(values[i]) > threshold { greater += 1 }
        var tiesNeeded = k - greater
        var limit = range.lowerBound
        for i in range where abs(values[i]) == threshold {
            tiesNeeded -= 1
            if tiesNeeded == 0 {
                limit = i + 1
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
    /// The flat ranges the top-k is taken over.
    let scopes: [Range<Int>]
    /// cuts[task][scope]
    let cuts: [[TopMagnitudeCut]]

    init(_ taskVectors: [FloatBuffer], layout: ParameterLayout, density: Double, scope: TrimScope) {
        let scopes = scope == .global
            ? [0..<layout.totalCount]
            : layout.specs.indices.map { layout.range(at: $0) }
        let scratch = FloatBuffer(count: scopes.map(\.count).max() ?? 0)
        self.scopes = scopes
        cuts = taskVectors.map { vector in
            scopes.map { range in
                let keep = Int((density * Double(range.count)).rounded(.down))
                return TopMagnitudeCut.top(min(keep, range.count), of: vector.pointer, in: range, scratch: scratch.pointer)
            }
        }
    }

    func sparsify(task: Int, _ taskVector: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>) {
        for (scope, range) in scopes.enumerated() {
            let cut = cuts[task][scope]
            for i in range {
                let value = taskVector[i]
                destination[i] = cut.contains(value, at: i) ? value : 0
            }
        }
    }
}

/// DARE (Yu et al. 2024, "Language Models are Super Mario"): drop each entry independently with
/// probability p = 1 − density and multiply the survivors by 1/density (the paper's rescale;
/// mergekit's optional L1-norm rescale is not used). Task t draws from its own stream
/// RandomStream(seed, "dare/task <t>"), one uniform per entry in flat order, so a task's mask
/// depends only on (seed, t) and not on which tasks are merged with it or in what order.
struct RandomDrop: TaskVectorSparsifier {
    let count: Int
    let density: Double
    let seed: UInt64

    func sparsify(task: Int, _ taskVector: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>) {
        if density >= 1 {
            destination.update(from: taskVector, count: count)
            return
        }
        var stream = Self.stream(seed: seed, task: task)
        let scale = Float(1 / density)
        for i in 0..<count {
            destination[i] = stream.nextDouble() < density ? taskVector[i] * scale : 0
        }
    }

    static func stream(seed: UInt64, task: Int) -> RandomStream {
        RandomStream(seed: seed, label: "dare/task \(task)")
    }
}

/// Model Breadcrumbs (Davari & Belilovsky 2024): per tensor and per task, rank entries by
/// magnitude (largest first, ties by index), drop the top ⌊γ·n⌋ as outliers, keep the next
/// ⌊β·n⌋ (β = density) and zero the small rest. Needs γ + β ≤ 1.
struct MagnitudeWindow: TaskVectorSparsifier {
    let ranges: [Range<Int>]
    /// outer[task][tensor] keeps the top ⌊γn⌋ + ⌊βn⌋; inner[task][tensor] is the top ⌊γn⌋ dropped.
    let outer: [[TopMagnitudeCut]]
    let inner: [[TopMagnitudeCut]]

    init(_ taskVectors: [FloatBuffer], layout: ParameterLayout, density: Double, gamma: Double) {
        ranges = layout.specs.indices.map { layout.range(at: $0) }
        let scratch = FloatBuffer(count: ranges.map(\.count).max() ?? 0)
        var outer: [[TopMagnitudeCut]] = []
        var inner: [[TopMagnitudeCut]] = []
        for vector in taskVectors {
            var outerCuts: [TopMagnitudeCut] = []
            var innerCuts: [TopMagnitudeCut] = []
            for range in ranges {
                let n = Double(range.count)
                let dropped = Int((gamma * n).rounded(.down))
                let kept = Int((density * n).rounded(.down))
                let window = min(dropped + kept, range.count)
                outerCuts.append(.top(window, of: vector.pointer, in: range, scratch: scratch.pointer))
                innerCuts.append(.top(min(dropped, window), of: vector.pointer, in: range, scratch: scratch.pointer))
            }
            outer.append(outerCuts)
            inner.append(innerCuts)
        }
        self.outer = outer
        self.inner = inner
    }

    func sparsify(task: Int, _ taskVector: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>) {
        for (tensor, range) in ranges.enumerated() {
            let keep = outer[task][tensor], drop = inner[task][tensor]
            for i in range {
                let value = taskVector[i]
                destination[i] = keep.contains(value, at: i) && !drop.contains(value, at: i) ? value : 0
            }
        }
    }
}
