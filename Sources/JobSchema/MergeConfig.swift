// MergeConfig: the `merge:` section (which merging methods, with which knobs, over which α grids).
import Core

/// A setting of a merging method, named as the job file and `orthofuse merge` write it.
public enum MergeKnob: String, Sendable, CaseIterable {
    /// Share of each task vector kept (TIES' top-k, DARE's 1 − p, Breadcrumbs' β).
    case density
    /// Where TIES ranks magnitudes: the whole vector (the paper) or each tensor (mergekit).
    case trim
    /// Breadcrumbs' share of the largest |τ| dropped as outliers.
    case gamma
    /// Consensus' λ in m_t = 1{|τt| > λ·|τ_MTL − τt|}.
    case lambda
    /// Consensus' minimum number of tasks that must use an entry.
    case k
    /// DARE's random stream.
    case seed
    /// Iso-CTS' share of each matrix's rank given to the common subspace.
    case commonFraction = "common_fraction"

    /// The methods that read this knob; writing it for any other is an error, not a silent no-op.
    public var methods: [MergeMethodName] {
        switch self {
        case .density: [.ties, .dare, .dareTies, .breadcrumbs]
        case .trim: [.ties]
        case .gamma: [.breadcrumbs]
        case .lambda, .k: [.consensus]
        case .seed: [.dare, .dareTies]
        case .commonFraction: [.isoCTS]
        }
    }

    /// The command-line option that sets it (`--common-fraction`).
    public var flag: String { "--" + rawValue.replacingOccurrences(of: "_", with: "-") }

    /// "only allowed with name: ties, dare" (`word` is the key that names the method).
    public func notAllowedMessage(methodKey word: String) -> String {
        "only allowed with \(word): " + methods.map(\.rawValue).joined(separator: ", ")
    }

    /// The rule a numeric value breaks, or nil (`trim` and `seed` have no range).
    public func rangeViolation(_ value: Double) -> String? {
        guard value.isFinite else { return "must be a finite number" }
        return switch self {
        case .density: value > 0 && value <= 1 ? nil : "must be in (0, 1]"
        case .gamma: value >= 0 && value < 1 ? nil : "must be in [0, 1)"
        case .lambda: value >= 0 ? nil : "must be >= 0"
        case .k: value >= 1 ? nil : "must be > 0"
        case .commonFraction: value >= 0 && value <= 1 ? nil : "must be in [0, 1]"
        case .trim, .seed: nil
        }
    }

    /// The key in a merged file's metadata. λ, k and the seed are prefixed: run outputs already
    /// carry the job's seed and OrthoReg's λ.
    public var metadataKey: String {
        switch self {
        case .density, .trim, .gamma, .commonFraction: "orthofuse.\(rawValue)"
        case .lambda: "orthofuse.consensus_lambda"
        case .k: "orthofuse.consensus_k"
        case .seed: "orthofuse.merge_seed"
        }
    }
}

extension MergeMethodName {
    /// The knobs this method reads, in `MergeKnob` order.
    public var knobs: [MergeKnob] { MergeKnob.allCases.filter { $0.methods.contains(self) } }
}

extension MergeSettings {
    /// The knobs the method reads, with their values as text: what metadata and summaries show.
    public var knobValues: [(knob: MergeKnob, text: String)] {
        method.knobs.map { knob in
            switch knob {
            case .density: (knob, "\(density)")
            case .trim: (knob, trim.rawValue)
            case .gamma: (knob, "\(gamma)")
            case .lambda: (knob, "\(consensusLambda)")
            case .k: (knob, "\(consensusK)")
            case .seed: (knob, "\(seed)")
            case .commonFraction: (knob, "\(commonFraction)")
            }
        }
    }

    /// `orthofuse.method` and one `orthofuse.<knob>` entry per knob the method reads.
    public var metadata: [String: String] {
        var metadata = ["orthofuse.method": method.rawValue]
        for (knob, text) in knobValues { metadata[knob.metadataKey] = text }
        return metadata
    }

    /// "density 0.2, trim global", or "" for a method without knobs.
    public var knobSummary: String {
        knobValues.map { "\($0.knob.rawValue) \($0.text)" }.joined(separator: ", ")
    }

    /// A rule between knobs that each value alone cannot break: the knob to blame and the rule.
    public var combinationViolation: (knob: MergeKnob, message: String)? {
        // Breadcrumbs drops the top γ and keeps the next β of the entries: β + γ cannot exceed 1
        // (with the merger's slack for rounding, so that 0.9 + 0.1 passes).
        if method == .breadcrumbs, density + gamma > 1 + 1e-12 {
            return (.density, "must be <= 1 - gamma (\(1 - gamma)) for breadcrumbs")
        }
        return nil
    }
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

/// One entry of `merge.methods`: a method name (`ties`), or a mapping with its knobs and its own
/// α grid (`{name: ties, density: 0.2, trim: global, alpha: {from: 0.8, to: 2.5, count: 18}}`).
public struct MergeMethodConfig: Sendable, Equatable, Codable {
    /// Names the report entry and `merged/<label>.safetensors`: `label:` when written, else the
    /// method name, with `-2`, `-3`, … for the second and later unlabelled entries of one method.
    public let label: String
    public let settings: MergeSettings
    /// This method's own α grid; nil = `merge.alpha`.
    public let alpha: AlphaRange?
    /// Whether `label` was written (decoding only; repeats are numbered by `MergeConfig`).
    let labelWritten: Bool

    public init(label: String? = nil, settings: MergeSettings, alpha: AlphaRange? = nil) {
        self.label = label ?? settings.method.rawValue
        self.settings = settings
        self.alpha = alpha
        labelWritten = label != nil
    }

    private init(_ entry: MergeMethodConfig, label: String) {
        self.label = label
        settings = entry.settings
        alpha = entry.alpha
        labelWritten = entry.labelWritten
    }

    func relabeled(_ label: String) -> MergeMethodConfig { MergeMethodConfig(self, label: label) }

    /// Equal when they run the same merge under the same name (how the label came about does not matter).
    public static func == (lhs: MergeMethodConfig, rhs: MergeMethodConfig) -> Bool {
        lhs.label == rhs.label && lhs.settings == rhs.settings && lhs.alpha == rhs.alpha
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, label, density, trim, gamma, lambda, k, seed
        case commonFraction = "common_fraction"
        case alpha
    }

    private static func key(_ knob: MergeKnob) -> CodingKeys {
        switch knob {
        case .density: .density
        case .trim: .trim
        case .gamma: .gamma
        case .lambda: .lambda
        case .k: .k
        case .seed: .seed
        case .commonFraction: .commonFraction
        }
    }

    public init(from decoder: any Decoder) throws {
        if let single = try? decoder.singleValueContainer(), let word = try? single.decode(String.self) {
            let method = try StrictDecoding.member(MergeMethodName.self, word, at: decoder.codingPath)
            self.init(settings: MergeSettings(method: method))
            return
        }
        guard (try? decoder.container(keyedBy: AnyCodingKey.self)) != nil else {
            throw JobFieldError(
                decoder.codingPath, "expected a method name or {name: method, ...}", showsWrittenValue: true
            )
        }
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        let method = try container.choice(MergeMethodName.self, .name)
        for knob in MergeKnob.allCases where !knob.methods.contains(method) {
            try container.refuse([Self.key(knob)], because: knob.notAllowedMessage(methodKey: "name"))
        }
        var settings = MergeSettings(method: method)
        if let density = try container.optionalNumber(.density) {
            if let message = MergeKnob.density.rangeViolation(density) { throw container.invalid(.density, message) }
            settings.density = density
        }
        settings.trim = try container.choice(TrimScope.self, .trim, default: settings.trim)
        if let gamma = try container.optionalNumber(.gamma) {
            if let message = MergeKnob.gamma.rangeViolation(gamma) { throw container.invalid(.gamma, message) }
            settings.gamma = gamma
        }
        if let lambda = try container.optionalNumber(.lambda) {
            if let message = MergeKnob.lambda.rangeViolation(lambda) { throw container.invalid(.lambda, message) }
            settings.consensusLambda = lambda
        }
        settings.consensusK = try container.integer(.k, in: 1...JobLimits.tasks, default: settings.consensusK)
        settings.seed = try container.optional(UInt64.self, .seed, default: settings.seed)
        if let fraction = try container.optionalNumber(.commonFraction) {
            if let message = MergeKnob.commonFraction.rangeViolation(fraction) { throw container.invalid(.commonFraction, message) }
            settings.commonFraction = fraction
        }
        if let (knob, message) = settings.combinationViolation {
            throw container.invalid(Self.key(knob), message)
        }
        let label = try container.decodeIfPresent(String.self, forKey: .label)
        if let label, let message = JobName.violation(label) { throw container.invalid(.label, message) }
        let alpha = try container.decodeIfPresent(AlphaRange.self, forKey: .alpha)
        self.init(label: label, settings: settings, alpha: alpha)
    }

    /// A plain name when nothing but the method is set; otherwise every knob the method reads,
    /// defaults included, so the canonical text shows what ran.
    public func encode(to encoder: any Encoder) throws {
        let method = settings.method
        if method.knobs.isEmpty, alpha == nil, label == method.rawValue {
            var single = encoder.singleValueContainer()
            try single.encode(method.rawValue)
            return
        }
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(method.rawValue, forKey: .name)
        if label != method.rawValue { try container.encode(label, forKey: .label) }
        for knob in method.knobs {
            switch knob {
            case .density: try container.encodeNumber(settings.density, forKey: .density)
            case .trim: try container.encode(settings.trim.rawValue, forKey: .trim)
            case .gamma: try container.encodeNumber(settings.gamma, forKey: .gamma)
            case .lambda: try container.encodeNumber(settings.consensusLambda, forKey: .lambda)
            case .k: try container.encode(settings.consensusK, forKey: .k)
            case .seed: try container.encode(settings.seed, forKey: .seed)
            case .commonFraction: try container.encodeNumber(settings.commonFraction, forKey: .commonFraction)
            }
        }
        try container.encodeIfPresent(alpha, forKey: .alpha)
    }
}

/// `merge.sharded`: whether each rank receives and merges only its slice of every task vector
/// (`true`), every rank gathers and merges all of them (`false`), or the run decides by size (`auto`).
public enum MergeSharding: String, Sendable, CaseIterable {
    case auto
    case on = "true"
    case off = "false"
}

public struct MergeConfig: Sendable, Equatable, Codable {
    /// Each is run and reported under its label; labels are unique, and no entry repeats another.
    public let methods: [MergeMethodConfig]
    /// The α grid of every method that does not give its own.
    public let alpha: AlphaRange
    public let sharded: MergeSharding

    public static let `default` = MergeConfig(
        methods: [MergeMethodConfig(settings: MergeSettings(method: .taskArithmetic))], alpha: .default
    )

    init(methods: [MergeMethodConfig], alpha: AlphaRange, sharded: MergeSharding = .auto) {
        self.methods = methods
        self.alpha = alpha
        self.sharded = sharded
    }

    /// The α values tried for `method`: its own grid, else `merge.alpha`.
    public func alphaGrid(for method: MergeMethodConfig) -> [Double] {
        (method.alpha ?? alpha).values
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case methods, alpha, sharded
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        let entries = try container.optional([MergeMethodConfig].self, .methods, default: Self.default.methods)
        try container.check(!entries.isEmpty, .methods, "must not be empty")
        for (index, entry) in entries.enumerated() {
            if entries[..<index].contains(where: { $0.settings == entry.settings && $0.alpha == entry.alpha }) {
                throw container.invalid(
                    .methods, [AnyCodingKey.index(index)], "duplicate method \(entry.settings.method.rawValue)"
                )
            }
        }
        // Unlabelled repeats of one method (with different knobs) become ties, ties-2, ties-3, ….
        var occurrences: [MergeMethodName: Int] = [:]
        var labelled: [MergeMethodConfig] = []
        for entry in entries {
            guard !entry.labelWritten else {
                labelled.append(entry)
                continue
            }
            let method = entry.settings.method
            let occurrence = occurrences[method, default: 0] + 1
            occurrences[method] = occurrence
            labelled.append(occurrence == 1 ? entry : entry.relabeled("\(method.rawValue)-\(occurrence)"))
        }
        if let index = StrictDecoding.firstRepeatedIndex(labelled.map(\.label)) {
            let at: [any CodingKey] = labelled[index].labelWritten
                ? [AnyCodingKey.index(index), MergeMethodConfig.CodingKeys.label] : [AnyCodingKey.index(index)]
            throw container.invalid(
                .methods, at, "label \(labelled[index].label) is used twice (outputs are named after it; set label: to tell them apart)"
            )
        }
        methods = labelled
        alpha = try container.optional(AlphaRange.self, .alpha, default: .default)
        // A YAML boolean or the word auto; an empty value is the default.
        if try !container.contains(.sharded) || container.decodeNil(forKey: .sharded) {
            sharded = .auto
        } else if let flag = try? container.decode(Bool.self, forKey: .sharded) {
            sharded = flag ? .on : .off
        } else if (try? container.decode(String.self, forKey: .sharded)) == MergeSharding.auto.rawValue {
            sharded = .auto
        } else {
            throw JobFieldError(container.codingPath + [CodingKeys.sharded], "expected true, false or auto",
                                showsWrittenValue: true)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(methods, forKey: .methods)
        try container.encode(alpha, forKey: .alpha)
        switch sharded {
        case .auto: try container.encode(MergeSharding.auto.rawValue, forKey: .sharded)
        case .on: try container.encode(true, forKey: .sharded)
        case .off: try container.encode(false, forKey: .sharded)
        }
    }
}
