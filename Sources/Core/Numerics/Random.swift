// Random: the project's seeded random streams (SplitMix64 seeding, xoshiro256** generation).
import Foundation

/// A deterministic random stream. Streams are derived from the job seed and a label (task name,
/// purpose) so that what a task sees does not depend on which rank runs it or in what order.
public struct RandomStream: Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var mixer = seed
        state = (Self.splitMix(&mixer), Self.splitMix(&mixer), Self.splitMix(&mixer), Self.splitMix(&mixer))
    }

    /// A stream for `label` under `seed`: FNV-1a of the label's UTF-8 mixed with the seed.
    public init(seed: UInt64, label: String) {
        self.init(seed: labelledSeed(seed, label))
    }

    private static func splitMix(_ x: inout UInt64) -> UInt64 {
        x = x &+ 0x9e37_79b9_7f4a_7c15
        return splitMixFinalizer(x)
    }

    public mutating func next() -> UInt64 {
        let result = rotate(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotate(state.3, 45)
        return result
    }

    @inline(__always) private func rotate(_ x: UInt64, _ k: UInt64) -> UInt64 {
        (x << k) | (x >> (64 - k))
    }

    /// Uniform in [0, 1) with 53 bits.
    public mutating func nextDouble() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// Uniform integer in 0..<bound (bound > 0), without modulo bias (Lemire's method).
    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0)
        let b = UInt64(bound)
        var product = next().multipliedFullWidth(by: b)
        if product.low < b {
            let threshold = (0 &- b) % b
            while product.low < threshold { product = next().multipliedFullWidth(by: b) }
        }
        return Int(product.high)
    }

    /// Standard normal (Box–Muller; one value per call keeps the stream simple to replay).
    public mutating func nextGaussian() -> Double {
        var u1 = nextDouble()
        while u1 <= 0 { u1 = nextDouble() }
        let u2 = nextDouble()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Fisher–Yates shuffle.
    public mutating func shuffle<T>(_ values: inout [T]) {
        guard values.count > 1 else { return }
        for i in stride(from: values.count - 1, to: 0, by: -1) {
            let j = nextInt(below: i + 1)
            values.swapAt(i, j)
        }
    }

    /// A random permutation of 0..<count.
    public mutating func permutation(_ count: Int) -> [Int] {
        var values = Array(0..<count)
        shuffle(&values)
        return values
    }
}

/// A counter-based generator: value i is a function of (key, i) alone, so any slice of the
/// sequence is drawn without the values before it (a rank of a sharded merge draws exactly the
/// entries of its slice, and the same ones as a single process). Value i is SplitMix64's i-th
/// output (Steele, Lea & Flood 2014) from the key: mix(key + (i + 1)·γ).
public struct CounterRandom: Sendable {
    public let key: UInt64

    /// Keyed like `RandomStream(seed:label:)`, then mixed once more so that nearby keys do not
    /// give shifted copies of one sequence.
    public init(seed: UInt64, label: String) {
        key = splitMixFinalizer(labelledSeed(seed, label))
    }

    @inline(__always) public func value(at index: Int) -> UInt64 {
        splitMixFinalizer(key &+ (UInt64(bitPattern: Int64(index)) &+ 1) &* 0x9e37_79b9_7f4a_7c15)
    }

    /// Uniform in [0, 1) with 53 bits.
    @inline(__always) public func uniform(at index: Int) -> Double {
        Double(value(at: index) >> 11) * 0x1.0p-53
    }
}

/// FNV-1a of the label's UTF-8, mixed with the seed.
private func labelledSeed(_ seed: UInt64, _ label: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in label.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    return seed ^ (hash &* 0x9e37_79b9_7f4a_7c15)
}

@inline(__always) private func splitMixFinalizer(_ x: UInt64) -> UInt64 {
    var z = x
    z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
    z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
    return z ^ (z >> 31)
}
