// ComparisonTable: two runs of the same tasks side by side (the demo: without and with OrthoReg):
// zero-shot, fine-tuned and each merge's accuracy, with normalised accuracy and retention.
import Core
import JobSchema
import Foundation

public enum ComparisonTable {
    /// `runs` share their tasks and zero-shot heads (same θ0 and seed); each is labelled.
    public static func text(_ runs: [(label: String, report: RunReport)]) -> String {
        guard let first = runs.first?.report else { return "" }
        var header = ["task", "zero-shot"]
        header += runs.map { "fine-tuned (\($0.label))" }
        let merges = first.merges.map(\.label)
        for merge in merges { header += runs.map { "\(merge) (\($0.label))" } }
        func merge(_ report: RunReport, _ label: String) -> RunReport.MergeEntry? {
            report.merges.first { $0.label == label }
        }
        var rows: [[String]] = []
        for (index, task) in first.tasks.enumerated() {
            var row = [task.name, percent(task.zeroShotAccuracy)]
            row += runs.map { index < $0.report.tasks.count ? percent($0.report.tasks[index].finetunedAccuracy) : "" }
            for label in merges {
                row += runs.map { run in
                    guard let entry = merge(run.report, label), index < entry.perTask.count else { return "" }
                    return percent(entry.perTask[index].accuracy)
                }
            }
            rows.append(row)
        }
        var mean = ["mean (abs.)", percent(first.meanZeroShotAccuracy)]
        mean += runs.map { percent($0.report.meanFinetunedAccuracy) }
        var normalized = ["mean (norm.)", ""] + runs.map { _ in "" }
        var kept = ["retention", ""] + runs.map { _ in "" }
        var alpha = ["α", ""] + runs.map { _ in "" }
        for label in merges {
            for run in runs {
                let entry = merge(run.report, label)
                mean.append(entry.map { percent($0.absoluteAccuracy) } ?? "")
                normalized.append(entry.map { percent($0.normalizedAccuracy) } ?? "")
                kept.append(entry.flatMap(\.retention).map { percent($0) + " %" } ?? "")
                alpha.append(entry.map { String(format: "%.2f", $0.alpha) } ?? "")
            }
        }
        rows += [mean, normalized, kept, alpha]
        return TextTable.render(header: header, rows: rows)
    }

    private static func percent(_ value: Double) -> String { String(format: "%.2f", 100 * value) }
}
