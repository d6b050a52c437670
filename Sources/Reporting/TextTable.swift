// TextTable: the terminal tables (run results, sweep summary, comparisons, eval): label columns
// left-aligned, numbers right-aligned, a dashed rule under the header.
import Core
import JobSchema
import Foundation

public enum TextTable {
    /// `labelColumns` leading columns are left-aligned, the rest right-aligned; rows shorter than
    /// the header are padded with empty cells.
    public static func render(header: [String], rows: [[String]], labelColumns: Int = 1) -> String {
        let rows = rows.map { $0 + Array(repeating: "", count: max(0, header.count - $0.count)) }
        let widths = header.indices.map { column in
            ([header[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            header.indices.map { column in
                let cell = cells[column]
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column < labelColumns ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        return ([line(header), rule] + rows.map(line)).joined(separator: "\n")
    }
}
