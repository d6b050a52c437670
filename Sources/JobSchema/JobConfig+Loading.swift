// JobConfig+Loading: reading a job file into one-line errors, checking its files, its canonical text.
import Core
import Foundation
import Yams

extension JobConfig {
    /// Job files are small; anything larger is a mistake (a data file passed as the job).
    public static let maximumFileSize = 1 << 20

    /// Reads and validates the job file at `url`; its relative paths are resolved against the
    /// file's directory. Every failure is an `OrthofuseError` naming the file.
    public static func load(_ url: URL) throws -> JobConfig {
        let origin = url.relativePath
        let text = try FileBytes.readText(url, origin: origin, limit: maximumFileSize, kind: "job file")
        return try parse(text, origin: origin, baseDirectory: url.deletingLastPathComponent())
    }

    /// Validates the job text `yaml`. `origin` names it in messages (`job.yaml: ...`); relative
    /// paths are resolved against `baseDirectory`.
    public static func parse(_ yaml: String, origin: String, baseDirectory: URL) throws -> JobConfig {
        try StrictYAML.decode(JobConfig.self, yaml: yaml, origin: origin, baseDirectory: baseDirectory,
                              documentKind: "job file", topLevel: "a mapping of job settings")
    }

    /// Throws for the first file the job reads that is missing, not a regular file, or unreadable
    /// (`job.yaml: tasks[0].train: data/mnist/train.npz: no such file`). Run before any training,
    /// so a typo costs seconds, not a fine-tuning run. Also refuses an `output` that exists as a file.
    public func checkFiles() throws {
        for file in inputFiles {
            try file.checkReadableFile()
        }
        var isDirectory: ObjCBool = false
        let outputExists = FileManager.default.fileExists(atPath: output.url.path, isDirectory: &isDirectory)
        if outputExists, !isDirectory.boolValue {
            throw OrthofuseError("\(output.label): \(output.written): exists and is not a directory")
        }
    }

    /// The sections that shape a task's training, each as canonical YAML (absent ones empty). Two
    /// jobs that agree on these train the same task the same way, whatever their merges,
    /// evaluation or runtime; the run manifest compares them.
    public var trainingSections: [String: String] {
        func yaml(_ value: (some Encodable)?) -> String {
            guard let value else { return "" }
            do {
                return try YAMLEncoder().encode(value)
            } catch {
                preconditionFailure("a decoded job always encodes: \(error)")
            }
        }
        return [
            "seed": "\(seed)", "model": yaml(model), "base": yaml(base), "pretrain": yaml(pretrain),
            "finetune": yaml(finetune), "head": yaml(head),
            "validation": "\(validationFraction)/\(validationMax)",
        ]
    }

    /// The fully defaulted job as YAML, paths resolved: the same job always gives the same text,
    /// and the text reads back as the same job from any directory (hence a config hash uses it).
    public var canonicalYAML: String {
        do {
            return try YAMLEncoder().encode(self)
        } catch {
            preconditionFailure("a decoded job always encodes: \(error)")
        }
    }
}

/// Decoding a strict YAML document (the job file, the merge file) into one-line errors.
enum StrictYAML {
    /// Decodes `yaml`; every failure is an `OrthofuseError` naming `origin` and the key path.
    /// Relative paths in the document resolve against `baseDirectory`. `documentKind` names an
    /// empty document ("empty job file"), `topLevel` what the top must be.
    static func decode<T: Decodable>(
        _ type: T.Type, yaml: String, origin: String, baseDirectory: URL, documentKind: String, topLevel: String
    ) throws -> T {
        let root: Node
        do {
            guard let document = try Yams.compose(yaml: yaml) else {
                throw OrthofuseError("\(origin): empty \(documentKind)")
            }
            root = document
        } catch let error as YamlError {
            throw OrthofuseError(syntaxErrorLine(error, origin: origin, yaml: yaml))
        }
        let userInfo: [CodingUserInfoKey: Any] = [
            JobDecodingContext.baseDirectory: baseDirectory,
            JobDecodingContext.origin: origin,
        ]
        do {
            return try YAMLDecoder().decode(T.self, from: root, userInfo: userInfo)
        } catch let error as JobFieldError {
            var message = error.message
            if error.showsWrittenValue, let node = root.lookup(error.codingPath) {
                message += ", got \(node.writtenValueText)"
            }
            throw OrthofuseError(located(message, at: error.codingPath, origin: origin))
        } catch let error as DecodingError {
            throw OrthofuseError(decodingErrorLine(error, origin: origin, root: root, topLevel: topLevel))
        } catch {
            throw OrthofuseError("\(origin): " + "\(error)".split(separator: "\n").joined(separator: " "))
        }
    }
}

/// `job.yaml: tasks[1].classes: message`, or `job.yaml: message` at the top.
private func located(_ message: String, at codingPath: [any CodingKey], origin: String) -> String {
    let keyPath = StrictDecoding.keyPath(codingPath)
    return keyPath.isEmpty ? "\(origin): \(message)" : "\(origin): \(keyPath): \(message)"
}

/// One line for a failure the decoder itself reports: a missing key or a value of the wrong kind.
private func decodingErrorLine(_ error: DecodingError, origin: String, root: Node, topLevel: String) -> String {
    switch error {
    case .keyNotFound(let key, let context):
        return located("required", at: context.codingPath + [key], origin: origin)
    case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
        let message = mismatchMessage(
            expected: type, written: root.lookup(context.codingPath),
            topLevel: context.codingPath.isEmpty ? topLevel : nil
        )
        return located(message, at: context.codingPath, origin: origin)
    case .dataCorrupted(let context):
        return located(context.debugDescription, at: context.codingPath, origin: origin)
    @unknown default:
        return "\(origin): \(error)"
    }
}

/// "expected an integer, got \"ten\"", or the range problem when an integer did not fit.
private func mismatchMessage(expected type: Any.Type, written: Node?, topLevel: String?) -> String {
    if type is any BinaryInteger.Type, let written, case .scalar(let scalar) = written,
       Resolver.default.resolveTag(of: written) == .int {
        if type is any UnsignedInteger.Type, scalar.string.hasPrefix("-") { return "must be >= 0" }
        return "integer out of range, got \(scalar.string)"
    }
    let expected = topLevel ?? kindName(type)
    guard let written else { return "expected \(expected)" }
    return "expected \(expected), got \(written.writtenValueText)"
}

/// What a decoder expected, in the words of the job file's reader.
private func kindName(_ type: Any.Type) -> String {
    switch type {
    case is any UnsignedInteger.Type: "a non-negative integer"
    case is any BinaryInteger.Type: "an integer"
    case is any BinaryFloatingPoint.Type: "a number"
    case is String.Type: "a string"
    case is Bool.Type: "true or false"
    case is Node.Mapping.Type: "a mapping"
    case is Node.Sequence.Type: "a list"
    case is Node.Scalar.Type: "a single value"
    default: "\(type)"
    }
}

/// One line with the file, line and column for a YAML syntax error (Yams' own text spans several
/// lines and, for duplicate keys, the whole document).
private func syntaxErrorLine(_ error: YamlError, origin: String, yaml: String) -> String {
    func contextText(_ context: YamlError.Context?) -> String {
        guard let context else { return "" }
        return " (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
    }
    switch error {
    case .scanner(let context, let problem, let mark, _),
         .parser(let context, let problem, let mark, _),
         .composer(let context, let problem, let mark, _):
        return "\(origin):\(mark.line):\(mark.column): \(problem)\(contextText(context))"
    case .duplicatedKeysInMapping(let duplicates, let context):
        let keys = duplicates.map { "'\($0)'" }.joined(separator: ", ")
        return "\(origin):\(context.mark.line):\(context.mark.column): duplicate key \(keys) in one mapping"
    case .reader(let problem, let offset, _, _):
        if let offset {
            let line = yaml.prefix(offset).reduce(1) { $1 == "\n" ? $0 + 1 : $0 }
            return "\(origin):\(line): \(problem)"
        }
        return "\(origin): \(problem)"
    default:
        return "\(origin): " + "\(error)".split(separator: "\n").joined(separator: " ")
    }
}

extension Node {
    /// The node at `codingPath` below this one, if the path leads anywhere.
    func lookup(_ codingPath: [any CodingKey]) -> Node? {
        var node = self
        for key in codingPath {
            if let index = key.intValue, let sequence = node.sequence {
                guard sequence.indices.contains(index) else { return nil }
                node = sequence[index]
            } else if let mapping = node.mapping, let child = mapping[key.stringValue] {
                node = child
            } else {
                return nil
            }
        }
        return node
    }

    /// A written value as a message shows it: strings quoted, numbers and booleans bare,
    /// lists and mappings by kind.
    var writtenValueText: String {
        switch self {
        case .scalar(let scalar):
            // Quoted scalars resolve to !!str, so "10" shows quoted and 10 bare.
            let tagName = Resolver.default.resolveTag(of: self)
            if tagName == .null { return "nothing" }
            let quoted = tagName == .str
            let text = scalar.string.count > 60 ? String(scalar.string.prefix(57)) + "..." : scalar.string
            return quoted ? "\"\(text)\"" : text
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }
}
