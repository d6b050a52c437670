// SweepSummary: a sweep's rows (one per cell × merge) from the cells' reports, summary.csv, and
// summary.html (mean ± std over seeds, merged accuracy against λ per mode).
import Core
import JobSchema
import Foundation

public struct SweepSummary: Sendable {
    /// One cell × merge. Accuracies are fractions in [0, 1], means over the cell's tasks.
    public struct Row: Sendable, Equatable {
        public var cell: String
        public var suite: String
        public var arch: String
        /// MLP: its widest hidden layer; ViT: its width.
        public var width: Int
        public var mode: String
        public var form: String
        public var lambda: Double
        public var learningRate: Double
        public var steps: Int
        /// `probe`, or `prototypes-k` for k-shot prototypes.
        public var head: String
        public var seed: UInt64
        public var merge: String
        public var zeroShot: Double
        public var finetuned: Double
        public var mergedAbsolute: Double
        public var mergedNormalized: Double
        public var retention: Double
        public var alpha: Double
        /// Mean over tasks of ‖τt‖.
        public var taskVectorNorm: Double
        /// Mean over task pairs of the cosine similarity of the whole task vectors.
        public var meanCosine: Double
        /// Mean over tasks of Σ over τt's 2-D tensors of ‖G − I‖_F (the plain OrthoReg penalty).
        public var meanGramDeviation: Double
        /// Mean over negation targets of the target's and the control's test accuracy (nan without negation).
        public var negationTarget: Double
        public var negationControl: Double
        public var seconds: Double
    }

    public static let columns = [
        "cell", "suite", "arch", "width", "mode", "form", "lambda", "lr", "steps", "head", "seed", "merge",
        "zero_shot", "finetuned", "merged_abs", "merged_norm", "retention", "alpha", "tau_norm", "mean_cosine",
        "mean_gram_deviation", "negation_target", "negation_control", "seconds",
    ]

    public var rows: [Row]

    public init(rows: [Row]) {
        self.rows = rows
    }

    /// The rows of one finished cell: its job (what was trained) and its report (what came out).
    /// `suite` labels the task set (the sweep's name for it, else `tasksN`).
    public static func rows(cell: String, suite: String?, job: JobConfig, report: RunReport) -> [Row] {
        let width: Int
        let arch = job.model.architectureName.rawValue
        switch job.model.architecture {
        case .mlp(let shape): width = shape.hidden.max() ?? 0
        case .vit(let shape): width = shape.width
        case .clipViT(let shape): width = shape.tower.width
        }
        let tasks = report.tasks
        let zeroShot = report.meanZeroShotAccuracy
        let finetuned = report.meanFinetunedAccuracy
        let cosine = report.cosineSimilarity.map { matrix -> Double in
            let n = matrix.matrix.count
            var pairs: [Double] = []
            for i in 0..<n { for j in (i + 1)..<n { pairs.append(matrix.matrix[i][j]) } }
            return RunReport.mean(pairs)
        } ?? .nan
        let gram = report.orthoRegPenaltyPerLayer.map { perTask in
            RunReport.mean(perTask.values.map { $0.values.reduce(0, +) })
        } ?? .nan
        let negation = report.negation?.results
        return report.merges.map { merge in
            Row(cell: cell, suite: suite ?? "tasks\(tasks.count)", arch: arch, width: width,
                mode: job.finetune.mode.rawValue,
                form: job.finetune.orthoreg.isEnabled ? job.finetune.orthoreg.form.rawValue : "none",
                lambda: job.finetune.orthoreg.lambda, learningRate: job.finetune.optimizer.learningRate,
                steps: job.finetune.steps, head: job.head.summaryName, seed: job.seed, merge: merge.label,
                zeroShot: zeroShot, finetuned: finetuned, mergedAbsolute: merge.absoluteAccuracy,
                mergedNormalized: merge.normalizedAccuracy,
                retention: RunReport.retention(merged: merge.absoluteAccuracy, zeroShot: zeroShot, finetuned: finetuned),
                alpha: merge.alpha, taskVectorNorm: RunReport.mean(tasks.map(\.taskVectorNorm)),
                meanCosine: cosine, meanGramDeviation: gram,
                negationTarget: negation.map { RunReport.mean($0.map(\.targetAccuracy)) } ?? .nan,
                negationControl: negation.map { RunReport.mean($0.map(\.controlAccuracy)) } ?? .nan,
                seconds: report.run.wallSeconds)
        }
    }

    // MARK: CSV

    public func csv() -> String {
        var lines = [Self.columns.joined(separator: ",")]
        for row in rows {
            let fields: [String] = [
                row.cell, row.suite, row.arch, "\(row.width)", row.mode, row.form, Self.number(row.lambda),
                Self.number(row.learningRate), "\(row.steps)", row.head, "\(row.seed)", row.merge,
                Self.fixed(row.zeroShot), Self.fixed(row.finetuned), Self.fixed(row.mergedAbsolute),
                Self.fixed(row.mergedNormalized), Self.fixed(row.retention), Self.number(row.alpha),
                Self.fixed(row.taskVectorNorm), Self.fixed(row.meanCosine), Self.fixed(row.meanGramDeviation),
                Self.fixed(row.negationTarget), Self.fixed(row.negationControl), String(format: "%.1f", row.seconds),
            ]
            lines.append(fields.map(Self.csvField).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func csvField(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Six decimals; empty for nan (a quantity the cell did not measure).
    static func fixed(_ value: Double) -> String { value.isFinite ? String(format: "%.6f", value) : "" }

    /// The shortest text that reads back as the same Double.
    static func number(_ value: Double) -> String { "\(value)" }

    // MARK: Groups over seeds

    /// Rows that differ only in seed (and cell name), with mean and sample standard deviation.
    public struct Group: Sendable {
        public var key: [String]
        public var rows: [Row]

        public func mean(_ value: (Row) -> Double) -> Double { RunReport.mean(rows.map(value)) }

        /// Sample standard deviation (n − 1); 0 for a single seed.
        public func std(_ value: (Row) -> Double) -> Double {
            guard rows.count > 1 else { return 0 }
            let values = rows.map(value)
            let m = RunReport.mean(values)
            return (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(values.count - 1)).squareRoot()
        }
    }

    public static let groupColumns = ["suite", "arch", "width", "mode", "head", "lr", "steps", "form", "lambda", "merge"]

    static func groupKey(_ row: Row) -> [String] {
        [row.suite, row.arch, "\(row.width)", row.mode, row.head, number(row.learningRate), "\(row.steps)", row.form,
         number(row.lambda), row.merge]
    }

    /// Groups in first-appearance order of their rows.
    public func groups() -> [Group] {
        var order: [[String]] = []
        var members: [[String]: [Row]] = [:]
        for row in rows {
            let key = Self.groupKey(row)
            if members[key] == nil { order.append(key) }
            members[key, default: []].append(row)
        }
        return order.map { Group(key: $0, rows: members[$0]!) }
    }

    // MARK: Terminal table

    /// Mean ± std over seeds per setting; only the setting columns that vary are shown.
    public func table() -> String {
        let groups = groups()
        guard !groups.isEmpty else { return "no finished cells yet" }
        let varying = Self.groupColumns.indices.filter { column in Set(groups.map { $0.key[column] }).count > 1 }
        let shown = varying.isEmpty ? [Self.groupColumns.count - 1] : varying
        let measures: [(String, (Row) -> Double)] = [
            ("zero-shot", \.zeroShot), ("fine-tuned", \.finetuned), ("merged", \.mergedAbsolute),
            ("norm.", \.mergedNormalized), ("retention", \.retention),
        ]
        let header = shown.map { Self.groupColumns[$0] } + ["n"] + measures.map(\.0)
        let body = groups.map { group in
            shown.map { group.key[$0] } + ["\(group.rows.count)"] + measures.map { _, value in
                String(format: "%.2f ± %.2f", 100 * group.mean(value), 100 * group.std(value))
            }
        }
        return TextTable.render(header: header, rows: body, labelColumns: shown.count)
    }
}
