// TaskWorker: everything one rank does for one task: load and split its data, fit the frozen
// head on θ0, fine-tune the backbone, and measure it.
import Core
import Reporting
import Foundation

/// One task of the job, with its files resolved.
public struct TaskPlan: Sendable, Equatable {
    public var name: String
    public var classes: Int
    public var train: DatasetSource
    public var test: DatasetSource
    public var validationFraction: Double
    public var validationMax: Int
    /// Fine-tuning steps of this task (its own `steps:` or the job's).
    public var steps: Int
    /// The task's frozen head from a file (`tasks[].head`), instead of one made on θ0.
    public var headFile: HeadFile?
    /// Per-channel normalisation of the task's inputs (`tasks[].normalize`).
    public var normalize: ChannelNormalization?

    /// A head file and its SHA-256 when the job was planned: part of the task's definition, so a
    /// run whose head file changed is not resumed as if it had not.
    public struct HeadFile: Sendable, Equatable, CustomStringConvertible {
        public var url: URL
        /// How messages name it (the job key and the path as written).
        public var label: String
        public var sha256: String

        public init(url: URL, label: String, sha256: String) {
            self.url = url
            self.label = label
            self.sha256 = sha256
        }

        public var description: String { "\(url.path) sha256 \(sha256)" }
    }

    public init(name: String, classes: Int, train: DatasetSource, test: DatasetSource,
                validationFraction: Double, validationMax: Int, steps: Int, headFile: HeadFile? = nil,
                normalize: ChannelNormalization? = nil) {
        self.name = name
        self.classes = classes
        self.train = train
        self.test = test
        self.validationFraction = validationFraction
        self.validationMax = validationMax
        self.steps = steps
        self.headFile = headFile
        self.normalize = normalize
    }
}

/// How the frozen head is made on θ0 features: a linear probe fitted on the training split, or
/// (`prototypes` set) k-shot class prototypes read with cosine logits.
public struct ProbeSettings: Sendable, Equatable {
    public var steps: Int
    public var batchSize: Int
    public var optimizer: OptimizerSettings
    public var prototypes: PrototypeSettings?

    public init(steps: Int, batchSize: Int, optimizer: OptimizerSettings, prototypes: PrototypeSettings? = nil) {
        self.steps = steps
        self.batchSize = batchSize
        self.optimizer = optimizer
        self.prototypes = prototypes
    }

    /// A head of this kind for `classes` classes, its parameters still zero.
    public func makeHead(classes: Int, featureCount: Int) -> ClassificationHead {
        ClassificationHead(classes: classes, featureCount: featureCount, normalizesFeatures: prototypes != nil)
    }
}

/// A task's splits, loaded once and kept for the evaluations after merging.
public struct TaskData: Sendable {
    public var train: Dataset
    public var validation: Dataset
    public var test: Dataset
}

/// What a worker hands back for one task.
public struct TrainedTask: @unchecked Sendable {
    // FloatBuffer and ClassificationHead are reference types, handed over once finished.
    public var name: String
    public var taskVector: FloatBuffer
    public var head: ClassificationHead
    public var data: TaskData
    public var entry: RunReport.TaskEntry
}


public enum TaskDataLoader {
    /// Loads a task's train and test files, checks them against the model and the task, and
    /// holds out the validation split with the task's own random stream.
    public static func load(_ task: TaskPlan, inputShape: [Int], seed: UInt64) throws -> TaskData {
        var train = try loadSplit(task.train, named: "train", of: task, inputShape: inputShape)
        let test = try loadSplit(task.test, named: "test", of: task, inputShape: inputShape)
        let validation = train.holdOutValidation(
            fraction: task.validationFraction, maxValidation: task.validationMax,
            random: RandomStream(seed: seed, label: "validation-split/\(task.name)"))
        return TaskData(train: train, validation: validation, test: test)
    }

    /// One split of a task, checked against the model's input and the task's classes (training
    /// and `orthofuse eval` both read splits through here). Images stored channels last
    /// [H, W, C] for a model reading [C, H, W] are transposed; then the task's normalisation.
    public static func loadSplit(_ source: DatasetSource, named split: String, of task: TaskPlan,
                                 inputShape: [Int]) throws -> Dataset {
        var data = try Dataset.load(source).arranged(for: inputShape)
        let inputCount = inputShape.reduce(1, *)
        guard data.featureCount == inputCount else {
            throw OrthofuseError(
                "task '\(task.name)': \(split) samples have \(data.featureCount) features (shape \(data.sampleShape)), the model input needs \(inputCount)")
        }
        if let bad = data.labels.first(where: { $0 < 0 || Int($0) >= task.classes }) {
            throw OrthofuseError("task '\(task.name)': \(split) label \(bad) is outside 0..<\(task.classes) (classes: \(task.classes))")
        }
        if let normalize = task.normalize {
            data = data.normalized(normalize, for: inputShape)
        }
        return data
    }
}

public final class TaskWorker {
    public let seed: UInt64
    public let base: FloatBuffer
    public let finetune: TrainingSettings
    public let probe: ProbeSettings
    public let console: Console
    /// Where each task's training checkpoint lives (`<directory>/<task>.safetensors`), how often it
    /// is saved, and the fingerprint of the job and θ0 it belongs to; nil: no checkpoints.
    public let checkpoints: (directory: URL, every: Int, fingerprint: String)?
    private let backbone: any Backbone
    private let regularizedForReport: [Int]

    /// `backbone` is this worker's own instance (it owns the activation workspace).
    public init(backbone: any Backbone, base: FloatBuffer, seed: UInt64, finetune: TrainingSettings,
                probe: ProbeSettings, console: Console,
                checkpoints: (directory: URL, every: Int, fingerprint: String)? = nil) {
        self.backbone = backbone
        self.base = base
        self.seed = seed
        self.finetune = finetune
        self.probe = probe
        self.console = console
        self.checkpoints = checkpoints
        regularizedForReport = finetune.regularizedParameters.isEmpty
            ? backbone.layout.specs.indices.filter { backbone.layout.specs[$0].isMatrix }
            : finetune.regularizedParameters
    }

    /// A task with its data loaded and its frozen head fitted on θ0 (or read back), ready to train.
    public struct PreparedTask {
        public var task: TaskPlan
        public var data: TaskData
        public var head: ClassificationHead
        public var zeroShotTest: Double
        public var zeroShotValidation: Double
        public var started: Date
    }

    /// A task already finished in this output directory (its files verified against the run
    /// manifest): read back instead of retrained, with what the report needs from its training.
    public struct FinishedTask: Codable, Sendable {
        public var taskVector: URL
        public var head: URL
        /// The files' SHA-256 as verified (they are not rewritten).
        public var taskVectorSHA256: String
        public var headSHA256: String
        public var finalLoss: Double
        public var trainSeconds: Double

        public init(taskVector: URL, head: URL, taskVectorSHA256: String, headSHA256: String, finalLoss: Double,
                    trainSeconds: Double) {
            self.taskVector = taskVector
            self.head = head
            self.taskVectorSHA256 = taskVectorSHA256
            self.headSHA256 = headSHA256
            self.finalLoss = finalLoss
            self.trainSeconds = trainSeconds
        }
    }

    /// Trains `task` on this rank alone: `prepare`, then `finish`. `betweenChunks` runs between
    /// the chunks of its evaluations and head fitting, as `onStep` between its steps.
    public func run(_ task: TaskPlan, finished: FinishedTask? = nil,
                    onStep: (TrainingProgress) throws -> Void = { _ in },
                    betweenChunks: BetweenChunks = {}) throws -> TrainedTask {
        try finish(prepare(task, finished: finished, betweenChunks: betweenChunks), finished: finished,
                   onStep: onStep, betweenChunks: betweenChunks)
    }

    /// Loads the task's splits and makes its frozen head (fitted on θ0 features, read from the
    /// task's head file, or read back for a finished task), then measures θ0 with it.
    public func prepare(_ task: TaskPlan, finished: FinishedTask? = nil,
                        betweenChunks: BetweenChunks = {}) throws -> PreparedTask {
        let started = Date()
        let data = try TaskDataLoader.load(task, inputShape: backbone.inputShape, seed: seed)
        console.info("\(task.name): \(data.train.count) train / \(data.validation.count) validation / \(data.test.count) test samples")

        let (head, madeHow) = try makeHead(task, train: data.train, finished: finished, betweenChunks: betweenChunks)
        let zeroShotTest = try Evaluation.accuracy(backbone: backbone, parameters: base, head: head, data: data.test,
                                                   betweenChunks: betweenChunks)
        let zeroShotValidation = try Evaluation.accuracy(backbone: backbone, parameters: base, head: head,
                                                         data: data.validation, betweenChunks: betweenChunks)
        console.info("\(task.name): head \(madeHow), zero-shot test accuracy \(percent(zeroShotTest))")
        return PreparedTask(task: task, data: data, head: head, zeroShotTest: zeroShotTest,
                            zeroShotValidation: zeroShotValidation, started: started)
    }

    /// The task's frozen head and how it was made: read back from a finished task, read from the
    /// task's head file, or fitted on θ0 features of `train` (a probe or prototypes).
    private func makeHead(_ task: TaskPlan, train: Dataset, finished: FinishedTask?,
                          betweenChunks: BetweenChunks) throws -> (ClassificationHead, String) {
        if let finished {
            let head = ClassificationHead(classes: task.classes, featureCount: backbone.featureCount,
                                          normalizesFeatures: task.headFile != nil || probe.prototypes != nil)
            let file = try Safetensors.read(finished.head)
            try head.layout.load(file, into: head.parameters, origin: finished.head.path)
            return (head, "read back")
        }
        if let headFile = task.headFile {
            let head = try ZeroShotHeadFile.load(headFile.url, classes: task.classes, featureCount: backbone.featureCount,
                                                 origin: headFile.label)
            return (head, "read from \(headFile.url.lastPathComponent)")
        }
        let head = probe.makeHead(classes: task.classes, featureCount: backbone.featureCount)
        if let prototypes = probe.prototypes {
            try PrototypeHead.fit(head: head, backbone: backbone, parameters: base, data: train, settings: prototypes,
                                  random: RandomStream(seed: seed, label: "prototypes/\(task.name)"), task: task.name,
                                  betweenChunks: betweenChunks)
        } else {
            try LinearProbe.fit(head: head, backbone: backbone, parameters: base, data: train, steps: probe.steps,
                                batchSize: probe.batchSize, optimizer: probe.optimizer,
                                random: RandomStream(seed: seed, label: "probe/\(task.name)"),
                                betweenChunks: betweenChunks)
        }
        return (head, "fitted on θ0")
    }

    /// Fine-tunes a prepared task (alone, or as one member of a data-parallel `group` whose
    /// members all call this with the same task), or reads a finished task's vector back; then
    /// evaluates the fine-tuned model. `onStep` runs after every step (a throw ends the task).
    public func finish(_ prepared: PreparedTask, group: (any MicroBatchGroup)? = nil, finished: FinishedTask? = nil,
                       onStep: (TrainingProgress) throws -> Void = { _ in },
                       betweenChunks: BetweenChunks = {}) throws -> TrainedTask {
        let task = prepared.task
        let head = prepared.head
        let data = prepared.data
        let parameters = FloatBuffer(count: base.count)
        let taskVector: FloatBuffer
        var finalLoss = Double.nan
        var resumedFrom = 0
        var trainSeconds = 0.0
        if let finished {
            taskVector = FloatBuffer(count: base.count)
            let file = try Safetensors.read(finished.taskVector)
            try backbone.layout.load(file, into: taskVector, origin: finished.taskVector.path)
            TaskArithmetic.merge(base: base, taskVectorSum: taskVector, alpha: 1, into: parameters)
            finalLoss = finished.finalLoss
            trainSeconds = finished.trainSeconds
            resumedFrom = task.steps
            console.info("\(task.name): already fine-tuned in this output (checksums verified); not retrained")
        } else {
            parameters.copy(from: base)
            (taskVector, finalLoss, resumedFrom) = try train(task, prepared: prepared, parameters: parameters,
                                                             group: group, onStep: onStep)
            trainSeconds = Date().timeIntervalSince(prepared.started)
        }
        // A linearized model is evaluated as f(x; θ0) + J(x; θ0)(θ − θ0), the model it trained.
        let linearization = finetune.parametrization == .linearized ? base : nil
        let finetunedTest = try Evaluation.accuracy(backbone: backbone, parameters: parameters, head: head,
                                                    data: data.test, linearizedAround: linearization,
                                                    betweenChunks: betweenChunks)
        let finetunedValidation = try Evaluation.accuracy(backbone: backbone, parameters: parameters, head: head,
                                                          data: data.validation, linearizedAround: linearization,
                                                          betweenChunks: betweenChunks)
        let norm = ElementWise.sumOfSquares(taskVector.pointer, count: taskVector.count).squareRoot()
        let penalty = OrthoRegularizer(settings: OrthoRegSettings(lambda: 1, form: finetune.orthoReg.form),
                                       layout: backbone.layout, parameterIndices: regularizedForReport)
            .value(updates: taskVector.pointer)
        console.info("\(task.name): fine-tuned test accuracy \(percent(finetunedTest)) (zero-shot \(percent(prepared.zeroShotTest))), ‖τ‖ \(String(format: "%.3f", norm)), \(String(format: "%.1f", Date().timeIntervalSince(prepared.started))) s")

        let entry = RunReport.TaskEntry(
            name: task.name, zeroShotAccuracy: prepared.zeroShotTest, finetunedAccuracy: finetunedTest,
            zeroShotValidationAccuracy: prepared.zeroShotValidation, finetunedValidationAccuracy: finetunedValidation,
            trainSamples: data.train.count, validationSamples: data.validation.count, testSamples: data.test.count,
            taskVectorNorm: norm, orthoRegPenalty: penalty, finalLoss: finalLoss, trainSeconds: trainSeconds,
            rank: console.rank, resumedFromStep: resumedFrom)
        return TrainedTask(name: task.name, taskVector: taskVector, head: head, data: data, entry: entry)
    }

    /// Fine-tunes from θ0 (resuming a matching checkpoint); returns τ, the last reported loss and
    /// the step resumed from.
    private func train(_ task: TaskPlan, prepared: PreparedTask, parameters: FloatBuffer,
                       group: (any MicroBatchGroup)?, onStep: (TrainingProgress) throws -> Void)
        throws -> (FloatBuffer, Double, Int) {
        var settings = self.finetune
        settings.steps = task.steps
        let trainer = Trainer(backbone: backbone, head: prepared.head, settings: settings)
        let checkpointing = checkpoints.map {
            Checkpointing(url: $0.directory.appendingPathComponent("\(task.name).safetensors"), every: $0.every,
                          fingerprint: "\($0.fingerprint)/\(task)")
        }
        let finetune = settings
        let console = self.console
        // The trainer reports every step (for heartbeats); the log shows a mean over a window.
        let logEvery = max(1, min(100, finetune.steps / 10))
        var window = (loss: 0.0, steps: 0, samples: 0, started: Date())
        var finalLoss = Double.nan
        var resumedFrom = 0
        let taskVector = try trainer.run(
            parameters: parameters, base: base, data: prepared.data.train,
            random: RandomStream(seed: seed, label: "finetune/\(task.name)"), label: "task '\(task.name)'",
            reportEvery: 1, checkpointing: checkpointing, group: group,
            progress: { progress in
                try onStep(progress)
                window.loss += progress.loss
                window.steps += 1
                window.samples += finetune.batchSize
                guard progress.step % logEvery == 0 || progress.step == progress.steps else { return }
                finalLoss = window.loss / Double(window.steps)
                let seconds = Date().timeIntervalSince(window.started)
                let ortho = finetune.orthoReg.isActive ? String(format: " orthoreg %.4f", progress.orthoReg) : ""
                console.info(String(
                    format: "%@: step %d/%d loss %.4f%@ lr %.2e %.0f samples/s",
                    task.name, progress.step, progress.steps, finalLoss, ortho, progress.learningRate,
                    seconds > 0 ? Double(window.samples) / seconds : 0))
                window = (0, 0, 0, Date())
            },
            resumed: { step in
                resumedFrom = step
                console.info(step == finetune.steps
                    ? "\(task.name): already fine-tuned (checkpoint at step \(step)); not retrained"
                    : "\(task.name): resuming from the checkpoint at step \(step)")
            })
        return (taskVector, finalLoss, resumedFrom)
    }

    private func percent(_ value: Double) -> String { String(format: "%.2f%%", 100 * value) }
}
