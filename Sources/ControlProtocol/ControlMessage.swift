// ControlMessage: the coordinator/worker control messages of proto/orthofuse.proto, in Swift,
// encoded and decoded through the committed protobuf-c code.
import CControlProtocol
import Foundation

public struct ControlProtocolError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum ControlMessage: Sendable, Equatable {
    public struct JobAnnouncement: Sendable, Equatable {
        public var binaryVersion: String
        public var configHash: String
        public var jobText: String
        public var baseDirectory: String
        public var origin: String
        public var worldSize: Int

        public init(binaryVersion: String, configHash: String, jobText: String, baseDirectory: String,
                    origin: String, worldSize: Int) {
            self.binaryVersion = binaryVersion
            self.configHash = configHash
            self.jobText = jobText
            self.baseDirectory = baseDirectory
            self.origin = origin
            self.worldSize = worldSize
        }
    }

    public struct Progress: Sendable, Equatable {
        public var task: String
        public var step: Int
        public var steps: Int
        public var loss: Double
        public var orthoReg: Double
        public var samplesPerSecond: Double

        public init(task: String, step: Int, steps: Int, loss: Double, orthoReg: Double, samplesPerSecond: Double) {
            self.task = task
            self.step = step
            self.steps = steps
            self.loss = loss
            self.orthoReg = orthoReg
            self.samplesPerSecond = samplesPerSecond
        }
    }

    public struct TaskResult: Sendable, Equatable {
        public var task: String
        public var zeroShotAccuracy: Double
        public var finetunedAccuracy: Double
        public var taskVectorSHA256: String
        public var resumedFromStep: Int
        /// SHA-256 of the files as written (what the run manifest records and a rerun verifies).
        public var taskVectorFileSHA256: String
        public var headFileSHA256: String
        public var finalLoss: Double
        public var trainSeconds: Double

        public init(task: String, zeroShotAccuracy: Double, finetunedAccuracy: Double, taskVectorSHA256: String,
                    resumedFromStep: Int, taskVectorFileSHA256: String = "", headFileSHA256: String = "",
                    finalLoss: Double = .nan, trainSeconds: Double = 0) {
            self.task = task
            self.zeroShotAccuracy = zeroShotAccuracy
            self.finetunedAccuracy = finetunedAccuracy
            self.taskVectorSHA256 = taskVectorSHA256
            self.resumedFromStep = resumedFromStep
            self.taskVectorFileSHA256 = taskVectorFileSHA256
            self.headFileSHA256 = headFileSHA256
            self.finalLoss = finalLoss
            self.trainSeconds = trainSeconds
        }
    }

    case job(JobAnnouncement)
    case assignment(tasks: [String], rank: Int)
    case progress(Progress)
    case result(TaskResult)
    case failure(task: String, reason: String, rank: Int)
    case shutdown(success: Bool)

    /// Bumped whenever a message changes meaning; both sides must agree.
    public static let protocolVersion: UInt32 = 1

    /// Upper bound on a control message (a job text is the largest); larger is refused unread.
    public static let maximumSize = 16 << 20
}

extension ControlMessage {
    /// The serialized Envelope.
    public func encoded() -> [UInt8] {
        let arena = PackingArena()
        var envelope = Orthofuse__Envelope()
        orthofuse__envelope__init(&envelope)
        envelope.protocol_version = Self.protocolVersion
        switch self {
        case let .job(announcement):
            let body = arena.body(Orthofuse__JobAnnouncement(), orthofuse__job_announcement__init)
            body.pointee.binary_version = arena.string(announcement.binaryVersion)
            body.pointee.config_hash = arena.string(announcement.configHash)
            body.pointee.job_text = arena.string(announcement.jobText)
            body.pointee.base_directory = arena.string(announcement.baseDirectory)
            body.pointee.origin = arena.string(announcement.origin)
            body.pointee.world_size = UInt32(clamping: announcement.worldSize)
            envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_JOB
            envelope.job = body
        case let .assignment(tasks, rank):
            let body = arena.body(Orthofuse__TaskAssignment(), orthofuse__task_assignment__init)
            body.pointee.n_tasks = tasks.count
            body.pointee.tasks = arena.strings(tasks)
            body.pointee.rank = UInt32(clamping: rank)
            envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_ASSIGNMENT
            envelope.assignment = body
        case let .progress(value):
            let body = arena.body(Orthofuse__Progress(), orthofuse__progress__init)
            body.pointee.task = arena.string(value.task)
            body.pointee.step = UInt32(clamping: value.step)
            body.pointee.steps = UInt32(clamping: value.steps)
            body.pointee.loss = value.loss
            body.pointee.orthoreg = value.orthoReg
            body.pointee.samples_per_second = value.samplesPerSecond
            envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_PROGRESS
            envelope.progress = body
        case let .result(value):
            let body = arena.body(Orthofuse__TaskResult(), orthofuse__task_result__init)
            body.pointee.task = arena.string(value.task)
            body.pointee.zero_shot_accuracy = value.zeroShotAccuracy
            body.pointee.finetuned_accuracy = value.finetunedAccuracy
            body.pointee.task_vector_sha256 = arena.string(value.taskVectorSHA256)
            body.pointee.resumed_from_step = UInt32(clamping: value.resumedFromStep)
            body.pointee.task_vector_file_sha256 = arena.string(value.taskVectorFileSHA256)
            body.pointee.head_file_sha256 = arena.string(value.headFileSHA256)
            body.pointee.final_loss = value.finalLoss
            body.pointee.train_seconds = value.trainSeconds
            envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_RESULT
            envelope.result = body
        case let .failure(task, reason, rank):
            let body = arena.body(Orthofuse__Failure(), orthofuse__failure__init)
            body.pointee.task = arena.string(task)
            body.pointee.reason = arena.string(reason)
            body.pointee.rank = UInt32(clamping: rank)
            envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_FAILURE
            envelope.failure = body
        case let .shutdown(success):
            let body = arena.body(Orthofuse__Shutdown(), orthofuse__shutdown__init)
            body.pointee.success = success ? 1 : 0
            envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_SHUTDOWN
            envelope.shutdown = body
        }
        return withExtendedLifetime(arena) {
            var bytes = [UInt8](repeating: 0, count: orthofuse__envelope__get_packed_size(&envelope))
            _ = bytes.withUnsafeMutableBufferPointer { orthofuse__envelope__pack(&envelope, $0.baseAddress) }
            return bytes
        }
    }

    /// Parses an Envelope; malformed bytes, an unknown body or another protocol version are
    /// errors that say which (never a crash).
    public static func decode(_ bytes: [UInt8], from source: String) throws -> ControlMessage {
        guard bytes.count <= maximumSize else {
            throw ControlProtocolError("\(source): control message of \(bytes.count) bytes exceeds \(maximumSize)")
        }
        guard let envelope = bytes.withUnsafeBufferPointer({
            orthofuse__envelope__unpack(nil, bytes.count, $0.baseAddress)
        }) else {
            throw ControlProtocolError("\(source): malformed control message (\(bytes.count) bytes)")
        }
        defer { orthofuse__envelope__free_unpacked(envelope, nil) }
        let message = envelope.pointee
        guard message.protocol_version == protocolVersion else {
            throw ControlProtocolError(
                "\(source): control protocol version \(message.protocol_version), this binary speaks \(protocolVersion)")
        }
        func text(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
            pointer.map { String(cString: $0) } ?? ""
        }
        switch message.body_case {
        case ORTHOFUSE__ENVELOPE__BODY_JOB:
            guard let job = message.job?.pointee else { break }
            return .job(JobAnnouncement(
                binaryVersion: text(job.binary_version), configHash: text(job.config_hash), jobText: text(job.job_text),
                baseDirectory: text(job.base_directory), origin: text(job.origin), worldSize: Int(job.world_size)))
        case ORTHOFUSE__ENVELOPE__BODY_ASSIGNMENT:
            guard let value = message.assignment?.pointee else { break }
            let tasks = (0..<value.n_tasks).map { text(value.tasks[$0]) }
            return .assignment(tasks: tasks, rank: Int(value.rank))
        case ORTHOFUSE__ENVELOPE__BODY_PROGRESS:
            guard let value = message.progress?.pointee else { break }
            return .progress(Progress(task: text(value.task), step: Int(value.step), steps: Int(value.steps),
                                      loss: value.loss, orthoReg: value.orthoreg,
                                      samplesPerSecond: value.samples_per_second))
        case ORTHOFUSE__ENVELOPE__BODY_RESULT:
            guard let value = message.result?.pointee else { break }
            return .result(TaskResult(task: text(value.task), zeroShotAccuracy: value.zero_shot_accuracy,
                                      finetunedAccuracy: value.finetuned_accuracy,
                                      taskVectorSHA256: text(value.task_vector_sha256),
                                      resumedFromStep: Int(value.resumed_from_step),
                                      taskVectorFileSHA256: text(value.task_vector_file_sha256),
                                      headFileSHA256: text(value.head_file_sha256), finalLoss: value.final_loss,
                                      trainSeconds: value.train_seconds))
        case ORTHOFUSE__ENVELOPE__BODY_FAILURE:
            guard let value = message.failure?.pointee else { break }
            return .failure(task: text(value.task), reason: text(value.reason), rank: Int(value.rank))
        case ORTHOFUSE__ENVELOPE__BODY_SHUTDOWN:
            guard let value = message.shutdown?.pointee else { break }
            return .shutdown(success: value.success != 0)
        default:
            break
        }
        throw ControlProtocolError("\(source): control message without a known body (case \(message.body_case.rawValue))")
    }
}

/// The C memory of one message while protobuf-c packs it: message bodies and strings, all freed
/// when the arena goes. protobuf-c reads plain C structs and `char *`s, so the Swift values are
/// copied into memory that outlives each field assignment.
private final class PackingArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit { allocations.forEach { free($0) } }

    /// A heap copy of `value` after protobuf-c's `initialize` set its descriptor and defaults.
    func body<Body>(_ value: Body, _ initialize: (UnsafeMutablePointer<Body>) -> Void) -> UnsafeMutablePointer<Body> {
        let pointer = keep(malloc(MemoryLayout<Body>.stride)!).bindMemory(to: Body.self, capacity: 1)
        pointer.initialize(to: value)
        initialize(pointer)
        return pointer
    }

    func string(_ text: String) -> UnsafeMutablePointer<CChar> {
        keep(strdup(text)!).assumingMemoryBound(to: CChar.self)
    }

    /// A C array of C strings (a repeated string field).
    func strings(_ texts: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        let array = keep(malloc(max(texts.count, 1) * MemoryLayout<UnsafeMutablePointer<CChar>?>.stride)!)
            .bindMemory(to: UnsafeMutablePointer<CChar>?.self, capacity: max(texts.count, 1))
        for (index, text) in texts.enumerated() { (array + index).initialize(to: string(text)) }
        return array
    }

    private func keep(_ pointer: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer {
        allocations.append(pointer)
        return pointer
    }
}
