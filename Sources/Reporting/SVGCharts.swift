// SVGCharts: report.html's inline SVG heatmaps, line charts and grouped bars (XML-compatible).
import Core
import JobSchema
import Foundation

enum SVGCharts {
    /// Categorical colours for tasks and series (colour-blind-safe Tableau 10).
    static let palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                          "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]

    static func color(_ index: Int) -> String { palette[index % palette.count] }

    /// Text for XML content and attribute values.
    static func escape(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.count)
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            default: result.append(character)
            }
        }
        return result
    }

    static func number(_ value: Double, digits: Int = 2) -> String {
        guard value.isFinite else { return "\(value)" }
        let text = String(format: "%.\(digits)f", value)
        // A tiny negative value rounds to "-0.00": show it as the zero it reads as.
        return text.hasPrefix("-") && text.dropFirst().allSatisfy({ $0 == "0" || $0 == "." }) ? String(text.dropFirst()) : text
    }

    /// Coordinates with one decimal: enough for a screen, short text.
    private static func px(_ value: Double) -> String { String(format: "%.1f", value) }

    private static func open(width: Double, height: Double, label: String) -> String {
        "<svg class=\"chart\" width=\"\(px(width))\" height=\"\(px(height))\" viewBox=\"0 0 \(px(width)) \(px(height))\" role=\"img\" aria-label=\"\(escape(label))\">"
    }

    // MARK: Colour scales

    /// White to `to` as t goes 0 → 1 (clamped).
    static func blend(_ t: Double, to rgb: (Double, Double, Double)) -> String {
        let t = max(0, min(1, t.isFinite ? t : 0))
        let r = 255 + (rgb.0 - 255) * t, g = 255 + (rgb.1 - 255) * t, b = 255 + (rgb.2 - 255) * t
        return String(format: "#%02x%02x%02x", Int(r.rounded()), Int(g.rounded()), Int(b.rounded()))
    }

    enum Scale {
        /// Blue below 0, red above, white at 0; ±limit is full colour.
        case diverging(limit: Double)
        /// White at `low` to dark purple at `high`.
        case sequential(low: Double, high: Double)

        func fill(_ value: Double) -> (fill: String, darkText: Bool) {
            switch self {
            case let .diverging(limit):
                let t = limit > 0 ? value / limit : 0
                let fill = t >= 0 ? SVGCharts.blend(t, to: (178, 24, 43)) : SVGCharts.blend(-t, to: (33, 102, 172))
                return (fill, abs(t) < 0.6)
            case let .sequential(low, high):
                let t = high > low ? (value - low) / (high - low) : 0
                return (SVGCharts.blend(t, to: (84, 39, 143)), t < 0.55)
            }
        }
    }

    // MARK: Heatmap

    /// A matrix of coloured cells with its value written in each; rows top to bottom.
    /// `skipDiagonal` greys the diagonal out (a task against itself says nothing).
    static func heatmap(rows: [String], columns: [String], values: [[Double]], scale: Scale, digits: Int = 2,
                        cell: Double = 52, rowTitle: String? = nil, columnTitle: String? = nil,
                        skipDiagonal: Bool = false, label: String) -> String {
        let rowLabelWidth = Double(min(rows.map(\.count).max() ?? 0, 24)) * 7 + 14 + (rowTitle == nil ? 0 : 18)
        let top = 34.0 + (columnTitle == nil ? 0 : 18)
        let width = rowLabelWidth + Double(columns.count) * cell + 8
        let height = top + Double(rows.count) * cell + 8
        var svg = open(width: width, height: height, label: label)
        if let columnTitle {
            svg += "<text x=\"\(px(rowLabelWidth + Double(columns.count) * cell / 2))\" y=\"14\" class=\"axis-title\" text-anchor=\"middle\">\(escape(columnTitle))</text>"
        }
        if let rowTitle {
            let y = top + Double(rows.count) * cell / 2
            svg += "<text x=\"12\" y=\"\(px(y))\" class=\"axis-title\" text-anchor=\"middle\" transform=\"rotate(-90 12 \(px(y)))\">\(escape(rowTitle))</text>"
        }
        for (j, name) in columns.enumerated() {
            let x = rowLabelWidth + (Double(j) + 0.5) * cell
            svg += "<text x=\"\(px(x))\" y=\"\(px(top - 8))\" class=\"tick\" text-anchor=\"middle\">\(escape(short(name, cell)))</text>"
        }
        for (i, name) in rows.enumerated() {
            let y = top + Double(i) * cell
            svg += "<text x=\"\(px(rowLabelWidth - 6))\" y=\"\(px(y + cell / 2 + 4))\" class=\"tick\" text-anchor=\"end\">\(escape(name))</text>"
            for j in columns.indices {
                let x = rowLabelWidth + Double(j) * cell
                let value = values[i][j]
                let diagonal = skipDiagonal && i == j
                let (fill, darkText) = diagonal ? ("#e6e6e6", true) : scale.fill(value)
                svg += "<rect x=\"\(px(x))\" y=\"\(px(y))\" width=\"\(px(cell - 1))\" height=\"\(px(cell - 1))\" fill=\"\(fill)\"><title>\(escape("\(name) × \(columns[j]): \(number(value, digits: 4))"))</title></rect>"
                svg += "<text x=\"\(px(x + cell / 2))\" y=\"\(px(y + cell / 2 + 4))\" class=\"cell\" text-anchor=\"middle\" fill=\"\(darkText ? "#222" : "#fff")\">\(number(value, digits: digits))</text>"
            }
        }
        return svg + "</svg>"
    }

    /// A column label cut to fit its cell.
    private static func short(_ name: String, _ cell: Double) -> String {
        let fits = max(3, Int(cell / 6.5))
        return name.count <= fits ? name : String(name.prefix(fits - 1)) + "…"
    }

    // MARK: Line chart

    struct Series {
        var name: String
        var color: String
        var points: [(x: Double, y: Double)]
        var dashed = false
    }

    /// Lines over a shared x axis; `markX` draws a vertical marker (the chosen α) with its text,
    /// `referenceY` a horizontal dotted line (a threshold; its legend says what it is); `yFromZero` starts the
    /// y axis at 0 (magnitudes) instead of fitting it to the data (accuracies).
    static func lineChart(series: [Series], xTitle: String, yTitle: String, width: Double = 360, height: Double = 230,
                          markX: (x: Double, text: String)? = nil, referenceY: Double? = nil,
                          yFromZero: Bool = false, label: String) -> String {
        let left = 52.0, right = 12.0, top = 14.0, bottom = 40.0
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let xs = series.flatMap { $0.points.map(\.x) }
        var ys = series.flatMap { $0.points.map(\.y) }.filter(\.isFinite)
        if let referenceY { ys.append(referenceY) }
        if yFromZero { ys.append(0) }
        var xLow = xs.min() ?? 0, xHigh = xs.max() ?? 1
        if xHigh <= xLow { xLow -= 0.5; xHigh += 0.5 }
        var yLow = ys.min() ?? 0, yHigh = ys.max() ?? 1
        let pad = max((yHigh - yLow) * 0.08, 0.005)
        yLow = yFromZero ? 0 : yLow - pad
        yHigh += pad
        func sx(_ x: Double) -> Double { left + (x - xLow) / (xHigh - xLow) * plotWidth }
        func sy(_ y: Double) -> Double { top + (1 - (y - yLow) / (yHigh - yLow)) * plotHeight }
        var svg = open(width: width, height: height, label: label)
        svg += "<rect x=\"\(px(left))\" y=\"\(px(top))\" width=\"\(px(plotWidth))\" height=\"\(px(plotHeight))\" class=\"plot\"/>"
        for tick in niceTicks(yLow, yHigh, count: 5) {
            let y = top + (1 - (tick - yLow) / (yHigh - yLow)) * plotHeight
            svg += "<line x1=\"\(px(left))\" x2=\"\(px(left + plotWidth))\" y1=\"\(px(y))\" y2=\"\(px(y))\" class=\"grid\"/>"
            svg += "<text x=\"\(px(left - 5))\" y=\"\(px(y + 4))\" class=\"tick\" text-anchor=\"end\">\(tickText(tick))</text>"
        }
        for tick in niceTicks(xLow, xHigh, count: 6) {
            let x = sx(tick)
            svg += "<line x1=\"\(px(x))\" x2=\"\(px(x))\" y1=\"\(px(top + plotHeight))\" y2=\"\(px(top + plotHeight + 4))\" class=\"axis\"/>"
            svg += "<text x=\"\(px(x))\" y=\"\(px(top + plotHeight + 16))\" class=\"tick\" text-anchor=\"middle\">\(tickText(tick))</text>"
        }
        svg += "<text x=\"\(px(left + plotWidth / 2))\" y=\"\(px(height - 4))\" class=\"axis-title\" text-anchor=\"middle\">\(escape(xTitle))</text>"
        svg += "<text x=\"12\" y=\"\(px(top + plotHeight / 2))\" class=\"axis-title\" text-anchor=\"middle\" transform=\"rotate(-90 12 \(px(top + plotHeight / 2)))\">\(escape(yTitle))</text>"
        if let referenceY {
            let y = sy(referenceY)
            svg += "<line x1=\"\(px(left))\" x2=\"\(px(left + plotWidth))\" y1=\"\(px(y))\" y2=\"\(px(y))\" class=\"reference\"/>"
        }
        if let markX {
            let x = sx(markX.x)
            svg += "<line x1=\"\(px(x))\" x2=\"\(px(x))\" y1=\"\(px(top))\" y2=\"\(px(top + plotHeight))\" class=\"marker\"/>"
            let anchor = x > left + plotWidth * 0.7 ? "end" : "start"
            // At the end of the marker away from the marked point, so the text does not cover the curve.
            let marked = series.first?.points.first { abs($0.x - markX.x) < 1e-12 }.map { sy($0.y) } ?? top
            let textY = marked < top + plotHeight / 2 ? top + plotHeight - 6 : top + 12
            svg += "<text x=\"\(px(anchor == "end" ? x - 4 : x + 4))\" y=\"\(px(textY))\" class=\"note\" text-anchor=\"\(anchor)\">\(escape(markX.text))</text>"
        }
        for line in series {
            let points = line.points.filter { $0.y.isFinite }
            guard !points.isEmpty else { continue }
            let path = points.map { "\(px(sx($0.x))),\(px(sy($0.y)))" }.joined(separator: " ")
            svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"2\"\(line.dashed ? " stroke-dasharray=\"5 3\"" : "")><title>\(escape(line.name))</title></polyline>"
            if points.count <= 41 {
                for point in points {
                    svg += "<circle cx=\"\(px(sx(point.x)))\" cy=\"\(px(sy(point.y)))\" r=\"2.2\" fill=\"\(line.color)\"/>"
                }
            }
            if let markX, let hit = points.first(where: { abs($0.x - markX.x) < 1e-12 }), !line.dashed {
                svg += "<circle cx=\"\(px(sx(hit.x)))\" cy=\"\(px(sy(hit.y)))\" r=\"5\" fill=\"none\" stroke=\"#111\" stroke-width=\"1.5\"/>"
            }
        }
        return svg + "</svg>"
    }

    // MARK: Grouped bars

    /// One group of bars per category (left to right), one bar per series in each group.
    static func groupedBars(categories: [String], series: [(name: String, color: String, values: [Double])],
                            yTitle: String, label: String) -> String {
        let barWidth = 10.0, groupGap = 14.0
        let groupWidth = Double(max(series.count, 1)) * barWidth + groupGap
        let longest = Double(min(categories.map(\.count).max() ?? 0, 28))
        // The first label, slanted, reaches about 4.9 px per character left of its group's middle.
        let left = max(58, longest * 4.9 - groupWidth / 2 + 4), right = 12.0, top = 14.0
        let bottom = 26 + longest * 4.6
        let plotWidth = max(Double(categories.count) * groupWidth, 300)
        let plotHeight = 220.0
        let width = left + plotWidth + right, height = top + plotHeight + bottom
        let values = series.flatMap(\.values).filter(\.isFinite)
        let high = (values.max() ?? 1) * 1.08
        let yHigh = high > 0 ? high : 1
        func sy(_ y: Double) -> Double { top + (1 - y / yHigh) * plotHeight }
        var svg = open(width: width, height: height, label: label)
        svg += "<rect x=\"\(px(left))\" y=\"\(px(top))\" width=\"\(px(plotWidth))\" height=\"\(px(plotHeight))\" class=\"plot\"/>"
        for tick in niceTicks(0, yHigh, count: 5) where tick >= 0 {
            svg += "<line x1=\"\(px(left))\" x2=\"\(px(left + plotWidth))\" y1=\"\(px(sy(tick)))\" y2=\"\(px(sy(tick)))\" class=\"grid\"/>"
            svg += "<text x=\"\(px(left - 5))\" y=\"\(px(sy(tick) + 4))\" class=\"tick\" text-anchor=\"end\">\(tickText(tick))</text>"
        }
        let titleX = left - 44
        svg += "<text x=\"\(px(titleX))\" y=\"\(px(top + plotHeight / 2))\" class=\"axis-title\" text-anchor=\"middle\" transform=\"rotate(-90 \(px(titleX)) \(px(top + plotHeight / 2)))\">\(escape(yTitle))</text>"
        for (c, category) in categories.enumerated() {
            let groupLeft = left + Double(c) * groupWidth + groupGap / 2
            for (s, line) in series.enumerated() where line.values[c].isFinite {
                let value = line.values[c]
                svg += "<rect x=\"\(px(groupLeft + Double(s) * barWidth))\" y=\"\(px(sy(value)))\" width=\"\(px(barWidth - 1))\" height=\"\(px(max(0, top + plotHeight - sy(value))))\" fill=\"\(line.color)\"><title>\(escape("\(line.name), \(category): \(number(value, digits: 4))"))</title></rect>"
            }
            let x = groupLeft + Double(series.count) * barWidth / 2
            let y = top + plotHeight + 12
            let text = category.count > 28 ? "…" + category.suffix(27) : category
            svg += "<text x=\"\(px(x))\" y=\"\(px(y))\" class=\"tick\" text-anchor=\"end\" transform=\"rotate(-35 \(px(x)) \(px(y)))\">\(escape(String(text)))</text>"
        }
        return svg + "</svg>"
    }

    // MARK: Axes

    /// About `count` round values covering [low, high].
    static func niceTicks(_ low: Double, _ high: Double, count: Int) -> [Double] {
        guard high > low, low.isFinite, high.isFinite else { return [low] }
        let raw = (high - low) / Double(max(count - 1, 1))
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var ticks: [Double] = []
        var tick = ceil(low / step) * step
        while tick <= high + step * 1e-9 {
            ticks.append(abs(tick) < step * 1e-9 ? 0 : tick)
            tick += step
        }
        return ticks
    }

    private static func tickText(_ value: Double) -> String {
        if value == 0 { return "0" }
        let magnitude = abs(value)
        if magnitude >= 1000 || magnitude < 0.001 { return String(format: "%.0e", value) }
        var text = String(format: magnitude >= 10 ? "%.0f" : (magnitude >= 1 ? "%.2f" : "%.3f"), value)
        while text.contains("."), text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }
}
