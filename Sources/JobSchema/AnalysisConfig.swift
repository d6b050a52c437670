// AnalysisConfig: the `evaluate.negation` and `evaluate.disentanglement` settings of a job.
import Core

/// `evaluate.negation: {targets: [...], control: TASK, threshold: 0.95}`: evaluate θ0 − α·τ_target
/// for each target, α chosen on the job's α grid (`merge.alpha`) as in the paper.
public struct NegationConfig: Sendable, Equatable, Codable {
    /// The tasks to forget; nil = every task except the control.
    public let targets: [String]?
    /// The task whose accuracy must be kept.
    public let control: String
    /// The control's validation accuracy must stay ≥ threshold × its accuracy on θ0.
    public let threshold: Double

    enum CodingKeys: String, CodingKey, CaseIterable {
        case targets, control, threshold
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        targets = try container.decodeIfPresent([String].self, forKey: .targets)
        if let targets {
            try container.check(!targets.isEmpty, .targets, "must not be empty (leave it out for every task but the control)")
            if let index = StrictDecoding.firstRepeatedIndex(targets) {
                throw container.invalid(.targets, [AnyCodingKey.index(index)], "\(targets[index]) is listed twice")
            }
        }
        control = try container.required(String.self, .control)
        threshold = try container.number(.threshold, default: 0.95)
        try container.check(threshold > 0 && threshold <= 1, .threshold, "must be in (0, 1]")
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(targets, forKey: .targets)
        try container.encode(control, forKey: .control)
        try container.encodeNumber(threshold, forKey: .threshold)
    }

    /// The targets against the job's task names: every target the job's, the control too, and
    /// the control no target. A key path below `negation` and the message, or nil.
    func taskNameViolation(_ names: [String]) -> (path: [any CodingKey], message: String)? {
        let known = "(tasks: \(names.joined(separator: ", ")))"
        if !names.contains(control) { return ([CodingKeys.control], "unknown task \"\(control)\" \(known)") }
        for (index, target) in (targets ?? []).enumerated() {
            if !names.contains(target) {
                return ([CodingKeys.targets, AnyCodingKey.index(index)], "unknown task \"\(target)\" \(known)")
            }
            if target == control {
                return ([CodingKeys.targets, AnyCodingKey.index(index)], "\(target) is the control; a task cannot be both")
            }
        }
        if targets == nil, names.count < 2 {
            return ([CodingKeys.control], "negation needs a task besides the control to negate")
        }
        return nil
    }

    /// The targets in the job's task order.
    public func targetNames(among names: [String]) -> [String] {
        targets ?? names.filter { $0 != control }
    }
}

/// `evaluate.disentanglement`: the weight disentanglement error ξ(α1, α2) on a grid, for every pair
/// of tasks or the pairs listed. `false` skips it.
public struct DisentanglementConfig: Sendable, Equatable, Codable {
    /// 5 points on [0, 1]: the span merging searches, coarse enough that 2·25 evaluations per
    /// pair stay a small share of a run.
    public static let defaultGrid = AlphaRange(from: 0, to: 1, count: 5)
    /// Test inputs per task: a term of ξ is a mean of 0/1 disagreements, whose standard error over
    /// 1000 inputs is at most 0.016, while every input costs 2·|grid|² forward passes per pair.
    public static let defaultSamples = 1000
    public static let `default` = DisentanglementConfig(enabled: true, pairs: nil, grid: defaultGrid,
                                                        samples: defaultSamples)

    public let enabled: Bool
    /// Pairs of task names; nil = every pair, in job order.
    public let pairs: [[String]]?
    /// The α values of each axis.
    public let grid: AlphaRange
    /// At most this many test inputs per task (a seeded subset); 0 = the whole test split.
    public let samples: Int

    init(enabled: Bool, pairs: [[String]]?, grid: AlphaRange, samples: Int) {
        self.enabled = enabled
        self.pairs = pairs
        self.grid = grid
        self.samples = samples
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case pairs, grid, samples
    }

    enum GridKeys: String, CodingKey, CaseIterable {
        case from, to, count
    }

    public init(from decoder: any Decoder) throws {
        if let single = try? decoder.singleValueContainer(), let flag = try? single.decode(Bool.self) {
            self.init(enabled: flag, pairs: nil, grid: Self.defaultGrid, samples: Self.defaultSamples)
            return
        }
        guard (try? decoder.container(keyedBy: AnyCodingKey.self)) != nil else {
            throw JobFieldError(decoder.codingPath, "expected true, false or {pairs, grid}", showsWrittenValue: true)
        }
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        let pairs = try container.decodeIfPresent([[String]].self, forKey: .pairs)
        for (index, pair) in (pairs ?? []).enumerated() {
            if pair.count != 2 || pair[0] == pair[1] {
                throw container.invalid(.pairs, [AnyCodingKey.index(index)], "must name two different tasks")
            }
            if pairs![..<index].contains(where: { Set($0) == Set(pair) }) {
                throw container.invalid(.pairs, [AnyCodingKey.index(index)], "the pair \(pair[0]), \(pair[1]) is listed twice")
            }
        }
        if let pairs { try container.check(!pairs.isEmpty, .pairs, "must not be empty (leave it out for every pair)") }
        var grid = Self.defaultGrid
        if container.contains(.grid) {
            // Decoded here rather than as an AlphaRange: its count defaults to ξ's 5, not merging's 21.
            let nested = try container.nestedContainer(keyedBy: AnyCodingKey.self, forKey: .grid)
            try nested.rejectUnknownKeys(GridKeys.self)
            let gridContainer = try container.nestedContainer(keyedBy: GridKeys.self, forKey: .grid)
            let from = try gridContainer.number(.from, default: grid.from)
            let to = try gridContainer.number(.to, default: grid.to)
            try gridContainer.check(from <= to, .to, "must be >= from (\(from))")
            let count = try gridContainer.integer(.count, in: 1...JobLimits.disentanglementGrid, default: grid.count)
            grid = AlphaRange(from: from, to: to, count: count)
        }
        let samples = try container.integer(.samples, in: 0...JobLimits.validationExamples, default: Self.defaultSamples)
        self.init(enabled: true, pairs: pairs, grid: grid, samples: samples)
    }

    public func encode(to encoder: any Encoder) throws {
        guard enabled else {
            var single = encoder.singleValueContainer()
            try single.encode(false)
            return
        }
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(pairs, forKey: .pairs)
        try container.encode(grid, forKey: .grid)
        try container.encode(samples, forKey: .samples)
    }

    func taskNameViolation(_ names: [String]) -> (path: [any CodingKey], message: String)? {
        for (index, pair) in (pairs ?? []).enumerated() {
            for (side, name) in pair.enumerated() where !names.contains(name) {
                return ([CodingKeys.pairs, AnyCodingKey.index(index), AnyCodingKey.index(side)],
                        "unknown task \"\(name)\" (tasks: \(names.joined(separator: ", ")))")
            }
        }
        return nil
    }

    /// The pairs as task indices: the listed ones, else every pair (i < j) in job order.
    public func pairIndices(among names: [String]) -> [(Int, Int)] {
        guard enabled else { return [] }
        if let pairs {
            return pairs.compactMap { pair in
                guard let a = names.firstIndex(of: pair[0]), let b = names.firstIndex(of: pair[1]) else { return nil }
                return (a, b)
            }
        }
        return names.indices.flatMap { i in ((i + 1)..<names.count).map { (i, $0) } }
    }
}

extension JobLimits {
    /// Points per axis of the ξ grid: count² models are evaluated per pair.
    static let disentanglementGrid = 101
}

extension EvaluateConfig {
    /// Negation and ξ name tasks: the first name that is not the job's, as a key path below
    /// `evaluate` and a message.
    func taskNameViolation(_ names: [String]) -> (path: [any CodingKey], message: String)? {
        if let negation, let (path, message) = negation.taskNameViolation(names) {
            return ([CodingKeys.negation] + path, message)
        }
        if let (path, message) = disentanglement.taskNameViolation(names) {
            return ([CodingKeys.disentanglement] + path, message)
        }
        return nil
    }
}
