// SweepSummaryPage: summary.html of a sweep: mean ± std over seeds per setting, and merged
// accuracy against λ for each fine-tuning mode and merge (one line per form and setting).
import Core
import JobSchema
import Foundation

public enum SweepSummaryPage {
    public static func write(_ summary: SweepSummary, name: String, to url: URL) throws {
        try AtomicFile.write(Data(html(summary, name: name).utf8), to: url)
    }

    public static func html(_ summary: SweepSummary, name: String) -> String {
        let groups = summary.groups()
        var page = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"/>
            <meta name="viewport" content="width=device-width, initial-scale=1"/>
            <title>\(e("orthofuse sweep: \(name)"))</title>
            <style>\(ReportPage.style)</style></head><body>
            <h1>\(e(name))</h1>
            <p class="summary">\(summary.rows.count) rows from \(Set(summary.rows.map(\.cell)).count) cells; \
            \(groups.count) settings, mean ± sample std over their seeds (n). Test accuracy in %, means over the tasks. \
            <em>retention</em> = (merged − zero-shot) / (fine-tuned − zero-shot), the share of the fine-tuning gain the \
            merge keeps; normalised = merged / fine-tuned per task, averaged.</p>

            """
        page += "<section id=\"plots\"><h2>Merged accuracy against λ</h2>\n\(plots(groups))\n</section>\n"
        page += "<section id=\"table\"><h2>All settings</h2>\n\(table(groups))\n</section>\n"
        page += "<footer>orthofuse · written from the cells' report.json (summary.csv has every row)</footer>\n</body></html>\n"
        return page
    }

    private static func e(_ text: String) -> String { ReportPage.e(text) }

    private static func table(_ groups: [SweepSummary.Group]) -> String {
        let measures: [(String, (SweepSummary.Row) -> Double, Double)] = [
            ("zero-shot", \.zeroShot, 100), ("fine-tuned", \.finetuned, 100), ("merged", \.mergedAbsolute, 100),
            ("normalised", \.mergedNormalized, 100), ("retention", \.retention, 100), ("α", \.alpha, 1),
            ("‖τ‖", \.taskVectorNorm, 1), ("cosine", \.meanCosine, 1), ("‖G − I‖", \.meanGramDeviation, 1),
        ]
        var html = "<table><thead><tr>"
        html += SweepSummary.groupColumns.map { "<th>\(e($0))</th>" }.joined() + "<th>n</th>"
        html += measures.map { "<th>\(e($0.0))</th>" }.joined() + "</tr></thead><tbody>"
        for group in groups {
            html += "<tr>" + group.key.map { "<td>\(e($0))</td>" }.joined() + "<td>\(group.rows.count)</td>"
            for (_, value, scale) in measures {
                let mean = group.mean(value) * scale
                let spread = group.std(value) * scale
                let digits = scale == 100 ? 2 : 3
                html += mean.isFinite
                    ? "<td>\(String(format: "%.\(digits)f", mean)) <span class=\"small\">± \(String(format: "%.\(digits)f", spread))</span></td>"
                    : "<td></td>"
            }
            html += "</tr>"
        }
        return html + "</tbody></table>"
    }

    /// One chart per (mode, merge): for every form, the mean merged accuracy at each λ, its λ = 0
    /// point taken from the unregularised setting that matches everything else. λ is drawn on a
    /// log scale with λ = 0 one decade below the smallest positive λ.
    private static func plots(_ groups: [SweepSummary.Group]) -> String {
        let lambdas = Set(groups.map { $0.rows[0].lambda }).filter { $0 > 0 }
        guard let smallest = lambdas.min() else { return "<p class=\"absent\">No λ > 0 in this sweep: nothing to plot.</p>" }
        func x(_ lambda: Double) -> Double { log10(lambda > 0 ? lambda : smallest / 10) }
        func setting(_ row: SweepSummary.Row) -> String {
            "\(row.suite) \(row.arch)-\(row.width) \(row.head) lr \(row.learningRate) × \(row.steps)"
        }
        var panels: [(title: String, series: [SVGCharts.Series])] = []
        let panelKeys = orderedUnique(groups.map { "\($0.rows[0].mode)|\($0.rows[0].merge)" })
        for panelKey in panelKeys {
            let members = groups.filter { "\($0.rows[0].mode)|\($0.rows[0].merge)" == panelKey }
            let settings = orderedUnique(members.map { setting($0.rows[0]) })
            let forms = orderedUnique(members.map { $0.rows[0].form }.filter { $0 != "none" })
            var series: [SVGCharts.Series] = []
            for settingName in settings {
                let start = members.first { setting($0.rows[0]) == settingName && $0.rows[0].form == "none" }
                for form in forms {
                    var points = members.filter { setting($0.rows[0]) == settingName && $0.rows[0].form == form }
                        .map { (x: x($0.rows[0].lambda), y: 100 * $0.mean(\.mergedAbsolute)) }
                    guard !points.isEmpty else { continue }
                    if let start { points.append((x: x(0), y: 100 * start.mean(\.mergedAbsolute))) }
                    points.sort { $0.x < $1.x }
                    series.append(SVGCharts.Series(name: "\(form), \(settingName)", color: SVGCharts.color(series.count),
                                                   points: points, dashed: settings.count > 1 && settings.first != settingName))
                }
            }
            let parts = panelKey.split(separator: "|")
            if !series.isEmpty { panels.append(("mode \(parts[0]), \(parts[1])", series)) }
        }
        guard !panels.isEmpty else { return "<p class=\"absent\">No setting has both λ = 0 and λ > 0 rows.</p>" }
        var html = "<p>x: log10 λ (λ = 0 drawn at log10 \(smallest / 10)); y: mean merged test accuracy (%) over seeds. "
            + "Spread and every other quantity: the table below.</p><div class=\"figures\">"
        for panel in panels {
            let svg = SVGCharts.lineChart(series: panel.series, xTitle: "log10 λ", yTitle: "merged accuracy (%)",
                                          width: 460, height: 280, label: panel.title)
            let legend = ReportPage.legend(panel.series.map { ($0.name, $0.color, $0.dashed ? "dashed" : "solid") })
            html += "<figure><h3>\(e(panel.title))</h3>\(svg)\(legend)</figure>"
        }
        return html + "</div>"
    }

    private static func orderedUnique(_ values: [String]) -> [String] {
        var seen = Set<String>()
        return values.filter { seen.insert($0).inserted }
    }
}
