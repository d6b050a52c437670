// JobPlan+Config: resolving a validated job file into the plan the ranks execute.
import Core
import JobSchema
import Foundation
import Worker

extension OptimizerSettings {
    init(_ config: OptimizerConfig) {
        switch config {
        case let .adamw(settings):
            self = .adamw(learningRate: Float(settings.learningRate), weightDecay: Float(settings.weightDecay),
                          beta1: Float(settings.beta1), beta2: Float(settings.beta2), epsilon: Float(settings.epsilon))
        case let .sgd(settings):
            self.init(kind: .sgd(momentum: Float(settings.momentum)), learningRate: Float(settings.learningRate),
                      weightDecay: Float(settings.weightDecay))
        }
    }
}

extension JobPlan {
    /// A task's head file, checked readable, with its checksum (read once: a few MB at most).
    private static func headFile(_ path: JobPath) throws -> TaskPlan.HeadFile {
        try path.checkReadableFile()
        guard let data = try? Data(contentsOf: path.url) else { throw OrthofuseError("\(path.label): \(path.written): cannot read") }
        return TaskPlan.HeadFile(url: path.url, label: "\(path.label): \(path.written)", sha256: Checksum.sha256(data))
    }

    /// Checks what the file schema cannot (a mode the model does not support yet) and builds
    /// the plan. Throws one-line errors naming the key.
    public init(config: JobConfig) throws {
        let model = ModelPlan(config.model)
        let channels = ChannelNormalization.channels(of: model.inputShape)
        let tasks = try config.tasks.enumerated().map { index, task in
            if let normalize = task.normalize, normalize.mean.count != 1, normalize.mean.count != channels {
                throw OrthofuseError("tasks[\(index)].normalize: mean and std have \(normalize.mean.count) values; the model input has \(channels) channel(s) (give one value per channel, or one for all)")
            }
            return TaskPlan(name: task.name, classes: task.classes, train: task.train.source, test: task.test.source,
                            validationFraction: config.validationFraction(of: task), validationMax: config.validationMax,
                            steps: task.steps ?? config.finetune.steps, headFile: try task.head.map(Self.headFile),
                            normalize: task.normalize?.normalization)
        }
        self.init(
            name: config.name, seed: config.seed, model: model, base: BaseSource(config, layout: model.layout),
            tasks: tasks, mode: config.finetune.mode, finetune: try TrainingSettings(finetune: config, layout: model.layout),
            probe: ProbeSettings(config.head),
            merges: config.merge.methods.map {
                MergePlan(label: $0.label, settings: $0.settings, alphaGrid: config.merge.alphaGrid(for: $0))
            },
            evaluateBatch: config.evaluate.batchSize, coordinatorTrains: config.runtime.coordinatorTrains,
            blasThreads: config.runtime.blasThreads, output: config.output.url, canonicalJob: config.canonicalYAML)
        checkpointEvery = config.finetune.checkpointEvery
        mergeSharding = config.merge.sharded
        analysis = try AnalysisPlan(config: config)
        onTaskFailure = config.runtime.onTaskFailure
        heartbeatTimeout = config.runtime.heartbeatTimeout
        trainingSections = config.trainingSections
        try checkSchedules(config)
    }

    /// The checks across sections: a task's own step count against the warm-up, and α choice
    /// against the validation splits.
    private func checkSchedules(_ config: JobConfig) throws {
        if let task = config.tasks.first(where: { ($0.steps ?? Int.max) < config.finetune.schedule.warmupSteps }) {
            throw OrthofuseError("job.yaml: task '\(task.name)': steps \(task.steps!) is fewer than finetune.schedule.warmup_steps (\(config.finetune.schedule.warmupSteps))")
        }
        // α is chosen on the validation splits: without one, only a single α can be given.
        if let task = config.tasks.first(where: { config.validationFraction(of: $0) == 0 }),
           let merge = merges.first(where: { $0.alphaGrid.count > 1 }) {
            throw OrthofuseError("job.yaml: task '\(task.name)' has validation_fraction 0, so merge '\(merge.label)' cannot choose α from \(merge.alphaGrid.count) values; give a validation fraction or a single α (count: 1)")
        }
    }
}

extension ModelPlan {
    init(_ config: ModelConfig) {
        switch config.architecture {
        case let .mlp(shape):
            self = .mlp(MLPConfiguration(inputCount: config.inputFeatureCount, hidden: shape.hidden,
                                         activation: shape.activation))
        case let .vit(shape):
            self = .vit(Self.tower(shape, input: config.input))
        case let .clipViT(shape):
            self = .vit(Self.tower(shape.tower, input: config.input, flavor: .openCLIP(outputDim: shape.outputDim),
                                   activation: shape.activation))
        }
    }

    private static func tower(_ shape: ViTShape, input: [Int], flavor: ViTConfiguration.Flavor = .timm,
                              activation: TransformerActivation = .gelu) -> ViTConfiguration {
        ViTConfiguration(channels: input[0], height: input[1], width: input[2], patch: shape.patch,
                         dim: shape.width, depth: shape.depth, heads: shape.heads, mlpRatio: shape.mlpRatio,
                         flavor: flavor, activation: activation)
    }
}

extension TrainingSettings {
    /// The fine-tuning of every task: the mode decides which tensors train, which OrthoReg acts
    /// on, and the parametrization (direct, tangent or LoRA).
    init(finetune config: JobConfig, layout: ParameterLayout) throws {
        let finetune = config.finetune
        let mode = finetune.mode
        guard let trained = mode.trainedParameters(layout) else {
            throw OrthofuseError("job.yaml: finetune.mode: '\(mode.rawValue)' needs attention layers; arch \(config.model.architectureName.rawValue) has none (use full, lora or linearized)")
        }
        let parametrization: Parametrization
        switch mode {
        case .full, .attention:
            parametrization = .direct
        case .linearized:
            parametrization = .linearized
        case .lora:
            guard let lora = finetune.lora else {
                throw OrthofuseError("job.yaml: finetune.lora: required with mode: lora ({rank, alpha})")
            }
            parametrization = .lora(rank: lora.rank, alpha: Float(lora.alpha), targets: mode.loraTargets(layout))
        }
        self.init(
            steps: finetune.steps, batchSize: finetune.batchSize, microBatches: finetune.microBatches,
            optimizer: OptimizerSettings(finetune.optimizer),
            warmupSteps: finetune.schedule.warmupSteps, decay: finetune.schedule.decay,
            gradientClip: Float(finetune.gradClip), labelSmoothing: Float(finetune.labelSmoothing),
            orthoReg: OrthoRegSettings(lambda: Float(finetune.orthoreg.lambda), form: finetune.orthoreg.form),
            trainedParameters: trained, regularizedParameters: mode.regularizedParameters(layout),
            parametrization: parametrization)
    }
}

extension BaseSource {
    /// θ0: a file, a pre-training on the listed data (or the tasks' own), or the seeded initialization.
    init(_ config: JobConfig, layout: ParameterLayout) {
        if let path = config.base {
            self = .file(path.url)
        } else if let pretrain = config.pretrain {
            let sources = pretrain.data?.map { PretrainPlan.Source(name: $0.name, classes: $0.classes, train: $0.train.source) }
                ?? config.tasks.map { PretrainPlan.Source(name: $0.name, classes: $0.classes, train: $0.train.source) }
            let training = TrainingSettings(
                steps: pretrain.steps, batchSize: pretrain.batchSize, optimizer: OptimizerSettings(pretrain.optimizer),
                warmupSteps: pretrain.schedule.warmupSteps, decay: pretrain.schedule.decay,
                trainedParameters: Array(layout.specs.indices), trainsHead: true)
            self = .pretrain(PretrainPlan(sources: sources, fraction: pretrain.fraction, training: training))
        } else {
            self = .initialization
        }
    }
}

extension ProbeSettings {
    init(_ head: HeadConfig) {
        self.init(steps: head.steps, batchSize: head.batchSize, optimizer: OptimizerSettings(head.optimizer),
                  prototypes: head.kind == .prototypes
                      ? PrototypeSettings(shots: head.shots, temperature: Float(head.temperature)) : nil)
    }
}


