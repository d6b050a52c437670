// MergeConfig: the `merge:` section (which merging methods, over which α grid).

/// A way of combining task vectors into one model (REFERENCE §3).
public enum MergeMethod: String, Sendable, Codable, CaseIterable {
    /// θ0 + α Σt τt.
    case taskArithmetic = "task_arithmetic"
}

/// The α values tried on the validation splits: `count` evenly spaced points from `from` to `to`.
public struct AlphaRange: Sendable, Equatable, Codable {
    public let from: Double
    public let to: Double
    public let count: Int

    public static let `default` = AlphaRange(from: 0, to: 1, count: 21)

    init(from: Double, to: Double, count: Int) {
        self.from = from
        self.to = to
        self.count = count
    }

    /// The grid, ends included. Each point is from + (i·(to − from))/(count − 1), dividing last,
    /// so that the default grid hits 0, 0.05, …, 1.0 exactly as those literals; `count` 1 is
    /// just `from`.
    public var values: [Double] {
        guard count > 1 else { return [from] }
        let span = to - from
        let intervals = Double(count - 1)
        return (0..<count).map { index in
            index == count - 1 ? to : from + (Double(index) * span) / intervals
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case from, to, count
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        from = try container.number(.from, default: 0)
        to = try container.number(.to, default: 1)
        try container.check(from <= to, .to, "must be >= from (\(from))")
        count = try container.integer(.count, in: 1...JobLimits.alphaCount, default: 21)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeNumber(from, forKey: .from)
        try container.encodeNumber(to, forKey: .to)
        try container.encode(count, forKey: .count)
    }
}

public struct MergeConfig: Sendable, Equatable, Codable {
    /// Each is run and reported; no method is listed twice.
    public let methods: [MergeMethod]
    public let alpha: AlphaRange

    public static let `default` = MergeConfig(methods: [.taskArithmetic], alpha: .default)

    init(methods: [MergeMethod], alpha: AlphaRange) {
        self.methods = methods
        self.alpha = alpha
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case methods, alpha
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        methods = try container.choices(MergeMethod.self, .methods, default: [.taskArithmetic])
        try container.check(!methods.isEmpty, .methods, "must not be empty")
        if let index = StrictDecoding.firstRepeatedIndex(methods.map(\.rawValue)) {
            throw container.invalid(
                .methods, [AnyCodingKey.index(index)], "duplicate method \(methods[index].rawValue)"
            )
        }
        alpha = try container.optional(AlphaRange.self, .alpha, default: .default)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(methods, forKey: .methods)
        try container.encode(alpha, forKey: .alpha)
    }
}
