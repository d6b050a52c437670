// JobConfig: the job file (YAML) as validated value types; the whole run is described by it.
import Core
import Foundation

/// A job: the base model, the tasks to fine-tune on (one per rank), how to merge and evaluate,
/// and where to write. Only decoding creates one, and decoding validates every field, so a
/// `JobConfig` in hand is a valid job. Read one with `JobConfig.load(_:)`.
public struct JobConfig: Sendable, Equatable, Codable {
    public let name: String
    public let seed: UInt64
    public let model: ModelConfig
    /// A checkpoint to start from; excludes `pretrain`. With neither, θ0 is a seeded random init.
    public let base: JobPath?
    public let pretrain: PretrainConfig?
    public let tasks: [TaskConfig]
    /// Share of each training split held out for choosing α, in [0, 0.5].
    public let validationFraction: Double
    /// Cap on the held-out examples per task; 0 = no cap.
    public let validationMax: Int
    public let finetune: FineTuneConfig
    public let head: HeadConfig
    public let merge: MergeConfig
    public let evaluate: EvaluateConfig
    public let runtime: RuntimeConfig
    /// The run directory.
    public let output: JobPath

    /// The α values merging tries (see `AlphaRange.values`).
    public var alphaGrid: [Double] { merge.alpha.values }

    /// Values per input example once flattened.
    public var inputFeatureCount: Int { model.inputFeatureCount }

    /// The held-out share of `task`'s training split: its own override, else the job's.
    public func validationFraction(of task: TaskConfig) -> Double {
        task.validationFraction ?? validationFraction
    }

    /// Every file the job reads, in the order they are written.
    public var inputFiles: [JobPath] {
        var files: [JobPath] = []
        if let base { files.append(base) }
        for dataset in pretrain?.data ?? [] { files += dataset.train.files }
        for task in tasks { files += task.train.files + task.test.files }
        return files
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, seed, model, base, pretrain, tasks
        case validationFraction = "validation_fraction"
        case validationMax = "validation_max"
        case finetune, head, merge, evaluate, runtime, output
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        name = try container.required(String.self, .name)
        if let message = JobName.violation(name) { throw container.invalid(.name, message) }
        seed = try container.optional(UInt64.self, .seed, default: 1993)
        model = try container.required(ModelConfig.self, .model)
        base = try container.decodeIfPresent(JobPath.self, forKey: .base)
        pretrain = try container.decodeIfPresent(PretrainConfig.self, forKey: .pretrain)
        if base != nil, pretrain != nil {
            throw container.invalid(
                .pretrain, "not allowed together with base (the starting weights come from one or the other)"
            )
        }
        for (index, dataset) in (pretrain?.data ?? []).enumerated() {
            try Self.checkHeadSize(
                classes: dataset.classes, model: model, container: container,
                at: .pretrain,
                [PretrainConfig.CodingKeys.data, AnyCodingKey.index(index), PretrainDataset.CodingKeys.classes]
            )
        }
        tasks = try container.required([TaskConfig].self, .tasks)
        if let message = StrictDecoding.countViolation(tasks.count, 1...JobLimits.tasks) {
            throw container.invalid(.tasks, message)
        }
        if let index = StrictDecoding.firstRepeatedIndex(tasks.map(\.name)) {
            throw container.invalid(
                .tasks, [AnyCodingKey.index(index), TaskConfig.CodingKeys.name],
                "duplicate task name \"\(tasks[index].name)\""
            )
        }
        for (index, task) in tasks.enumerated() {
            try Self.checkHeadSize(
                classes: task.classes, model: model, container: container,
                at: .tasks, [AnyCodingKey.index(index), TaskConfig.CodingKeys.classes]
            )
        }
        validationFraction = try container.number(.validationFraction, default: 0.1)
        try container.check(
            validationFraction >= 0 && validationFraction <= 0.5, .validationFraction, "must be in [0, 0.5]"
        )
        validationMax = try container.integer(.validationMax, in: 0...JobLimits.validationExamples, default: 5000)
        var finetune = try container.required(FineTuneConfig.self, .finetune)
        if try !container.nestedContainer(keyedBy: FineTuneConfig.CodingKeys.self, forKey: .finetune).contains(.microBatches) {
            finetune.microBatches = FineTuneConfig.defaultMicroBatches(batchSize: finetune.batchSize,
                                                                       architecture: model.architecture)
        }
        self.finetune = finetune
        if finetune.mode == .attention, case .mlp = model.architecture {
            throw container.invalid(
                .finetune, [FineTuneConfig.CodingKeys.mode], "attention needs arch: vit or clip_vit (an MLP has no attention)"
            )
        }
        head = try container.optional(HeadConfig.self, .head, default: .default)
        merge = try container.optional(MergeConfig.self, .merge, default: .default)
        // Consensus keeps entries used by at least k tasks: with fewer tasks it keeps nothing.
        for (index, method) in merge.methods.enumerated()
        where method.settings.method == .consensus && method.settings.consensusK > tasks.count {
            throw container.invalid(
                .merge, [MergeConfig.CodingKeys.methods, AnyCodingKey.index(index), MergeMethodConfig.CodingKeys.k],
                "must be <= the number of tasks (\(tasks.count))"
            )
        }
        evaluate = try container.optional(EvaluateConfig.self, .evaluate, default: .default)
        if let (path, message) = evaluate.taskNameViolation(tasks.map(\.name)) {
            throw container.invalid(.evaluate, path, message)
        }
        runtime = try container.optional(RuntimeConfig.self, .runtime, default: .default)
        output = try container.required(JobPath.self, .output)
    }

    /// Refuses a classification head (classes × feature width) larger than one weight matrix may be.
    private static func checkHeadSize(
        classes: Int, model: ModelConfig, container: KeyedDecodingContainer<CodingKeys>,
        at key: CodingKeys, _ nested: [any CodingKey]
    ) throws {
        let entries = classes * model.featureWidth
        if entries > JobLimits.matrixEntries {
            throw container.invalid(
                key, nested,
                "a \(classes)-class head on \(model.featureWidth) features exceeds \(JobLimits.matrixEntries) weights"
            )
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(seed, forKey: .seed)
        try container.encode(model, forKey: .model)
        try container.encodeIfPresent(base, forKey: .base)
        try container.encodeIfPresent(pretrain, forKey: .pretrain)
        try container.encode(tasks, forKey: .tasks)
        try container.encodeNumber(validationFraction, forKey: .validationFraction)
        try container.encode(validationMax, forKey: .validationMax)
        try container.encode(finetune, forKey: .finetune)
        try container.encode(head, forKey: .head)
        try container.encode(merge, forKey: .merge)
        try container.encode(evaluate, forKey: .evaluate)
        try container.encode(runtime, forKey: .runtime)
        try container.encode(output, forKey: .output)
    }
}

/// Evaluation of the merged models on every task's validation and test splits, and the further
/// evaluations of the task vectors (AnalysisConfig.swift).
public struct EvaluateConfig: Sendable, Equatable, Codable {
    public let batchSize: Int
    /// Task negation; nil = not evaluated.
    public let negation: NegationConfig?
    /// The weight disentanglement error ξ; on by default.
    public let disentanglement: DisentanglementConfig

    public static let `default` = EvaluateConfig(batchSize: 1024)

    init(batchSize: Int, negation: NegationConfig? = nil, disentanglement: DisentanglementConfig = .default) {
        self.batchSize = batchSize
        self.negation = negation
        self.disentanglement = disentanglement
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case batchSize = "batch_size"
        case negation, disentanglement
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        batchSize = try container.integer(.batchSize, in: 1...JobLimits.batchSize, default: 1024)
        negation = try container.decodeIfPresent(NegationConfig.self, forKey: .negation)
        disentanglement = try container.optional(DisentanglementConfig.self, .disentanglement, default: .default)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(batchSize, forKey: .batchSize)
        try container.encodeIfPresent(negation, forKey: .negation)
        try container.encode(disentanglement, forKey: .disentanglement)
    }
}

/// What happens to the rest of a job when one task fails (a non-finite loss, an unreadable file).
public enum TaskFailurePolicy: String, Sendable, Equatable, Codable, CaseIterable {
    /// The job stops and reports the task's reason.
    case abort
    /// The other tasks go on; the merges use the tasks that succeeded, and the report lists the failed ones.
    case skip
}

/// How the ranks share the work.
public struct RuntimeConfig: Sendable, Equatable, Codable {
    /// Whether rank 0 fine-tunes tasks too, besides coordinating.
    public let coordinatorTrains: Bool
    /// BLAS threads per rank; 1 keeps ranks from oversubscribing the cores.
    public let blasThreads: Int
    public let onTaskFailure: TaskFailurePolicy
    /// Seconds a busy worker may go without reporting before rank 0 names it and ends the job;
    /// 0 turns the check off.
    public let heartbeatTimeout: Double

    public static let `default` = RuntimeConfig(coordinatorTrains: true, blasThreads: 1, onTaskFailure: .abort,
                                                heartbeatTimeout: 600)

    init(coordinatorTrains: Bool, blasThreads: Int, onTaskFailure: TaskFailurePolicy, heartbeatTimeout: Double) {
        self.coordinatorTrains = coordinatorTrains
        self.blasThreads = blasThreads
        self.onTaskFailure = onTaskFailure
        self.heartbeatTimeout = heartbeatTimeout
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case coordinatorTrains = "coordinator_trains"
        case blasThreads = "blas_threads"
        case onTaskFailure = "on_task_failure"
        case heartbeatTimeout = "heartbeat_timeout"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        coordinatorTrains = try container.optional(Bool.self, .coordinatorTrains, default: true)
        blasThreads = try container.integer(.blasThreads, in: 1...JobLimits.blasThreads, default: 1)
        onTaskFailure = try container.choice(TaskFailurePolicy.self, .onTaskFailure, default: .abort)
        heartbeatTimeout = try container.number(.heartbeatTimeout, default: 600)
        try container.check(heartbeatTimeout >= 0 && heartbeatTimeout <= 7 * 86_400, .heartbeatTimeout,
                            "must be in [0, 604800] seconds (0 turns it off)")
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(coordinatorTrains, forKey: .coordinatorTrains)
        try container.encode(blasThreads, forKey: .blasThreads)
        try container.encode(onTaskFailure, forKey: .onTaskFailure)
        try container.encodeNumber(heartbeatTimeout, forKey: .heartbeatTimeout)
    }
}
