// RunReport+Reading: report.json read back (for `orthofuse report` and `orthofuse analyze`).
import Core
import JobSchema
import Foundation

extension RunReport {
    /// Decodes report.json as `encoded()` writes it (non-finite numbers as "inf", "-inf", "nan").
    public static func decoded(from data: Data, origin: String) throws -> RunReport {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        do {
            return try decoder.decode(RunReport.self, from: data)
        } catch let error as DecodingError {
            throw OrthofuseError("\(origin): not a report.json of this version (\(Self.describe(error)))")
        } catch {
            throw OrthofuseError("\(origin): \(error)")
        }
    }

    public static func read(_ url: URL) throws -> RunReport {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw OrthofuseError("\(url.path): cannot read (missing or unreadable)")
        }
        return try decoded(from: data, origin: url.path)
    }

    private static func describe(_ error: DecodingError) -> String {
        /// `tasks[0].resumed_from_step`.
        func keyPath(_ path: [any CodingKey]) -> String {
            path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: ["."])
        }
        switch error {
        case let .keyNotFound(key, context):
            return "missing \(keyPath(context.codingPath + [key]))"
        case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context):
            let path = keyPath(context.codingPath)
            return path.isEmpty ? context.debugDescription : "at \(path): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}
