// JobPath: a file path from the job file, kept as written and resolved against the job's directory.
import Core
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where the job's paths are resolved from and how errors name the file; passed to decoding.
enum JobDecodingContext {
    static let baseDirectory = CodingUserInfoKey(rawValue: "orthofuse.job.baseDirectory")!
    static let origin = CodingUserInfoKey(rawValue: "orthofuse.job.origin")!
}

/// A path named in the job file. Relative paths are resolved against the job file's directory,
/// so a job means the same files whatever the working directory (mpirun may start ranks
/// elsewhere). `~` is expanded; absolute paths are kept.
public struct JobPath: Sendable, Equatable, Codable, CustomStringConvertible {
    /// The path as the job file wrote it, for messages.
    public let written: String
    /// The resolved, absolute location.
    public let url: URL
    /// Where the path was written (`job.yaml: tasks[0].train`), so a missing file can be reported
    /// against the line that named it.
    public let label: String

    public init(_ written: String, relativeTo baseDirectory: URL, label: String) {
        self.written = written
        self.label = label
        let expanded = written.hasPrefix("~") ? NSString(string: written).expandingTildeInPath : written
        if expanded.hasPrefix("/") {
            url = URL(fileURLWithPath: expanded, isDirectory: false).standardizedFileURL
        } else {
            let base = URL(fileURLWithPath: baseDirectory.absoluteURL.path, isDirectory: true)
            url = URL(fileURLWithPath: expanded, isDirectory: false, relativeTo: base).absoluteURL.standardizedFileURL
        }
    }

    public init(from decoder: any Decoder) throws {
        let written = try decoder.singleValueContainer().decode(String.self)
        if written.isEmpty { throw JobFieldError(decoder.codingPath, "must not be empty") }
        let base = decoder.userInfo[JobDecodingContext.baseDirectory] as? URL
            ?? URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
        let origin = decoder.userInfo[JobDecodingContext.origin] as? String ?? "job"
        self.init(written, relativeTo: base, label: "\(origin): \(StrictDecoding.keyPath(decoder.codingPath))")
    }

    /// Writes the resolved path: the canonical text must mean the same files wherever it is read.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(url.path)
    }

    /// Two paths are equal when they name the same location, however each was written.
    public static func == (lhs: JobPath, rhs: JobPath) -> Bool {
        lhs.url.path == rhs.url.path
    }

    public var description: String { written }

    /// Throws unless the path names an existing, readable regular file (symbolic links followed).
    public func checkReadableFile() throws {
        if let problem = FileBytes.problemOpeningInput(url.path) {
            throw OrthofuseError("\(label): \(written): \(problem)")
        }
    }
}

/// The files of one data split: a single `.npz` archive, a list of them (shards, read in order),
/// or a pair of IDX files.
public enum DatasetLocation: Sendable, Equatable, Codable {
    case npz(JobPath)
    case idx(images: JobPath, labels: JobPath)
    case npzShards([JobPath])

    private enum IDXKeys: String, CodingKey, CaseIterable {
        case images, labels
    }

    /// What the dataset readers take.
    public var source: DatasetSource {
        switch self {
        case .npz(let archive): .npz(archive.url)
        case .idx(let images, let labels): .idx(images: images.url, labels: labels.url)
        case .npzShards(let archives): .npzShards(archives.map(\.url))
        }
    }

    /// Every file this split reads.
    public var files: [JobPath] {
        switch self {
        case .npz(let archive): [archive]
        case .idx(let images, let labels): [images, labels]
        case .npzShards(let archives): archives
        }
    }

    public init(from decoder: any Decoder) throws {
        if let pair = try? decoder.container(keyedBy: AnyCodingKey.self) {
            try pair.rejectUnknownKeys(IDXKeys.self)
            let container = try decoder.container(keyedBy: IDXKeys.self)
            self = .idx(
                images: try container.required(JobPath.self, .images),
                labels: try container.required(JobPath.self, .labels)
            )
        } else if let single = try? decoder.singleValueContainer(), !single.decodeNil(),
                  (try? single.decode(String.self)) != nil {
            self = .npz(try JobPath(from: decoder))
        } else if var list = try? decoder.unkeyedContainer() {
            var archives: [JobPath] = []
            while !list.isAtEnd { archives.append(try list.decode(JobPath.self)) }
            guard !archives.isEmpty, archives.count <= 4096 else {
                throw JobFieldError(decoder.codingPath, "a list of .npz shards needs 1 to 4096 paths", showsWrittenValue: true)
            }
            self = archives.count == 1 ? .npz(archives[0]) : .npzShards(archives)
        } else {
            throw JobFieldError(
                decoder.codingPath,
                "expected an .npz path, a list of .npz paths or {images: path, labels: path}",
                showsWrittenValue: true
            )
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .npz(let archive):
            try archive.encode(to: encoder)
        case .idx(let images, let labels):
            var container = encoder.container(keyedBy: IDXKeys.self)
            try container.encode(images, forKey: .images)
            try container.encode(labels, forKey: .labels)
        case .npzShards(let archives):
            var container = encoder.unkeyedContainer()
            for archive in archives { try container.encode(archive) }
        }
    }
}
