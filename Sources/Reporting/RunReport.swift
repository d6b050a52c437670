// RunReport: the contents of report.json and the results table printed at the end of a run.
import Core
import JobSchema
import Foundation

public struct RunReport: Codable, Sendable, Equatable {
    public struct TaskEntry: Codable, Sendable, Equatable {
        public var name: String
        /// Test accuracy of the head on θ0 (the frozen linear probe, no fine-tuning).
        public var zeroShotAccuracy: Double
        /// Test accuracy of θt, the model fine-tuned on this task alone.
        public var finetunedAccuracy: Double
        public var zeroShotValidationAccuracy: Double
        public var finetunedValidationAccuracy: Double
        public var trainSamples: Int
        public var validationSamples: Int
        public var testSamples: Int
        /// ‖τt‖₂ over the whole backbone.
        public var taskVectorNorm: Double
        /// Σ over regularised matrices of ‖G − I‖ of τt (the OrthoReg penalty of the final update).
        public var orthoRegPenalty: Double
        public var finalLoss: Double
        public var trainSeconds: Double
        public var rank: Int
        /// The checkpoint step training resumed from (the step count when a finished task's
        /// checkpoint made retraining unnecessary); 0 for a fresh start.
        public var resumedFromStep: Int

        public init(name: String, zeroShotAccuracy: Double, finetunedAccuracy: Double, zeroShotValidationAccuracy: Double, finetunedValidationAccuracy: Double, trainSamples: Int, validationSamples: Int, testSamples: Int, taskVectorNorm: Double, orthoRegPenalty: Double, finalLoss: Double, trainSeconds: Double, rank: Int, resumedFromStep: Int = 0) {
            self.name = name
            self.zeroShotAccuracy = zeroShotAccuracy
            self.finetunedAccuracy = finetunedAccuracy
            self.zeroShotValidationAccuracy = zeroShotValidationAccuracy
            self.finetunedValidationAccuracy = finetunedValidationAccuracy
            self.trainSamples = trainSamples
            self.validationSamples = validationSamples
            self.testSamples = testSamples
            self.taskVectorNorm = taskVectorNorm
            self.orthoRegPenalty = orthoRegPenalty
            self.finalLoss = finalLoss
            self.trainSeconds = trainSeconds
            self.rank = rank
            self.resumedFromStep = resumedFromStep
        }

        enum CodingKeys: String, CodingKey {
            case name, rank
            case zeroShotAccuracy = "zero_shot_accuracy"
            case finetunedAccuracy = "finetuned_accuracy"
            case zeroShotValidationAccuracy = "zero_shot_validation_accuracy"
            case finetunedValidationAccuracy = "finetuned_validation_accuracy"
            case trainSamples = "train_samples"
            case validationSamples = "validation_samples"
            case testSamples = "test_samples"
            case taskVectorNorm = "task_vector_norm"
            case orthoRegPenalty = "orthoreg_penalty"
            case finalLoss = "final_loss"
            case trainSeconds = "train_seconds"
            case resumedFromStep = "resumed_from_step"
        }
    }

    public struct PerTaskAccuracy: Codable, Sendable, Equatable {
        public var name: String
        public var accuracy: Double
        public var normalizedAccuracy: Double

        public init(name: String, accuracy: Double, normalizedAccuracy: Double) {
            self.name = name
            self.accuracy = accuracy
            self.normalizedAccuracy = normalizedAccuracy
        }

        enum CodingKeys: String, CodingKey {
            case name, accuracy
            case normalizedAccuracy = "normalized_accuracy"
        }
    }

    public struct AlphaPoint: Codable, Sendable, Equatable {
        public var alpha: Double
        public var validationNormalizedAccuracy: Double
        public var validationAbsoluteAccuracy: Double

        public init(alpha: Double, validationNormalizedAccuracy: Double, validationAbsoluteAccuracy: Double) {
            self.alpha = alpha
            self.validationNormalizedAccuracy = validationNormalizedAccuracy
            self.validationAbsoluteAccuracy = validationAbsoluteAccuracy
        }

        enum CodingKeys: String, CodingKey {
            case alpha
            case validationNormalizedAccuracy = "validation_normalized_accuracy"
            case validationAbsoluteAccuracy = "validation_absolute_accuracy"
        }
    }

    /// The knobs a merging method read; the ones it does not read are absent.
    public struct MergeKnobs: Codable, Sendable, Equatable {
        public var density: Double?
        public var trim: String?
        public var gamma: Double?
        public var lambda: Double?
        public var k: Int?
        public var seed: UInt64?

        public init(density: Double? = nil, trim: String? = nil, gamma: Double? = nil, lambda: Double? = nil,
                    k: Int? = nil, seed: UInt64? = nil) {
            self.density = density
            self.trim = trim
            self.gamma = gamma
            self.lambda = lambda
            self.k = k
            self.seed = seed
        }
    }

    public struct MergeEntry: Codable, Sendable, Equatable {
        public var method: String
        /// Names the column and the merged file; the method name unless the job gave another.
        public var label: String
        public var settings: MergeKnobs
        /// The α chosen on the validation splits.
        public var alpha: Double
        /// Mean over tasks of test accuracy of the merged model.
        public var absoluteAccuracy: Double
        /// Mean over tasks of accuracy(merged) / accuracy(fine-tuned), on test.
        public var normalizedAccuracy: Double
        /// The share of the fine-tuning gain the merge keeps, of the means over tasks:
        /// (merged − zero-shot) / (fine-tuned − zero-shot). Set by `RunReport.init`; absent in
        /// reports written before it existed.
        public var retention: Double?
        public var perTask: [PerTaskAccuracy]
        public var alphaCurve: [AlphaPoint]
        public var file: String

        public init(method: String, label: String? = nil, settings: MergeKnobs = MergeKnobs(), alpha: Double,
                    absoluteAccuracy: Double, normalizedAccuracy: Double, perTask: [PerTaskAccuracy],
                    alphaCurve: [AlphaPoint], file: String) {
            self.method = method
            self.label = label ?? method
            self.settings = settings
            self.alpha = alpha
            self.absoluteAccuracy = absoluteAccuracy
            self.normalizedAccuracy = normalizedAccuracy
            self.perTask = perTask
            self.alphaCurve = alphaCurve
            self.file = file
        }

        enum CodingKeys: String, CodingKey {
            case method, label, settings, alpha, file, retention
            case absoluteAccuracy = "absolute_accuracy"
            case normalizedAccuracy = "normalized_accuracy"
            case perTask = "per_task"
            case alphaCurve = "alpha_curve"
        }
    }

    public struct RunInfo: Codable, Sendable, Equatable {
        public var job: String
        public var seed: UInt64
        public var ranks: Int
        public var finetuneMode: String
        public var orthoRegLambda: Double
        public var orthoRegForm: String
        public var blasCore: String
        public var wallSeconds: Double
        public var version: String
        /// Where the wall time went, phase by phase in run order (rank 0's clock); absent in
        /// reports written before it was recorded.
        public var phases: [PhaseTime]?

        public init(job: String, seed: UInt64, ranks: Int, finetuneMode: String, orthoRegLambda: Double, orthoRegForm: String, blasCore: String, wallSeconds: Double, version: String, phases: [PhaseTime]? = nil) {
            self.job = job
            self.seed = seed
            self.ranks = ranks
            self.finetuneMode = finetuneMode
            self.orthoRegLambda = orthoRegLambda
            self.orthoRegForm = orthoRegForm
            self.blasCore = blasCore
            self.wallSeconds = wallSeconds
            self.version = version
            self.phases = phases
        }

        enum CodingKeys: String, CodingKey {
            case job, seed, ranks, version
            case finetuneMode = "finetune_mode"
            case orthoRegLambda = "orthoreg_lambda"
            case orthoRegForm = "orthoreg_form"
            case blasCore = "blas_core"
            case wallSeconds = "wall_seconds"
            case phases
        }
    }

    /// One phase of a run and the seconds it took.
    public struct PhaseTime: Codable, Sendable, Equatable {
        public var phase: String
        public var seconds: Double

        public init(phase: String, seconds: Double) {
            self.phase = phase
            self.seconds = seconds
        }
    }

    /// Splits a run's wall time into named phases: each `end(_:)` closes the phase that began at
    /// the previous one (or at the start).
    public final class PhaseClock: @unchecked Sendable {
        // @unchecked: used by the one thread that runs the job.
        public private(set) var phases: [PhaseTime] = []
        private var last = Date()

        public init() {}

        public func end(_ phase: String) {
            let now = Date()
            phases.append(PhaseTime(phase: phase, seconds: now.timeIntervalSince(last)))
            last = now
        }

        /// "θ0 0.3 s · training 12.1 s · …"
        public var summary: String {
            phases.map { String(format: "%@ %.1f s", $0.phase, $0.seconds) }.joined(separator: " · ")
        }
    }

    public var run: RunInfo
    public var tasks: [TaskEntry]
    public var merges: [MergeEntry]
    // Analyses of the task vectors and further evaluations (AnalysisReport.swift); absent in
    // reports written before they existed, hence optional.
    /// Cosine similarity of the whole flattened task vectors.
    public var cosineSimilarity: TaskMatrix?
    /// tensor → cosine matrix (tasks in `cosineSimilarity.tasks` order), per 2-D tensor.
    public var cosineSimilarityPerLayer: [String: [[Double]]]?
    /// task → tensor → ‖G − I‖_F of that 2-D tensor of τt (the OrthoReg penalty, frobenius form).
    public var orthoRegPenaltyPerLayer: [String: [String: Double]]?
    public var signConflict: SignConflictReport?
    /// task → tensor → the largest singular values of that 2-D tensor of τt, descending.
    public var singularValues: [String: [String: [Double]]]?
    public var negation: NegationReport?
    public var disentanglement: DisentanglementReport?
    /// Tasks that failed in a run with `runtime.on_task_failure: skip`; the merges leave them out.
    public var failedTasks: [FailedTask]?

    /// A task that did not produce a task vector, and why.
    public struct FailedTask: Codable, Sendable, Equatable {
        public var name: String
        public var reason: String
        public var rank: Int

        public init(name: String, reason: String, rank: Int) {
            self.name = name
            self.reason = reason
            self.rank = rank
        }
    }

    public init(run: RunInfo, tasks: [TaskEntry], merges: [MergeEntry]) {
        self.run = run
        self.tasks = tasks
        self.merges = merges
        let (zeroShot, finetuned) = (meanZeroShotAccuracy, meanFinetunedAccuracy)
        for index in self.merges.indices {
            self.merges[index].retention = Self.retention(
                merged: merges[index].absoluteAccuracy, zeroShot: zeroShot, finetuned: finetuned)
        }
    }

    /// Mean over tasks of the zero-shot test accuracy (θ0 with each task's frozen head).
    public var meanZeroShotAccuracy: Double { Self.mean(tasks.map(\.zeroShotAccuracy)) }
    /// Mean over tasks of the fine-tuned test accuracy (θt alone).
    public var meanFinetunedAccuracy: Double { Self.mean(tasks.map(\.finetunedAccuracy)) }

    /// (merged − zero-shot) / (fine-tuned − zero-shot): 1 keeps the whole fine-tuning gain, 0 is
    /// no better than θ0, negative is worse. nan when fine-tuning gained nothing.
    public static func retention(merged: Double, zeroShot: Double, finetuned: Double) -> Double {
        let gain = finetuned - zeroShot
        return gain > 0 ? (merged - zeroShot) / gain : .nan
    }

    static func mean(_ values: [Double]) -> Double {
        values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count)
    }

    enum CodingKeys: String, CodingKey {
        case run, tasks, merges, negation, disentanglement
        case failedTasks = "failed_tasks"
        case cosineSimilarity = "cosine_similarity"
        case cosineSimilarityPerLayer = "cosine_similarity_per_layer"
        case orthoRegPenaltyPerLayer = "orthoreg_penalty"
        case signConflict = "sign_conflict"
        case singularValues = "singular_values"
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // A diverged quantity must not lose the whole report: JSON has no inf/nan, write them as strings.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try encoder.encode(self)
    }

    /// The table printed at the end of a run: one row per task, one column per stage/method.
    public func table() -> String {
        var header = ["task", "zero-shot", "fine-tuned"]
        header += merges.map { "\($0.label) α=\(Self.format($0.alpha, digits: 2))" }
        var rows: [[String]] = []
        for (i, task) in tasks.enumerated() {
            var row = [task.name, Self.percent(task.zeroShotAccuracy), Self.percent(task.finetunedAccuracy)]
            row += merges.map { Self.percent($0.perTask[i].accuracy) }
            rows.append(row)
        }
        let count = Double(max(tasks.count, 1))
        var mean = ["mean (abs.)",
                    Self.percent(tasks.map(\.zeroShotAccuracy).reduce(0, +) / count),
                    Self.percent(tasks.map(\.finetunedAccuracy).reduce(0, +) / count)]
        mean += merges.map { Self.percent($0.absoluteAccuracy) }
        rows.append(mean)
        var normalized = ["mean (norm.)", "", ""]
        normalized += merges.map { Self.percent($0.normalizedAccuracy) }
        rows.append(normalized)
        // Retention: how much of the fine-tuning gain (fine-tuned − zero-shot) the merge keeps.
        var kept = ["retention", "", ""]
        kept += merges.map { $0.retention.map { Self.percent($0) + " %" } ?? "" }
        rows.append(kept)

        var lines = [TextTable.render(header: header, rows: rows)]
        for failed in failedTasks ?? [] {
            lines.append("\(failed.name): FAILED, left out of the merges (\(failed.reason))")
        }
        return lines.joined(separator: "\n")
    }

    static func percent(_ value: Double) -> String { format(100 * value, digits: 2) }

    static func format(_ value: Double, digits: Int) -> String {
        String(format: "%.\(digits)f", value)
    }
}
