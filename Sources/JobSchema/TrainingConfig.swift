// TrainingConfig: the `finetune:`, `head:` and `pretrain:` sections and their optimizer and schedule.
import Core

/// An optimizer and its settings. A written `optimizer:` block starts from the schema's defaults
/// (weight decay 0.1 for AdamW, 0 for SGD) and needs `lr`; only a missing block takes the
/// section's default (e.g. the head's AdamW with lr 1e-2 and no weight decay).
public enum OptimizerConfig: Sendable, Equatable, Codable {
    case adamw(AdamWConfig)
    case sgd(SGDConfig)

    /// The word `name:` takes.
    public enum Name: String, Sendable, Codable, CaseIterable {
        case adamw, sgd
    }

    public var learningRate: Double {
        switch self {
        case .adamw(let settings): settings.learningRate
        case .sgd(let settings): settings.learningRate
        }
    }

    public var weightDecay: Double {
        switch self {
        case .adamw(let settings): settings.weightDecay
        case .sgd(let settings): settings.weightDecay
        }
    }

    /// The released code's recipe: AdamW, lr 1e-3, weight decay 0.1.
    public static let finetuneDefault = OptimizerConfig.adamw(AdamWConfig(learningRate: 1e-3, weightDecay: 0.1))
    /// A linear probe on frozen features: a larger step and no decay.
    public static let headDefault = OptimizerConfig.adamw(AdamWConfig(learningRate: 1e-2, weightDecay: 0))

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, lr
        case weightDecay = "weight_decay"
        case betas, eps, momentum
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        switch try container.choice(Name.self, .name, default: .adamw) {
        case .adamw:
            try container.refuse([.momentum], because: "only allowed with name: sgd")
            self = .adamw(try AdamWConfig(from: decoder))
        case .sgd:
            try container.refuse([.betas, .eps], because: "only allowed with name: adamw")
            self = .sgd(try SGDConfig(from: decoder))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .adamw(let settings):
            try container.encode(Name.adamw, forKey: .name)
            try settings.encode(to: encoder)
        case .sgd(let settings):
            try container.encode(Name.sgd, forKey: .name)
            try settings.encode(to: encoder)
        }
    }
}

/// AdamW with decoupled weight decay. Decoded from the `optimizer:` mapping, which checks the keys.
public struct AdamWConfig: Sendable, Equatable, Codable {
    public let learningRate: Double
    public let weightDecay: Double
    public let beta1: Double
    public let beta2: Double
    public let epsilon: Double

    public init(learningRate: Double, weightDecay: Double = 0.1,
                beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8) {
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
    }

    private typealias Keys = OptimizerConfig.CodingKeys

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        learningRate = try container.number(.lr)
        try container.check(learningRate > 0, .lr, "must be > 0")
        weightDecay = try container.number(.weightDecay, default: 0.1)
        try container.check(weightDecay >= 0, .weightDecay, "must be >= 0")
        let betas = try container.optional([Double].self, .betas, default: [0.9, 0.999])
        try container.check(betas.count == 2, .betas, "must be [beta1, beta2]")
        for (index, beta) in betas.enumerated() where !(beta >= 0 && beta < 1) {
            throw container.invalid(.betas, [AnyCodingKey.index(index)], "must be in [0, 1)")
        }
        (beta1, beta2) = (betas[0], betas[1])
        epsilon = try container.number(.eps, default: 1e-8)
        try container.check(epsilon > 0, .eps, "must be > 0")
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encodeNumber(learningRate, forKey: .lr)
        try container.encodeNumber(weightDecay, forKey: .weightDecay)
        try container.encode([ExactNumber(beta1), ExactNumber(beta2)], forKey: .betas)
        try container.encodeNumber(epsilon, forKey: .eps)
    }
}

/// SGD with heavy-ball momentum. Decoded from the `optimizer:` mapping, which checks the keys.
public struct SGDConfig: Sendable, Equatable, Codable {
    public let learningRate: Double
    public let weightDecay: Double
    public let momentum: Double

    public init(learningRate: Double, weightDecay: Double = 0, momentum: Double = 0.9) {
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.momentum = momentum
    }

    private typealias Keys = OptimizerConfig.CodingKeys

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        learningRate = try container.number(.lr)
        try container.check(learningRate > 0, .lr, "must be > 0")
        weightDecay = try container.number(.weightDecay, default: 0)
        try container.check(weightDecay >= 0, .weightDecay, "must be >= 0")
        momentum = try container.number(.momentum, default: 0.9)
        try container.check(momentum >= 0 && momentum < 1, .momentum, "must be in [0, 1)")
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encodeNumber(learningRate, forKey: .lr)
        try container.encodeNumber(weightDecay, forKey: .weightDecay)
        try container.encodeNumber(momentum, forKey: .momentum)
    }
}

/// Learning-rate schedule: linear warm-up from 0, then `decay` over the remaining steps.
public struct ScheduleConfig: Sendable, Equatable, Codable {
    public let warmupSteps: Int
    public let decay: LearningRateDecay

    public static let `default` = ScheduleConfig(warmupSteps: 0, decay: .constant)

    init(warmupSteps: Int, decay: LearningRateDecay) {
        self.warmupSteps = warmupSteps
        self.decay = decay
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case warmupSteps = "warmup_steps"
        case decay
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        warmupSteps = try container.integer(.warmupSteps, in: 0...JobLimits.steps, default: 0)
        decay = try container.choice(LearningRateDecay.self, .decay, default: .constant)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(warmupSteps, forKey: .warmupSteps)
        try container.encode(decay, forKey: .decay)
    }
}

/// Rank-r adapters B·A scaled by alpha/r; B starts at zero so training starts at θ0.
public struct LoRAConfig: Sendable, Equatable, Codable {
    public let rank: Int
    /// Defaults to `rank` (scale 1).
    public let alpha: Double

    public var scale: Double { alpha / Double(rank) }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case rank, alpha
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        rank = try container.integer(.rank, in: 1...JobLimits.loraRank)
        alpha = try container.number(.alpha, default: Double(rank))
        try container.check(alpha > 0, .alpha, "must be > 0")
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(rank, forKey: .rank)
        try container.encodeNumber(alpha, forKey: .alpha)
    }
}

/// The OrthoReg penalty λ·L_ortho(Δθ) added to the task loss (README, "OrthoReg").
public struct OrthoRegConfig: Sendable, Equatable, Codable {
    /// λ; 0 turns the penalty off.
    public let lambda: Double
    /// Plain norm (the released code's, the default), squared (the paper's), offdiagonal
    /// (decorrelation only) or l2 (the shrinkage control); OrthoReg.swift has the formulas.
    public let form: OrthoRegForm

    public var isEnabled: Bool { lambda > 0 }

    public static let off = OrthoRegConfig(lambda: 0, form: .frobenius)

    init(lambda: Double, form: OrthoRegForm) {
        self.lambda = lambda
        self.form = form
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case lambda, form
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        lambda = try container.number(.lambda, default: 0)
        try container.check(lambda >= 0, .lambda, "must be >= 0")
        form = try container.choice(OrthoRegForm.self, .form, default: .frobenius)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeNumber(lambda, forKey: .lambda)
        try container.encode(form, forKey: .form)
    }
}

/// Fine-tuning θ0 on one task, producing its task vector.
public struct FineTuneConfig: Sendable, Equatable, Codable {
    public let mode: FineTuneMode
    public let steps: Int
    public let batchSize: Int
    /// Micro-batches each batch is cut into; a group of ranks training one task shares them out,
    /// and the result depends on this count, never on the group's size. 1 = the whole batch at once.
    /// When the job does not say, the job's model decides (`defaultMicroBatches(batchSize:architecture:)`).
    public internal(set) var microBatches: Int
    public let optimizer: OptimizerConfig
    public let schedule: ScheduleConfig
    /// Global-norm clipping threshold; 0 = off.
    public let gradClip: Double
    public let labelSmoothing: Double
    /// Present exactly when `mode` is `.lora`.
    public let lora: LoRAConfig?
    public let orthoreg: OrthoRegConfig
    /// Save a resumable checkpoint every this many steps; 0 = off.
    public let checkpointEvery: Int

    enum CodingKeys: String, CodingKey, CaseIterable {
        case mode, steps
        case batchSize = "batch_size"
        case microBatches = "micro_batches"
        case optimizer, schedule
        case gradClip = "grad_clip"
        case labelSmoothing = "label_smoothing"
        case lora, orthoreg
        case checkpointEvery = "checkpoint_every"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        mode = try container.choice(FineTuneMode.self, .mode, default: .full)
        steps = try container.integer(.steps, in: 1...JobLimits.steps)
        batchSize = try container.integer(.batchSize, in: 1...JobLimits.batchSize, default: 128)
        microBatches = try container.integer(.microBatches, in: 1...JobLimits.batchSize,
                                             default: Self.defaultMicroBatches(batchSize: batchSize))
        try container.check(batchSize % microBatches == 0, .microBatches,
                            "must divide finetune.batch_size (\(batchSize)) into equal micro-batches")
        optimizer = try container.optional(OptimizerConfig.self, .optimizer, default: .finetuneDefault)
        schedule = try container.optional(ScheduleConfig.self, .schedule, default: .default)
        if schedule.warmupSteps > steps {
            throw container.invalid(
                .schedule, [ScheduleConfig.CodingKeys.warmupSteps], "must be <= finetune.steps (\(steps))"
            )
        }
        gradClip = try container.number(.gradClip, default: 0)
        try container.check(gradClip >= 0, .gradClip, "must be >= 0")
        labelSmoothing = try container.number(.labelSmoothing, default: 0)
        try container.check(labelSmoothing >= 0 && labelSmoothing < 1, .labelSmoothing, "must be in [0, 1)")
        if mode == .lora {
            lora = try container.required(LoRAConfig.self, .lora)
        } else {
            try container.refuse([.lora], because: "only allowed with mode: lora")
            lora = nil
        }
        orthoreg = try container.optional(OrthoRegConfig.self, .orthoreg, default: .off)
        checkpointEvery = try container.integer(.checkpointEvery, in: 0...JobLimits.steps, default: 0)
    }

    /// 4 when that cuts the batch into micro-batches of at least 8 rows, else 1: spare ranks can
    /// then share a task (up to 4 per task) whatever the number of ranks. A job-level value, never
    /// derived from the world size: the result must not depend on how many ranks run it.
    public static func defaultMicroBatches(batchSize: Int) -> Int {
        batchSize % 4 == 0 && batchSize / 4 >= 8 ? 4 : 1
    }

    /// The default for a job's model: a transformer (vit, clip_vit) takes `defaultMicroBatches(batchSize:)`,
    /// which costs its step on one rank nothing measurable (it runs in cache blocks of a few samples
    /// either way: the demo ViT's step 27.1–27.7 ms at 1 and at 4); an MLP takes 1, since its step is 9 % slower cut
    /// up (its small GEMMs pack the same weights four times), and an MLP job that wants spare ranks
    /// to share a task says `micro_batches: 4`.
    public static func defaultMicroBatches(batchSize: Int, architecture: ModelConfig.Architecture) -> Int {
        if case .mlp = architecture { return 1 }
        return defaultMicroBatches(batchSize: batchSize)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(mode, forKey: .mode)
        try container.encode(steps, forKey: .steps)
        try container.encode(batchSize, forKey: .batchSize)
        try container.encode(microBatches, forKey: .microBatches)
        try container.encode(optimizer, forKey: .optimizer)
        try container.encode(schedule, forKey: .schedule)
        try container.encodeNumber(gradClip, forKey: .gradClip)
        try container.encodeNumber(labelSmoothing, forKey: .labelSmoothing)
        try container.encodeIfPresent(lora, forKey: .lora)
        try container.encode(orthoreg, forKey: .orthoreg)
        try container.encode(checkpointEvery, forKey: .checkpointEvery)
    }
}

/// Each task's frozen head, made on θ0's features before fine-tuning. `kind: probe` (the default)
/// fits a linear probe on the whole training split; `kind: prototypes` is the analog of CLIP's
/// text heads, a head that never saw the training set in bulk: the normalised mean θ0 feature of
/// `shots` examples per class, read with cosine logits × `temperature`.
public struct HeadConfig: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case probe, prototypes
    }

    public let kind: Kind
    /// Probe only: its training.
    public let steps: Int
    public let batchSize: Int
    public let optimizer: OptimizerConfig
    /// Prototypes only: examples per class (the first of a seeded shuffle), and the logit scale.
    public let shots: Int
    public let temperature: Double

    public static let `default` = HeadConfig(steps: 300, batchSize: 256, optimizer: .headDefault)
    public static let defaultTemperature = 20.0

    init(kind: Kind = .probe, steps: Int, batchSize: Int, optimizer: OptimizerConfig, shots: Int = 0,
         temperature: Double = HeadConfig.defaultTemperature) {
        self.kind = kind
        self.steps = steps
        self.batchSize = batchSize
        self.optimizer = optimizer
        self.shots = shots
        self.temperature = temperature
    }

    /// `probe` or `prototypes-k`, as a sweep summary names the head.
    public var summaryName: String { kind == .probe ? "probe" : "prototypes-\(shots)" }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case kind, steps
        case batchSize = "batch_size"
        case optimizer, shots, temperature
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        kind = try container.choice(Kind.self, .kind, default: .probe)
        switch kind {
        case .probe:
            try container.refuse([.shots, .temperature], because: "only allowed with kind: prototypes")
            shots = 0
            temperature = Self.defaultTemperature
        case .prototypes:
            try container.refuse([.steps, .batchSize, .optimizer], because: "only allowed with kind: probe")
            shots = try container.integer(.shots, in: 1...JobLimits.batchSize)
            temperature = try container.number(.temperature, default: Self.defaultTemperature)
            try container.check(temperature > 0 && temperature <= 1e4, .temperature, "must be in (0, 10000]")
        }
        steps = try container.integer(.steps, in: 1...JobLimits.steps, default: 300)
        batchSize = try container.integer(.batchSize, in: 1...JobLimits.batchSize, default: 256)
        optimizer = try container.optional(OptimizerConfig.self, .optimizer, default: .headDefault)
    }

    /// A probe head writes only its probe keys (as before prototypes existed, so earlier run
    /// manifests still match); a prototype head only its own.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch kind {
        case .probe:
            try container.encode(steps, forKey: .steps)
            try container.encode(batchSize, forKey: .batchSize)
            try container.encode(optimizer, forKey: .optimizer)
        case .prototypes:
            try container.encode(kind, forKey: .kind)
            try container.encode(shots, forKey: .shots)
            try container.encodeNumber(temperature, forKey: .temperature)
        }
    }
}

/// Pre-training θ0 on rank 0 before fine-tuning, on a slice of each task's training split
/// (or on `data`, when given), for jobs that have no base checkpoint.
public struct PretrainConfig: Sendable, Equatable, Codable {
    /// Share of each training split used, in (0, 1].
    public let fraction: Double
    public let steps: Int
    public let batchSize: Int
    public let optimizer: OptimizerConfig
    public let schedule: ScheduleConfig
    /// Datasets to pre-train on instead of the job's tasks; nil = the tasks.
    public let data: [PretrainDataset]?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case fraction, steps
        case batchSize = "batch_size"
        case optimizer, schedule, data
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        fraction = try container.number(.fraction, default: 0.05)
        try container.check(fraction > 0 && fraction <= 1, .fraction, "must be in (0, 1]")
        steps = try container.integer(.steps, in: 1...JobLimits.steps)
        batchSize = try container.integer(.batchSize, in: 1...JobLimits.batchSize, default: 128)
        optimizer = try container.optional(OptimizerConfig.self, .optimizer, default: .finetuneDefault)
        schedule = try container.optional(ScheduleConfig.self, .schedule, default: .default)
        if schedule.warmupSteps > steps {
            throw container.invalid(
                .schedule, [ScheduleConfig.CodingKeys.warmupSteps], "must be <= pretrain.steps (\(steps))"
            )
        }
        data = try container.decodeIfPresent([PretrainDataset].self, forKey: .data)
        if let data {
            if let message = StrictDecoding.countViolation(data.count, 1...JobLimits.tasks) {
                throw container.invalid(.data, message)
            }
            if let index = StrictDecoding.firstRepeatedIndex(data.map(\.name)) {
                throw container.invalid(
                    .data, [AnyCodingKey.index(index), PretrainDataset.CodingKeys.name],
                    "duplicate name \"\(data[index].name)\""
                )
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeNumber(fraction, forKey: .fraction)
        try container.encode(steps, forKey: .steps)
        try container.encode(batchSize, forKey: .batchSize)
        try container.encode(optimizer, forKey: .optimizer)
        try container.encode(schedule, forKey: .schedule)
        try container.encodeIfPresent(data, forKey: .data)
    }
}
