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
    case acknowledgement(binaryVersion: String, configHash: String, rank: Int)
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
        var strings: [UnsafeMutablePointer<CChar>] = []
        defer { strings.forEach { free($0) } }
        func c(_ text: String) -> UnsafeMutablePointer<CChar> {
            let pointer = strdup(text)!
            strings.append(pointer)
            return pointer
        }
        var envelope = Orthofuse__Envelope()
        orthofuse__envelope__init(&envelope)
        envelope.protocol_version = Self.protocolVersion

        // Each body lives on the stack for the duration of packing.
        var job = Orthofuse__JobAnnouncement()
        var acknowledgement = Orthofuse__JobAcknowledgement()
        var assignment = Orthofuse__TaskAssignment()
        var progress = Orthofuse__Progress()
        var result = Orthofuse__TaskResult()
        var failure = Orthofuse__Failure()
        var shutdown = Orthofuse__Shutdown()
        var taskNames: [UnsafeMutablePointer<CChar>?] = []

        return withUnsafeMutablePointer(to: &job) { jobPointer in
            withUnsafeMutablePointer(to: &acknowledgement) { acknowledgementPointer in
                withUnsafeMutablePointer(to: &assignment) { assignmentPointer in
                    withUnsafeMutablePointer(to: &progress) { progressPointer in
                        withUnsafeMutablePointer(to: &result) { resultPointer in
                            withUnsafeMutablePointer(to: &failure) { failurePointer in
                                withUnsafeMutablePointer(to: &shutdown) { shutdownPointer in
                                    switch self {
                                    case let .job(announcement):
                                        orthofuse__job_announcement__init(jobPointer)
                                        jobPointer.pointee.binary_version = c(announcement.binaryVersion)
                                        jobPointer.pointee.config_hash = c(announcement.configHash)
                                        jobPointer.pointee.job_text = c(announcement.jobText)
                                        jobPointer.pointee.base_directory = c(announcement.baseDirectory)
                                        jobPointer.pointee.origin = c(announcement.origin)
                                        jobPointer.pointee.world_size = UInt32(clamping: announcement.worldSize)
                                        envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_JOB
                                        envelope.job = jobPointer
                                    case let .acknowledgement(version, hash, rank):
                                        orthofuse__job_acknowledgement__init(acknowledgementPointer)
                                        acknowledgementPointer.pointee.binary_version = c(version)
                                        acknowledgementPointer.pointee.config_hash = c(hash)
                                        acknowledgementPointer.pointee.rank = UInt32(clamping: rank)
                                        envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_ACKNOWLEDGEMENT
                                        envelope.acknowledgement = acknowledgementPointer
                                    case let .assignment(tasks, rank):
                                        orthofuse__task_assignment__init(assignmentPointer)
                                        taskNames = tasks.map { c($0) }
                                        assignmentPointer.pointee.rank = UInt32(clamping: rank)
                                        envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_ASSIGNMENT
                                        envelope.assignment = assignmentPointer
                                    case let .progress(value):
                                        orthofuse__progress__init(progressPointer)
                                        progressPointer.pointee.task = c(value.task)
                                        progressPointer.pointee.step = UInt32(clamping: value.step)
                                        progressPointer.pointee.steps = UInt32(clamping: value.steps)
                                        progressPointer.pointee.loss = value.loss
                                        progressPointer.pointee.orthoreg = value.orthoReg
                                        progressPointer.pointee.samples_per_second = value.samplesPerSecond
                                        envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_PROGRESS
                                        envelope.progress = progressPointer
                                    case let .result(value):
                                        orthofuse__task_result__init(resultPointer)
                                        resultPointer.pointee.task = c(value.task)
                                        resultPointer.pointee.zero_shot_accuracy = value.zeroShotAccuracy
                                        resultPointer.pointee.finetuned_accuracy = value.finetunedAccuracy
                                        resultPointer.pointee.task_vector_sha256 = c(value.taskVectorSHA256)
                                        resultPointer.pointee.resumed_from_step = UInt32(clamping: value.resumedFromStep)
                                        resultPointer.pointee.task_vector_file_sha256 = c(value.taskVectorFileSHA256)
                                        resultPointer.pointee.head_file_sha256 = c(value.headFileSHA256)
                                        resultPointer.pointee.final_loss = value.finalLoss
                                        resultPointer.pointee.train_seconds = value.trainSeconds
                                        envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_RESULT
                                        envelope.result = resultPointer
                                    case let .failure(task, reason, rank):
                                        orthofuse__failure__init(failurePointer)
                                        failurePointer.pointee.task = c(task)
                                        failurePointer.pointee.reason = c(reason)
                                        failurePointer.pointee.rank = UInt32(clamping: rank)
                                        envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_FAILURE
                                        envelope.failure = failurePointer
                                    case let .shutdown(success):
                                        orthofuse__shutdown__init(shutdownPointer)
                                        shutdownPointer.pointee.success = success ? 1 : 0
                                        envelope.body_case = ORTHOFUSE__ENVELOPE__BODY_SHUTDOWN
                                        envelope.shutdown = shutdownPointer
                                    }
                                    return taskNames.withUnsafeMutableBufferPointer { names in
                                        assignmentPointer.pointee.n_tasks = names.count
                                        assignmentPointer.pointee.tasks = names.baseAddress
                                        let size = orthofuse__envelope__get_packed_size(&envelope)
                                        var bytes = [UInt8](repeating: 0, count: size)
                                        _ = bytes.withUnsafeMutableBufferPointer {
                                            orthofuse__envelope__pack(&envelope, $0.baseAddress)
                                        }
                                        return bytes
                                    }
                                }
                            }
                        }
                    }
                }
            }
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
        case ORTHOFUSE__ENVELOPE__BODY_ACKNOWLEDGEMENT:
            guard let value = message.acknowledgement?.pointee else { break }
            return .acknowledgement(binaryVersion: text(value.binary_version), configHash: text(value.config_hash),
                                    rank: Int(value.rank))
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
