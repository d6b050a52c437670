// RunManifest: output/manifest.json, the record of what a run directory holds and from which job,
// so a rerun skips verified work and a different job is refused instead of mixed in.
import Core
import JobSchema
import Foundation

/// Written by rank 0 only, atomically, each time a task finishes: a crash loses no finished task.
public struct RunManifest: Codable, Sendable, Equatable {
    public static let fileName = "manifest.json"
    public static let currentFormat = "orthofuse-manifest/1"

    /// One finished task: its files and their SHA-256, and what the report needs without retraining.
    public struct TaskRecord: Codable, Sendable, Equatable {
        /// Identifies the task's definition (name, classes, data files, validation split).
        public var definition: String
        public var taskVector: String
        public var taskVectorSHA256: String
        public var head: String
        public var headSHA256: String
        public var steps: Int
        public var finalLoss: Double?
        public var trainSeconds: Double
        public var rank: Int

        public init(definition: String, taskVector: String, taskVectorSHA256: String, head: String, headSHA256: String,
                    steps: Int, finalLoss: Double?, trainSeconds: Double, rank: Int) {
            self.definition = definition
            self.taskVector = taskVector
            self.taskVectorSHA256 = taskVectorSHA256
            self.head = head
            self.headSHA256 = headSHA256
            self.steps = steps
            self.finalLoss = finalLoss
            self.trainSeconds = trainSeconds
            self.rank = rank
        }

        enum CodingKeys: String, CodingKey {
            case definition
            case taskVector = "task_vector"
            case taskVectorSHA256 = "task_vector_sha256"
            case head
            case headSHA256 = "head_sha256"
            case steps
            case finalLoss = "final_loss"
            case trainSeconds = "train_seconds"
            case rank
        }
    }

    public var format: String
    public var job: String
    /// The job's sections that shape training (`JobConfig.trainingSections`), as canonical YAML.
    public var training: [String: String]
    /// Fingerprint of θ0's values; nil until θ0 exists.
    public var baseFingerprint: String?
    public var tasks: [String: TaskRecord]

    public init(job: String, training: [String: String], baseFingerprint: String? = nil, tasks: [String: TaskRecord] = [:]) {
        format = Self.currentFormat
        self.job = job
        self.training = training
        self.baseFingerprint = baseFingerprint
        self.tasks = tasks
    }

    enum CodingKeys: String, CodingKey {
        case format, job, training
        case baseFingerprint = "base_fingerprint"
        case tasks
    }

    /// The manifest in `directory`, nil when there is none; an unreadable one is an error (a
    /// rerun must not guess what the directory holds).
    public static func read(in directory: URL) throws -> RunManifest? {
        let url = directory.appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw OrthofuseError("\(url.path): cannot read the run manifest")
        }
        let manifest: RunManifest
        do {
            manifest = try JSONDecoder().decode(RunManifest.self, from: data)
        } catch {
            throw OrthofuseError("\(url.path): not a valid run manifest (\(error)); move the directory aside or choose another output")
        }
        guard manifest.format == currentFormat else {
            throw OrthofuseError("\(url.path): manifest format '\(manifest.format)', this orthofuse reads '\(currentFormat)'")
        }
        return manifest
    }

    public func write(in directory: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try AtomicFile.write(encoder.encode(self), to: directory.appendingPathComponent(Self.fileName))
    }

    /// Why a job with these training sections and task definitions may not write into this
    /// directory, or nil when it may (same training; tasks may be added, none may change).
    public func conflict(training newSections: [String: String], taskDefinitions: [String: String]) -> String? {
        let changed = Set(training.keys).union(newSections.keys).sorted().filter { training[$0] != newSections[$0] }
        if !changed.isEmpty {
            return "it holds task vectors of job '\(job)' trained with other settings (\(changed.joined(separator: ", ")) differ)"
        }
        let changedTasks = taskDefinitions.keys.sorted().filter { name in
            tasks[name].map { $0.definition != taskDefinitions[name] } ?? false
        }
        if !changedTasks.isEmpty {
            return "task(s) \(changedTasks.map { "'\($0)'" }.joined(separator: ", ")) were trained there with another definition (data, classes, steps or validation split)"
        }
        return nil
    }

    /// Whether `record`'s files exist in `directory` and hash to the recorded SHA-256.
    public static func verify(_ record: TaskRecord, in directory: URL) -> Bool {
        for (file, expected) in [(record.taskVector, record.taskVectorSHA256), (record.head, record.headSHA256)] {
            guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent(file).path),
                  Checksum.sha256(data) == expected else { return false }
        }
        return true
    }
}
