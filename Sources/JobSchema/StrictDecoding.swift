// StrictDecoding: decoding helpers that refuse unknown keys and report bad values by key path.
import Core
import Foundation
import Yams

/// A coding key for any mapping key or list index, used to see the keys a file actually wrote.
struct AnyCodingKey: CodingKey {
    let stringValue: String
    let intValue: Int?

    init(stringValue: String) {
        self.stringValue = stringValue
        intValue = nil
    }

    init(intValue: Int) {
        stringValue = "\(intValue)"
        self.intValue = intValue
    }

    static func index(_ index: Int) -> AnyCodingKey { AnyCodingKey(intValue: index) }
}

/// A value the job file got wrong: where it was written and what is wrong with it.
/// Thrown while decoding; `JobConfig.parse` turns it into the one-line `OrthofuseError`.
struct JobFieldError: Error {
    let codingPath: [any CodingKey]
    let message: String
    /// When set, the written value follows the message (`, got "ten"`), looked up in the document.
    let showsWrittenValue: Bool

    init(_ codingPath: [any CodingKey], _ message: String, showsWrittenValue: Bool = false) {
        self.codingPath = codingPath
        self.message = message
        self.showsWrittenValue = showsWrittenValue
    }
}

/// The pieces of strict decoding that are not tied to one container.
enum StrictDecoding {
    /// `tasks[1].classes`: the key path as a user would type it.
    static func keyPath(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : "." + key.stringValue
            }
        }
        return text
    }

    /// The member of `T` named `word`, or an error at `codingPath` listing the choices.
    static func member<T: RawRepresentable & CaseIterable>(
        _ type: T.Type, _ word: String, at codingPath: [any CodingKey]
    ) throws -> T where T.RawValue == String {
        guard let value = T(rawValue: word) else {
            let words = T.allCases.map(\.rawValue).joined(separator: ", ")
            throw JobFieldError(codingPath, "expected one of \(words)", showsWrittenValue: true)
        }
        return value
    }

    /// The message for a value outside `range`, naming the bound that was crossed.
    static func rangeViolation(_ value: Int, _ range: ClosedRange<Int>) -> String? {
        if value < range.lowerBound {
            return range.lowerBound == 1 ? "must be > 0" : "must be >= \(range.lowerBound)"
        }
        if value > range.upperBound { return "must be <= \(range.upperBound)" }
        return nil
    }

    /// The message for a list whose length is outside `range`.
    static func countViolation(_ count: Int, _ range: ClosedRange<Int>) -> String? {
        if count < range.lowerBound {
            return range.lowerBound == 1 ? "must not be empty" : "must have at least \(range.lowerBound) entries"
        }
        if count > range.upperBound { return "must have at most \(range.upperBound) entries" }
        return nil
    }

    /// The index of the first entry equal to an earlier one.
    static func firstRepeatedIndex(_ names: [String]) -> Int? {
        var seen = Set<String>()
        for (index, name) in names.enumerated() where !seen.insert(name).inserted {
            return index
        }
        return nil
    }
}

extension KeyedDecodingContainer where K == AnyCodingKey {
    /// Throws for the first written key that `Allowed` does not name, listing the allowed keys.
    /// Checking the keys as written (not as `Allowed` sees them) is what catches misspellings.
    func rejectUnknownKeys<Allowed: CodingKey & CaseIterable>(_ allowed: Allowed.Type) throws {
        let allowedNames = Allowed.allCases.map(\.stringValue)
        for key in allKeys where !allowedNames.contains(key.stringValue) {
            throw JobFieldError(
                codingPath + [key],
                "unknown key (allowed: \(allowedNames.joined(separator: ", ")))"
            )
        }
    }
}

extension Decoder {
    /// The mapping at this point, after refusing any key that `Keys` does not name.
    func strictContainer<Keys: CodingKey & CaseIterable>(
        keyedBy keys: Keys.Type
    ) throws -> KeyedDecodingContainer<Keys> {
        try container(keyedBy: AnyCodingKey.self).rejectUnknownKeys(keys)
        return try container(keyedBy: keys)
    }
}

extension KeyedDecodingContainer {
    /// An error at `key`.
    func invalid(_ key: K, _ message: String) -> JobFieldError {
        JobFieldError(codingPath + [key], message)
    }

    /// An error below `key`, at `nested` (an index, or a key of the nested mapping).
    func invalid(_ key: K, _ nested: [any CodingKey], _ message: String) -> JobFieldError {
        JobFieldError(codingPath + [key] + nested, message)
    }

    /// Throws `message` at `key` unless `condition` holds.
    func check(_ condition: Bool, _ key: K, _ message: @autoclosure () -> String) throws {
        if !condition { throw invalid(key, message()) }
    }

    /// A value that must be written; an empty value (`steps:`) counts as not written.
    func required<T: Decodable>(_ type: T.Type, _ key: K) throws -> T {
        guard let value = try decodeIfPresent(type, forKey: key) else {
            throw invalid(key, "required")
        }
        return value
    }

    /// A value that may be left out (or left empty), then `defaultValue`.
    func optional<T: Decodable>(_ type: T.Type, _ key: K, default defaultValue: T) throws -> T {
        try decodeIfPresent(type, forKey: key) ?? defaultValue
    }

    /// An integer within `range`; without a default it is required. Bounding every count here
    /// refuses absurd sizes before anything is allocated for them.
    func integer(_ key: K, in range: ClosedRange<Int>, default defaultValue: Int? = nil) throws -> Int {
        let value: Int
        if let defaultValue {
            value = try optional(Int.self, key, default: defaultValue)
        } else {
            value = try required(Int.self, key)
        }
        if let message = StrictDecoding.rangeViolation(value, range) { throw invalid(key, message) }
        return value
    }

    /// A list of integers, each within `range`, with between `counts` entries.
    func integers(_ key: K, each range: ClosedRange<Int>, counts: ClosedRange<Int>) throws -> [Int] {
        let values = try required([Int].self, key)
        if let message = StrictDecoding.countViolation(values.count, counts) { throw invalid(key, message) }
        for (index, value) in values.enumerated() {
            if let message = StrictDecoding.rangeViolation(value, range) {
                throw invalid(key, [AnyCodingKey.index(index)], message)
            }
        }
        return values
    }

    /// A finite number (a YAML integer is accepted); without a default it is required.
    func number(_ key: K, default defaultValue: Double? = nil) throws -> Double {
        if let value = try optionalNumber(key) { return value }
        if let defaultValue { return defaultValue }
        throw invalid(key, "required")
    }

    /// A finite number, or nil when not written.
    func optionalNumber(_ key: K) throws -> Double? {
        guard let value = try decodeIfPresent(Double.self, forKey: key) else { return nil }
        try check(value.isFinite, key, "must be a finite number")
        return value
    }

    /// One word of a closed set (`mode: full`); without a default it is required. A word outside
    /// the set is an error that lists the choices.
    func choice<T: RawRepresentable & CaseIterable>(
        _ type: T.Type, _ key: K, default defaultValue: T? = nil
    ) throws -> T where T.RawValue == String {
        guard let word = try decodeIfPresent(String.self, forKey: key) else {
            if let defaultValue { return defaultValue }
            throw invalid(key, "required")
        }
        return try StrictDecoding.member(T.self, word, at: codingPath + [key])
    }

    /// A list of words of a closed set, each checked as `choice` does.
    func choices<T: RawRepresentable & CaseIterable>(
        _ type: T.Type, _ key: K, default defaultValue: [T]
    ) throws -> [T] where T.RawValue == String {
        guard let words = try decodeIfPresent([String].self, forKey: key) else { return defaultValue }
        return try words.enumerated().map { index, word in
            try StrictDecoding.member(T.self, word, at: codingPath + [key, AnyCodingKey.index(index)])
        }
    }

    /// Refuses any of `keys` that is written, when they do not apply (`only allowed with arch: vit`).
    func refuse(_ keys: [K], because reason: String) throws {
        for key in keys where contains(key) {
            throw invalid(key, reason)
        }
    }
}

/// A number written in its shortest exact form (`0.001`, `1e-08`), so the canonical text is
/// readable and reads back to the same value. Yams' own float formatting keeps 15 digits in
/// scientific form (`1e-3`, `1e+0`).
struct ExactNumber: Encodable, YAMLEncodable {
    let value: Double

    init(_ value: Double) { self.value = value }

    func box() -> Node { Node(value.description, Tag(.float)) }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

extension KeyedEncodingContainer {
    mutating func encodeNumber(_ value: Double, forKey key: K) throws {
        try encode(ExactNumber(value), forKey: key)
    }
}

/// Names for runs and tasks: they become file names, so only a safe alphabet is allowed.
enum JobName {
    static let maximumLength = 64

    /// Nil when `name` is acceptable, else the reason.
    static func violation(_ name: String) -> String? {
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            switch scalar {
            case "A"..."Z", "a"..."z", "0"..."9", "_", ".", "-": true
            default: false
            }
        }
        if name.isEmpty || !allowed { return "must match [A-Za-z0-9_.-]+" }
        if name == "." || name == ".." { return "must not be . or .." }
        if name.count > maximumLength { return "must be at most \(maximumLength) characters" }
        return nil
    }
}
