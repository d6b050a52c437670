// TaskConfig: one entry of `tasks:` (a classification task and its data) and of `pretrain.data:`.
import Core

/// A classification task: one rank fine-tunes on it and it contributes one task vector.
public struct TaskConfig: Sendable, Equatable, Codable {
    /// Unique within the job; used in file names.
    public let name: String
    public let classes: Int
    public let train: DatasetLocation
    public let test: DatasetLocation
    /// This task's held-out share of `train`; nil = the job's `validation_fraction`.
    public let validationFraction: Double?
    /// This task's fine-tuning steps; nil = `finetune.steps`.
    public let steps: Int?
    /// This task's frozen head from a file (ZeroShotHeadFile: CLIP's zero-shot class embeddings);
    /// nil = made on θ0 as `head:` says.
    public let head: JobPath?
    /// Per-channel normalisation of the inputs, after uint8 pixels are divided by 255.
    public let normalize: NormalizeConfig?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, classes, train, test
        case validationFraction = "validation_fraction"
        case steps, head, normalize
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        name = try container.required(String.self, .name)
        if let message = JobName.violation(name) { throw container.invalid(.name, message) }
        classes = try container.integer(.classes, in: 2...JobLimits.classes)
        train = try container.required(DatasetLocation.self, .train)
        test = try container.required(DatasetLocation.self, .test)
        validationFraction = try container.optionalNumber(.validationFraction)
        if let validationFraction {
            try container.check(
                validationFraction >= 0 && validationFraction <= 0.5, .validationFraction, "must be in [0, 0.5]"
            )
        }
        steps = try container.contains(.steps) ? container.integer(.steps, in: 1...JobLimits.steps) : nil
        head = try container.decodeIfPresent(JobPath.self, forKey: .head)
        normalize = try container.decodeIfPresent(NormalizeConfig.self, forKey: .normalize)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(classes, forKey: .classes)
        try container.encode(train, forKey: .train)
        try container.encode(test, forKey: .test)
        if let validationFraction {
            try container.encodeNumber(validationFraction, forKey: .validationFraction)
        }
        try container.encodeIfPresent(steps, forKey: .steps)
        try container.encodeIfPresent(head, forKey: .head)
        try container.encodeIfPresent(normalize, forKey: .normalize)
    }
}

/// `normalize: {mean: [...], std: [...]}`: one value per input channel (or one for all).
public struct NormalizeConfig: Sendable, Equatable, Codable {
    public let mean: [Double]
    public let std: [Double]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case mean, std
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        mean = try container.required([Double].self, .mean)
        std = try container.required([Double].self, .std)
        try container.check(!mean.isEmpty && mean.count <= 64, .mean, "must list 1 to 64 values (one per channel)")
        try container.check(std.count == mean.count, .std, "must list as many values as mean (\(mean.count))")
        try container.check(mean.allSatisfy(\.isFinite), .mean, "must be finite numbers")
        try container.check(std.allSatisfy { $0.isFinite && $0 > 0 }, .std, "must be positive numbers")
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(mean, forKey: .mean)
        try container.encode(std, forKey: .std)
    }

    public var normalization: ChannelNormalization {
        ChannelNormalization(mean: mean.map(Float.init), std: std.map(Float.init))
    }
}

/// An extra dataset for pre-training θ0: only its training split is read.
public struct PretrainDataset: Sendable, Equatable, Codable {
    public let name: String
    public let classes: Int
    public let train: DatasetLocation

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, classes, train
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        name = try container.required(String.self, .name)
        if let message = JobName.violation(name) { throw container.invalid(.name, message) }
        classes = try container.integer(.classes, in: 2...JobLimits.classes)
        train = try container.required(DatasetLocation.self, .train)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(classes, forKey: .classes)
        try container.encode(train, forKey: .train)
    }
}
