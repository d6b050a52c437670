// MergeRecipe: the file `orthofuse merge --config` reads (method, knobs, α, base, models, output,
// the output's dtype).
import Core
import Foundation

/// The settings of one checkpoint merge, as YAML. Every key is optional because the command line
/// may supply or override it; the command checks that the combination is complete and that each
/// knob applies to the method. Keys are strict and values range-checked here, with one-line
/// errors naming the key (`merge.yaml: density: must be in (0, 1]`). Paths resolve against the
/// file's directory.
public struct MergeRecipe: Sendable, Equatable, Decodable {
    public let method: MergeMethodName?
    public let alpha: Double?
    public let density: Double?
    public let trim: TrimScope?
    public let gamma: Double?
    public let lambda: Double?
    public let k: Int?
    public let seed: UInt64?
    public let commonFraction: Double?
    public let base: JobPath?
    public let models: [JobPath]?
    public let output: JobPath?
    public let dtype: OutputDType?

    /// The knobs the file writes, in `MergeKnob` order.
    public var writtenKnobs: [MergeKnob] {
        MergeKnob.allCases.filter { knob in
            switch knob {
            case .density: density != nil
            case .trim: trim != nil
            case .gamma: gamma != nil
            case .lambda: lambda != nil
            case .k: k != nil
            case .seed: seed != nil
            case .commonFraction: commonFraction != nil
            }
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case method, alpha, density, trim, gamma, lambda, k, seed
        case commonFraction = "common_fraction"
        case base, models, output, dtype
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        method = try container.decodeIfPresent(String.self, forKey: .method).map {
            try StrictDecoding.member(MergeMethodName.self, $0, at: container.codingPath + [CodingKeys.method])
        }
        alpha = try container.optionalNumber(.alpha)
        func knob(_ key: CodingKeys, _ knob: MergeKnob) throws -> Double? {
            let value = try container.optionalNumber(key)
            if let value, let message = knob.rangeViolation(value) { throw container.invalid(key, message) }
            return value
        }
        density = try knob(.density, .density)
        trim = try container.decodeIfPresent(String.self, forKey: .trim).map {
            try StrictDecoding.member(TrimScope.self, $0, at: container.codingPath + [CodingKeys.trim])
        }
        gamma = try knob(.gamma, .gamma)
        lambda = try knob(.lambda, .lambda)
        k = container.contains(.k) ? try container.integer(.k, in: 1...JobLimits.tasks) : nil
        seed = try container.decodeIfPresent(UInt64.self, forKey: .seed)
        commonFraction = try knob(.commonFraction, .commonFraction)
        base = try container.decodeIfPresent(JobPath.self, forKey: .base)
        models = try container.decodeIfPresent([JobPath].self, forKey: .models)
        if let models, let message = StrictDecoding.countViolation(models.count, 1...JobLimits.tasks) {
            throw container.invalid(.models, message)
        }
        output = try container.decodeIfPresent(JobPath.self, forKey: .output)
        dtype = try container.decodeIfPresent(String.self, forKey: .dtype).map {
            try StrictDecoding.member(OutputDType.self, $0, at: container.codingPath + [CodingKeys.dtype])
        }
    }

    /// Reads and validates the file at `url`; `origin` names it in messages.
    public static func load(_ url: URL, origin: String) throws -> MergeRecipe {
        let text = try FileBytes.readText(url, origin: origin, limit: JobConfig.maximumFileSize, kind: "merge file")
        return try parse(text, origin: origin, baseDirectory: url.deletingLastPathComponent())
    }

    public static func parse(_ yaml: String, origin: String, baseDirectory: URL) throws -> MergeRecipe {
        try StrictYAML.decode(MergeRecipe.self, yaml: yaml, origin: origin, baseDirectory: baseDirectory,
                              documentKind: "merge file", topLevel: "a mapping of merge settings")
    }
}
