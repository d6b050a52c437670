// ReportPage: report.html, one self-contained page (inline CSS and SVG, no script) of a report.
import Core
import JobSchema
import Foundation

public enum ReportPage {
    /// The sections, by element id, in page order.
    public static let sections: [(id: String, title: String)] = [
        ("results", "Results"),
        ("alpha-curves", "α curves (validation)"),
        ("cosine", "Task vector similarity"),
        ("disentanglement", "Weight disentanglement error ξ"),
        ("gram-deviation", "Gram deviation ‖G − I‖_F per layer"),
        ("spectra", "Singular value spectra of ΔW"),
        ("negation", "Task negation"),
        ("configuration", "Configuration (job.yaml)"),
    ]

    /// Writes the page atomically.
    public static func write(_ report: RunReport, jobText: String?, to url: URL) throws {
        try AtomicFile.write(Data(html(report, jobText: jobText).utf8), to: url)
    }

    public static func html(_ report: RunReport, jobText: String?) -> String {
        let run = report.run
        var page = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"/>
            <meta name="viewport" content="width=device-width, initial-scale=1"/>
            <title>\(e("orthofuse: \(run.job)"))</title>
            <style>\(style)</style></head><body>
            <h1>\(e(run.job))</h1>
            <p class="summary">\(e(summary(run)))</p>
            <nav>\(sections.map { "<a href=\"#\($0.id)\">\(e($0.title))</a>" }.joined(separator: " "))</nav>

            """
        let bodies = [results(report), alphaCurves(report), cosine(report), disentanglement(report),
                      gramDeviation(report), spectra(report), negation(report), configuration(jobText)]
        for (section, body) in zip(sections, bodies) {
            page += "<section id=\"\(section.id)\"><h2>\(e(section.title))</h2>\n\(body)\n</section>\n"
        }
        page += "<footer>orthofuse \(e(run.version)) · written from report.json</footer>\n</body></html>\n"
        return page
    }

    // MARK: Sections

    private static func summary(_ run: RunReport.RunInfo) -> String {
        let orthoReg = run.orthoRegLambda > 0
            ? "OrthoReg λ = \(SVGCharts.number(run.orthoRegLambda, digits: 3).trimmedZeros) (\(run.orthoRegForm))" : "OrthoReg off"
        return "fine-tuning \(run.finetuneMode) · \(orthoReg) · seed \(run.seed) · \(run.ranks) rank(s) · "
            + "\(String(format: "%.1f", run.wallSeconds)) s · OpenBLAS \(run.blasCore)"
    }

    private static func results(_ report: RunReport) -> String {
        let tasks = report.tasks
        var html = "<p>Test accuracy (%). <em>zero-shot</em>: the task's frozen head on θ0; <em>fine-tuned</em>: θt alone; "
            + "each merge: one model for all tasks at the α chosen on validation. Normalised: accuracy / fine-tuned accuracy. "
            + "Retention: (merged − zero-shot) / (fine-tuned − zero-shot) of the means, the share of the fine-tuning gain the merge keeps.</p>\n"
        html += "<table><thead><tr><th>task</th><th>zero-shot</th><th>fine-tuned</th>"
        html += report.merges.map { "<th>\(e($0.label))<br/><span class=\"small\">α = \(SVGCharts.number($0.alpha))</span></th>" }.joined()
        html += "</tr></thead><tbody>"
        for (i, task) in tasks.enumerated() {
            html += "<tr><td>\(e(task.name))</td><td>\(percent(task.zeroShotAccuracy))</td><td>\(percent(task.finetunedAccuracy))</td>"
            html += report.merges.map { merge in
                i < merge.perTask.count ? "<td>\(percent(merge.perTask[i].accuracy))</td>" : "<td></td>"
            }.joined()
            html += "</tr>"
        }
        let count = Double(max(tasks.count, 1))
        html += "<tr class=\"mean\"><td>mean (abs.)</td><td>\(percent(tasks.map(\.zeroShotAccuracy).reduce(0, +) / count))</td>"
        html += "<td>\(percent(tasks.map(\.finetunedAccuracy).reduce(0, +) / count))</td>"
        html += report.merges.map { "<td>\(percent($0.absoluteAccuracy))</td>" }.joined() + "</tr>"
        let zeroShotNormalized = tasks.map { $0.finetunedAccuracy > 0 ? $0.zeroShotAccuracy / $0.finetunedAccuracy : 0 }
        html += "<tr class=\"mean\"><td>mean (norm.)</td><td>\(percent(zeroShotNormalized.reduce(0, +) / count))</td><td>100.00</td>"
        html += report.merges.map { "<td>\(percent($0.normalizedAccuracy))</td>" }.joined() + "</tr>"
        html += "<tr class=\"mean\"><td>retention</td><td>0.00</td><td>100.00</td>"
        html += report.merges.map { "<td>\($0.retention.map(percent) ?? "")</td>" }.joined() + "</tr>"
        html += "</tbody></table>\n"
        if let failed = report.failedTasks, !failed.isEmpty {
            html += "<p class=\"warning\">Failed tasks, left out of every merge (runtime.on_task_failure: skip):</p><ul>"
            html += failed.map { "<li><b>\(e($0.name))</b> (rank \($0.rank)): \(e($0.reason))</li>" }.joined()
            html += "</ul>\n"
        }

        html += "<h3>Tasks</h3><table><thead><tr><th>task</th><th>‖τ‖</th><th>OrthoReg Σ‖G − I‖</th><th>final loss</th>"
            + "<th>train / val. / test</th><th>rank</th><th>train s</th></tr></thead><tbody>"
        for task in tasks {
            html += "<tr><td>\(e(task.name))</td><td>\(SVGCharts.number(task.taskVectorNorm, digits: 3))</td>"
                + "<td>\(SVGCharts.number(task.orthoRegPenalty, digits: 3))</td><td>\(SVGCharts.number(task.finalLoss, digits: 4))</td>"
                + "<td>\(task.trainSamples) / \(task.validationSamples) / \(task.testSamples)</td><td>\(task.rank)</td>"
                + "<td>\(SVGCharts.number(task.trainSeconds, digits: 1))\(task.resumedFromStep > 0 ? " (resumed at \(task.resumedFromStep))" : "")</td></tr>"
        }
        return html + "</tbody></table>"
    }

    private static func alphaCurves(_ report: RunReport) -> String {
        guard !report.merges.isEmpty else { return absent("no merge in this run") }
        var html = "<p>Mean validation accuracy of θ0 + α·Δ over the tasks, normalised (solid) and absolute (dashed); the circled point is the α chosen (highest normalised accuracy, smallest α on ties).</p>\n"
        html += legend([("normalised", SVGCharts.color(0), "solid"), ("absolute", SVGCharts.color(1), "dashed")])
        html += "<div class=\"figures\">"
        for merge in report.merges {
            let chart = SVGCharts.lineChart(
                series: [
                    .init(name: "normalised", color: SVGCharts.color(0),
                          points: merge.alphaCurve.map { ($0.alpha, $0.validationNormalizedAccuracy) }),
                    .init(name: "absolute", color: SVGCharts.color(1),
                          points: merge.alphaCurve.map { ($0.alpha, $0.validationAbsoluteAccuracy) }, dashed: true),
                ],
                xTitle: "α", yTitle: "validation accuracy", markX: (merge.alpha, "α = \(SVGCharts.number(merge.alpha))"),
                label: "α curve of \(merge.label)")
            let details = ((merge.label == merge.method ? [] : [merge.method]) + [knobText(merge.settings)]).filter { !$0.isEmpty }
            let named = "<b>\(e(merge.label))</b>" + (details.isEmpty ? "" : " (\(e(details.joined(separator: ", "))))")
            html += figure(chart, caption: "\(named): test \(percent(merge.absoluteAccuracy)) abs., \(percent(merge.normalizedAccuracy)) norm.")
        }
        return html + "</div>"
    }

    private static func cosine(_ report: RunReport) -> String {
        guard let cosine = report.cosineSimilarity else { return absent("no task vector analyses in this report (orthofuse analyze RUN_DIR adds them)") }
        let tasks = cosine.tasks
        let limit = max(offDiagonalMaximum([cosine.matrix]), 0.05)
        var html = "<p>Cosine similarity ⟨τi, τj⟩ / (‖τi‖‖τj‖) of the whole flattened task vectors; colour scale ±\(SVGCharts.number(limit, digits: 3)) (the largest off-diagonal value). OrthoReg is expected to lower it.</p>\n<div class=\"figures\">"
        html += figure(SVGCharts.heatmap(rows: tasks, columns: tasks, values: cosine.matrix, scale: .diverging(limit: limit),
                                         cell: 64, skipDiagonal: true, label: "cosine similarity"),
                       caption: "whole vector")
        if let conflict = report.signConflict {
            html += figure(SVGCharts.heatmap(rows: conflict.tasks, columns: conflict.tasks, values: conflict.matrix,
                                             scale: .sequential(low: 0, high: 1), cell: 64, skipDiagonal: true,
                                             label: "sign conflict"),
                           caption: "sign conflict ratio: \(e(conflict.definition))")
        }
        html += "</div>"
        if let perLayer = report.cosineSimilarityPerLayer, !perLayer.isEmpty {
            let names = perLayer.keys.sorted(by: naturalOrder)
            let layerLimit = max(offDiagonalMaximum(names.map { perLayer[$0]! }), 0.05)
            html += "<h3>Per layer (each 2-D tensor changed by some task)</h3><p>Colour scale ±\(SVGCharts.number(layerLimit, digits: 3)), shared by all layers.</p><div class=\"figures\">"
            for name in names {
                html += figure(SVGCharts.heatmap(rows: tasks, columns: tasks, values: perLayer[name]!,
                                                 scale: .diverging(limit: layerLimit), cell: 40, skipDiagonal: true,
                                                 label: "cosine similarity of \(name)"),
                               caption: e(name))
            }
            html += "</div>"
        }
        return html
    }

    private static func disentanglement(_ report: RunReport) -> String {
        guard let xi = report.disentanglement else {
            return absent("not evaluated (evaluate.disentanglement: false, a single task, or a report written without it)")
        }
        let high = max(xi.pairs.flatMap { $0.error.flatMap { $0 } }.max() ?? 0, 0.01)
        let labels = xi.grid.map { SVGCharts.number($0) }
        let inputs = (xi.inputs ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        var html = "<p>\(e(xi.definition)). Inputs from each task's \(e(xi.split)) split\(inputs.isEmpty ? "" : " (\(e(inputs)))"). Rows: α of the first task; columns: α of the second. "
            + "Colour scale 0 to \(SVGCharts.number(high, digits: 3)) (the largest value); 0 means adding the other task vector changes no prediction. "
            + "Evaluated in \(SVGCharts.number(xi.seconds, digits: 1)) s.</p>\n<div class=\"figures\">"
        for pair in xi.pairs {
            html += figure(SVGCharts.heatmap(rows: labels, columns: labels, values: pair.error,
                                             scale: .sequential(low: 0, high: high), digits: 3, cell: 46,
                                             rowTitle: "α \(pair.tasks[0])", columnTitle: "α \(pair.tasks[1])",
                                             label: "ξ of \(pair.tasks.joined(separator: " and "))"),
                           caption: "<b>\(e(pair.tasks[0]))</b> × <b>\(e(pair.tasks[1]))</b>")
        }
        return html + "</div>"
    }

    private static func gramDeviation(_ report: RunReport) -> String {
        guard let penalty = report.orthoRegPenaltyPerLayer, !penalty.isEmpty else { return absent("no task vector analyses in this report") }
        let tasks = report.cosineSimilarity?.tasks ?? penalty.keys.sorted()
        let tensors = Set(penalty.values.flatMap(\.keys)).sorted(by: naturalOrder)
        let series = tasks.enumerated().map { index, task in
            (name: task, color: SVGCharts.color(index), values: tensors.map { penalty[task]?[$0] ?? .nan })
        }
        var html = "<p>‖G − I‖_F of each 2-D tensor ΔW of each task vector, G the smaller Gram matrix (ΔWᵀΔW or ΔWΔWᵀ, k × k): the OrthoReg penalty in its frobenius form. A zero update gives √k; 0 means orthonormal columns (rows).</p>\n"
        html += legend(tasks.enumerated().map { ($1, SVGCharts.color($0), "solid") })
        html += "<div class=\"scroll\">" + SVGCharts.groupedBars(categories: tensors, series: series, yTitle: "‖G − I‖_F", label: "Gram deviation per layer") + "</div>"
        return html
    }

    private static func spectra(_ report: RunReport) -> String {
        guard let values = report.singularValues, !values.isEmpty else { return absent("no task vector analyses in this report") }
        let tasks = report.cosineSimilarity?.tasks ?? values.keys.sorted()
        let tensors = Set(values.values.flatMap(\.keys)).sorted(by: naturalOrder)
        var html = "<p>The largest singular values σ_i of each 2-D ΔW, up to 32 per tensor. OrthoReg pushes every one toward 1 (the dotted line).</p>\n"
        html += legend(tasks.enumerated().map { ($1, SVGCharts.color($0), "solid") }) + "<div class=\"figures\">"
        for tensor in tensors {
            let series = tasks.enumerated().map { index, task in
                SVGCharts.Series(name: task, color: SVGCharts.color(index),
                                 points: (values[task]?[tensor] ?? []).enumerated().map { (Double($0 + 1), $1) })
            }
            html += figure(SVGCharts.lineChart(series: series, xTitle: "index i", yTitle: "σ_i", width: 320, height: 210,
                                               referenceY: 1, yFromZero: true, label: "singular values of \(tensor)"),
                           caption: e(tensor))
        }
        return html + "</div>"
    }

    private static func negation(_ report: RunReport) -> String {
        guard let negation = report.negation else { return absent("not configured (evaluate.negation: {targets, control, threshold})") }
        var html = "<p>θ0 − α·τ_target, α chosen on validation to minimise the target's accuracy while the control <b>\(e(negation.control))</b> keeps at least "
            + "\(percent(negation.threshold))% of its accuracy on θ0 (validation \(percent(negation.controlBaseValidationAccuracy))%). Test accuracy (%).</p>\n"
        html += "<table><thead><tr><th>target</th><th>α</th><th>target θ0</th><th>target negated</th><th>control θ0</th><th>control negated</th><th>constraint met</th></tr></thead><tbody>"
        for result in negation.results {
            html += "<tr><td>\(e(result.target))</td><td>\(SVGCharts.number(result.alpha))</td><td>\(percent(result.targetBaseAccuracy))</td>"
                + "<td>\(percent(result.targetAccuracy))</td><td>\(percent(result.controlBaseAccuracy))</td>"
                + "<td>\(percent(result.controlAccuracy))</td><td>\(result.constraintMet ? "yes" : "no")</td></tr>"
        }
        html += "</tbody></table>\n"
        html += legend([("target (validation)", SVGCharts.color(2), "solid"), ("control (validation)", SVGCharts.color(0), "dashed"),
                        ("control floor: threshold × control on θ0", "#999", "dotted")])
        html += "<div class=\"figures\">"
        let floor = negation.threshold * negation.controlBaseValidationAccuracy
        for result in negation.results {
            let chart = SVGCharts.lineChart(
                series: [
                    .init(name: "target", color: SVGCharts.color(2), points: result.curve.map { ($0.alpha, $0.targetValidationAccuracy) }),
                    .init(name: "control", color: SVGCharts.color(0), points: result.curve.map { ($0.alpha, $0.controlValidationAccuracy) }, dashed: true),
                ],
                xTitle: "α", yTitle: "validation accuracy", markX: (result.alpha, "α = \(SVGCharts.number(result.alpha))"),
                referenceY: floor, label: "negation curve of \(result.target)")
            html += figure(chart, caption: "negating <b>\(e(result.target))</b>")
        }
        return html + "</div>"
    }

    private static func configuration(_ jobText: String?) -> String {
        guard let jobText else { return absent("job.yaml was not found next to report.json") }
        return "<pre>\(e(jobText))</pre>"
    }

    // MARK: Pieces

    static func e(_ text: String) -> String { SVGCharts.escape(text) }

    private static func percent(_ value: Double) -> String { SVGCharts.number(100 * value) }

    private static func absent(_ reason: String) -> String { "<p class=\"absent\">\(e(reason)).</p>" }

    private static func figure(_ svg: String, caption: String) -> String {
        "<figure>\(svg)<figcaption>\(caption)</figcaption></figure>"
    }

    /// Line samples with names; `style` is a CSS border style (solid, dashed, dotted).
    static func legend(_ entries: [(name: String, color: String, style: String)]) -> String {
        "<div class=\"legend\">" + entries.map {
            "<span class=\"entry\"><span class=\"swatch\" style=\"border-color: \($0.color); border-top-style: \($0.style)\"></span>\(e($0.name))</span>"
        }.joined() + "</div>"
    }

    private static func knobText(_ knobs: RunReport.MergeKnobs) -> String {
        var parts: [String] = []
        if let density = knobs.density { parts.append("density \(density)") }
        if let trim = knobs.trim { parts.append("trim \(trim)") }
        if let gamma = knobs.gamma { parts.append("γ \(gamma)") }
        if let lambda = knobs.lambda { parts.append("λ \(lambda)") }
        if let k = knobs.k { parts.append("k \(k)") }
        if let seed = knobs.seed { parts.append("seed \(seed)") }
        return parts.joined(separator: ", ")
    }

    private static func offDiagonalMaximum(_ matrices: [[[Double]]]) -> Double {
        var maximum = 0.0
        for matrix in matrices {
            for i in matrix.indices {
                for j in matrix[i].indices where i != j && matrix[i][j].isFinite {
                    maximum = max(maximum, abs(matrix[i][j]))
                }
            }
        }
        return maximum
    }

    /// "blocks.2.x" before "blocks.10.x": numbers in names compare by value, so tensors keep
    /// their layer order (report.json's keys are sorted as text).
    static func naturalOrder(_ a: String, _ b: String) -> Bool {
        func parts(_ text: String) -> [(String, Int?)] {
            var result: [(String, Int?)] = []
            var current = ""
            var digits = false
            for character in text {
                let isDigit = character.isASCII && character.isNumber
                if !current.isEmpty, isDigit != digits {
                    result.append((current, digits ? Int(current) : nil))
                    current = ""
                }
                digits = isDigit
                current.append(character)
            }
            if !current.isEmpty { result.append((current, digits ? Int(current) : nil)) }
            return result
        }
        for (x, y) in zip(parts(a), parts(b)) {
            if let m = x.1, let n = y.1, m != n { return m < n }
            if x.0 != y.0 { return x.0 < y.0 }
        }
        return a.count < b.count
    }

    static let style = """
        body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0 auto; max-width: 1320px; padding: 16px 24px 40px; background: #fafafa; }
        h1 { margin: 8px 0 4px; font-size: 24px; }
        h2 { margin: 0 0 8px; font-size: 19px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
        h3 { font-size: 15px; margin: 16px 0 6px; }
        .summary { color: #555; margin: 0 0 8px; }
        nav a { margin-right: 12px; color: #2a5a8a; text-decoration: none; font-size: 13px; }
        section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 14px 18px; margin: 14px 0; overflow-x: auto; }
        table { border-collapse: collapse; margin: 6px 0 4px; font-variant-numeric: tabular-nums; }
        th, td { border-bottom: 1px solid #e6e6e6; padding: 4px 10px; text-align: right; vertical-align: bottom; }
        th:first-child, td:first-child { text-align: left; }
        th { background: #f3f5f8; font-weight: 600; }
        tr.mean td { font-weight: 600; background: #fbfbf4; }
        .small { font-weight: normal; color: #666; font-size: 12px; }
        .figures { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
        figure { margin: 4px 0; }
        figcaption { font-size: 12.5px; color: #444; max-width: 420px; }
        .scroll { overflow-x: auto; }
        svg.chart { display: block; max-width: 100%; height: auto; }
        svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
        svg .tick { font-size: 11px; fill: #444; }
        svg .cell { font-size: 11px; }
        svg .axis-title { font-size: 12px; fill: #333; }
        svg .note { font-size: 11px; fill: #111; }
        svg .plot { fill: #fff; stroke: #bbb; }
        svg .grid { stroke: #eee; }
        svg .axis { stroke: #888; }
        svg .marker { stroke: #111; stroke-dasharray: 3 3; }
        svg .reference { stroke: #999; stroke-dasharray: 1 3; stroke-width: 1.5; }
        .legend { margin: 4px 0 8px; font-size: 13px; }
        .legend .entry { margin-right: 16px; white-space: nowrap; }
        .legend .swatch { display: inline-block; width: 22px; height: 0; border-top: 3px solid; vertical-align: middle; margin-right: 6px; }
        .absent { color: #777; font-style: italic; }
        pre { background: #f6f8fa; border: 1px solid #e3e3e3; padding: 10px; font-size: 12.5px; overflow-x: auto; }
        footer { color: #888; font-size: 12px; margin-top: 20px; }
        """
}

private extension String {
    /// "1.000" → "1", "0.500" → "0.5".
    var trimmedZeros: String {
        guard contains(".") else { return self }
        var text = self
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }
}
