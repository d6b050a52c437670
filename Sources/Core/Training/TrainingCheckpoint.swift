// TrainingCheckpoint: everything a training run needs to continue exactly where it stopped.
import Foundation

/// Where and how often a training run saves its state, and which run it belongs to.
public struct Checkpointing: Sendable, Equatable {
    public var url: URL
    /// Save after every `every` steps and after the last one; 0 saves only after the last one.
    public var every: Int
    /// Identifies the job, task and θ0; a checkpoint with another fingerprint is ignored.
    public var fingerprint: String

    public init(url: URL, every: Int, fingerprint: String) {
        self.url = url
        self.every = every
        self.fingerprint = fingerprint
    }
}

/// The saved state: trained values (θ, or the LoRA adapters), optimizer moments and step count,
/// the head when it trains, and the sampler's position. Written atomically as safetensors.
struct TrainingCheckpoint {
    var step: Int
    var optimizerSteps: Int
    var shuffles: Int
    var position: Int
    var trained: [Float]
    var firstMoment: [Float]
    var secondMoment: [Float]
    var head: [Float]
    var headFirstMoment: [Float]
    var headSecondMoment: [Float]

    static let kind = "training_checkpoint"

    func write(to url: URL, fingerprint: String) throws {
        func record(_ name: String, _ values: [Float]) -> TensorRecord {
            TensorRecord(name: name, shape: [values.count], values: values)
        }
        let metadata = [
            "orthofuse.kind": Self.kind, "orthofuse.fingerprint": fingerprint, "orthofuse.step": "\(step)",
            "orthofuse.optimizer_steps": "\(optimizerSteps)", "orthofuse.shuffles": "\(shuffles)",
            "orthofuse.position": "\(position)",
        ]
        try Safetensors.write([
            record("trained", trained), record("first_moment", firstMoment), record("second_moment", secondMoment),
            record("head", head), record("head_first_moment", headFirstMoment),
            record("head_second_moment", headSecondMoment),
        ], metadata: metadata, to: url)
    }

    /// The checkpoint at `url` when it exists, belongs to `fingerprint` and has the expected
    /// sizes; nil otherwise (a stale or foreign file is not an error: training starts over).
    static func read(from url: URL, fingerprint: String, trainedCount: Int, headCount: Int) -> TrainingCheckpoint? {
        guard FileManager.default.fileExists(atPath: url.path), let file = try? Safetensors.read(url),
              file.metadata["orthofuse.kind"] == kind, file.metadata["orthofuse.fingerprint"] == fingerprint,
              let step = file.metadata["orthofuse.step"].flatMap(Int.init),
              let optimizerSteps = file.metadata["orthofuse.optimizer_steps"].flatMap(Int.init),
              let shuffles = file.metadata["orthofuse.shuffles"].flatMap(Int.init),
              let position = file.metadata["orthofuse.position"].flatMap(Int.init),
              let trained = file["trained"]?.values, trained.count == trainedCount,
              let first = file["first_moment"]?.values, let second = file["second_moment"]?.values,
              let head = file["head"]?.values, head.count == headCount,
              let headFirst = file["head_first_moment"]?.values, let headSecond = file["head_second_moment"]?.values
        else { return nil }
        return TrainingCheckpoint(step: step, optimizerSteps: optimizerSteps, shuffles: shuffles, position: position,
                                  trained: trained, firstMoment: first, secondMoment: second, head: head,
                                  headFirstMoment: headFirst, headSecondMoment: headSecond)
    }
}

extension Optimizer {
    /// The moments and step count, for checkpoints.
    var state: (steps: Int, first: [Float], second: [Float]) {
        (stepCount, firstMoment.array, secondMoment.array)
    }

    /// Restores `state`; false when the sizes do not match this optimizer.
    func restore(steps: Int, first: [Float], second: [Float]) -> Bool {
        guard first.count == firstMoment.count, second.count == secondMoment.count else { return false }
        firstMoment.copy(from: first)
        secondMoment.copy(from: second)
        stepCount = steps
        return true
    }
}
