// JobPlan: a validated job, resolved into what the ranks execute (model, θ0 source, tasks, settings).
import Core
import JobSchema
import Foundation
import Worker

public enum ModelPlan: Sendable, Equatable {
    case mlp(MLPConfiguration)
    case vit(ViTConfiguration)

    /// A fresh backbone with its own workspace for `maxBatch` rows.
    public func makeBackbone(maxBatch: Int) -> any Backbone {
        switch self {
        case let .mlp(configuration): return MLPBackbone(configuration, maxBatch: maxBatch)
        case let .vit(configuration): return ViTBackbone(configuration, maxBatch: maxBatch)
        }
    }

    public var layout: ParameterLayout {
        switch self {
        case let .mlp(configuration): return configuration.layout
        case let .vit(configuration): return configuration.layout
        }
    }

    /// The shape of one input sample, as the backbone reads it.
    public var inputShape: [Int] {
        switch self {
        case let .mlp(configuration): return [configuration.inputCount]
        case let .vit(configuration): return [configuration.channels, configuration.height, configuration.width]
        }
    }

    public var inputCount: Int {
        switch self {
        case let .mlp(configuration): return configuration.inputCount
        case let .vit(configuration): return configuration.inputCount
        }
    }

    /// Width of the features a task head reads.
    public var featureCount: Int {
        switch self {
        case let .mlp(configuration): return configuration.hidden.last ?? configuration.inputCount
        case let .vit(configuration): return configuration.featureCount
        }
    }
}

/// Pre-training of θ0 on rank 0: a joint classifier over `fraction` of each dataset.
public struct PretrainPlan: Sendable, Equatable {
    public struct Source: Sendable, Equatable {
        public var name: String
        public var classes: Int
        public var train: DatasetSource
    }

    public var sources: [Source]
    public var fraction: Double
    public var training: TrainingSettings
}

public enum BaseSource: Sendable, Equatable {
    case file(URL)
    case pretrain(PretrainPlan)
    /// Seeded random initialisation.
    case initialization
}

/// One merge of step 7: a method with its knobs, the α values searched on validation, and the
/// label that names its report column and `merged/<label>.safetensors`.
public struct MergePlan: Sendable, Equatable {
    public var label: String
    public var settings: MergeSettings
    public var alphaGrid: [Double]

    public init(label: String, settings: MergeSettings, alphaGrid: [Double]) {
        self.label = label
        self.settings = settings
        self.alphaGrid = alphaGrid
    }
}

public struct JobPlan: Sendable {
    public var name: String
    public var seed: UInt64
    public var model: ModelPlan
    public var base: BaseSource
    public var tasks: [TaskPlan]
    public var mode: FineTuneMode
    public var finetune: TrainingSettings
    public var probe: ProbeSettings
    /// In job order.
    public var merges: [MergePlan]
    public var evaluateBatch: Int
    public var coordinatorTrains: Bool
    public var blasThreads: Int
    public var output: URL
    /// The fully-defaulted job text, recorded in the outputs.
    public var canonicalJob: String
    /// Save each task's training state every this many steps (0: only when it finishes).
    public var checkpointEvery = 0
    /// `merge.sharded`; `shardsMerging(worldSize:)` resolves `auto`.
    public var mergeSharding = MergeSharding.auto
    /// Task negation and the weight disentanglement error after merging (none unless set).
    public var analysis = AnalysisPlan()
    public var onTaskFailure = TaskFailurePolicy.abort
    /// Seconds a busy worker may stay silent before rank 0 ends the job naming it; 0: no limit.
    public var heartbeatTimeout = 600.0
    /// The job's sections that shape training (`JobConfig.trainingSections`), for the run manifest.
    public var trainingSections: [String: String] = [:]
    /// `orthofuse run --resume`: the output must hold an earlier run of this job.
    public var requiresResume = false

    public init(name: String, seed: UInt64, model: ModelPlan, base: BaseSource, tasks: [TaskPlan], mode: FineTuneMode,
                finetune: TrainingSettings, probe: ProbeSettings, merges: [MergePlan],
                evaluateBatch: Int, coordinatorTrains: Bool, blasThreads: Int, output: URL, canonicalJob: String) {
        self.name = name
        self.seed = seed
        self.model = model
        self.base = base
        self.tasks = tasks
        self.mode = mode
        self.finetune = finetune
        self.probe = probe
        self.merges = merges
        self.evaluateBatch = evaluateBatch
        self.coordinatorTrains = coordinatorTrains
        self.blasThreads = blasThreads
        self.output = output
        self.canonicalJob = canonicalJob
    }

    /// Identifies each task's own definition (classes, data files, validation split), by name.
    public var taskDefinitions: [String: String] {
        Dictionary(uniqueKeysWithValues: tasks.map { ($0.name, Checksum.sha256("\($0)")) })
    }

    /// Task index → rank, round-robin over the ranks that work: how `orthofuse eval` spreads
    /// evaluations (fine-tuning is scheduled by TaskScheduler).
    public func assignment(worldSize: Int) -> [Int] {
        let workers = (coordinatorTrains || worldSize == 1) ? Array(0..<worldSize) : Array(1..<worldSize)
        return tasks.indices.map { workers[$0 % workers.count] }
    }

    /// The same plan for a subset of its tasks (those that succeeded), in job order.
    public func restricted(to indices: [Int]) -> JobPlan {
        var plan = self
        plan.tasks = indices.map { tasks[$0] }
        return plan
    }
}
