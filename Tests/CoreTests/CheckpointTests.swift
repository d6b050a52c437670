// CheckpointTests: a run resumed from a mid-run checkpoint ends bitwise where an uninterrupted run does.
import Foundation
import XCTest
@testable import Core
import TestSupport

final class CheckpointTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = try temporaryFolder("checkpoint")
    }

    private func data() -> Dataset {
        var random = RandomStream(seed: 8)
        let count = 50  // not a multiple of the batch: epochs wrap and reshuffle mid-run
        return Dataset(inputs: (0..<(count * 6)).map { _ in Float(random.nextGaussian()) },
                       labels: (0..<count).map { _ in Int32(random.nextInt(below: 3)) }, sampleShape: [6])
    }

    /// Trains 30 steps straight, and again from the checkpoint saved at step 10 (the state of a
    /// run killed right after it); the final parameters, head and task vector must be identical.
    private func checkResume(_ settings: TrainingSettings, file: StaticString = #filePath, line: UInt = #line) throws {
        let configuration = MLPConfiguration(inputCount: 6, hidden: [5, 4], activation: .gelu)
        let base = FloatBuffer(count: configuration.layout.totalCount)
        var random = RandomStream(seed: 4)
        MLPBackbone(configuration, maxBatch: 8).initialize(base, random: &random)
        let url = directory.appendingPathComponent("task.safetensors")
        let saved = directory.appendingPathComponent("at-step-10.safetensors")
        let checkpointing = Checkpointing(url: url, every: 5, fingerprint: "job/task")

        func train(resumeFrom: URL?, expectedStart: Int = 0) throws -> (FloatBuffer, [Float], [Float]) {
            try? FileManager.default.removeItem(at: url)
            if let resumeFrom { try FileManager.default.copyItem(at: resumeFrom, to: url) }
            let backbone = MLPBackbone(configuration, maxBatch: 8)
            let head = ClassificationHead(classes: 3, featureCount: 4)
            for i in 0..<head.parameters.count { head.parameters[i] = Float(i % 5) * 0.1 - 0.2 }
            let parameters = FloatBuffer(count: base.count)
            parameters.copy(from: base)
            var resumedAt = 0
            let vector = try Trainer(backbone: backbone, head: head, settings: settings).run(
                parameters: parameters, base: base, data: data(), random: RandomStream(seed: 9), label: "test",
                reportEvery: 10, checkpointing: checkpointing,
                progress: { progress in
                    if progress.step == 10, resumeFrom == nil {
                        try? FileManager.default.copyItem(at: url, to: saved)
                    }
                },
                resumed: { resumedAt = $0 })
            XCTAssertEqual(resumedAt, expectedStart, file: file, line: line)
            return (vector, parameters.array, head.parameters.array)
        }
        let straight = try train(resumeFrom: nil)
        let resumed = try train(resumeFrom: saved, expectedStart: 10)
        XCTAssertEqual(resumed.0.array, straight.0.array, "task vector", file: file, line: line)
        XCTAssertEqual(resumed.1, straight.1, "parameters", file: file, line: line)
        XCTAssertEqual(resumed.2, straight.2, "head", file: file, line: line)
        XCTAssertNotEqual(straight.0.array.map(abs).max(), 0, file: file, line: line)

        // A finished run's checkpoint makes a rerun skip training and give the same result.
        let finished = directory.appendingPathComponent("finished.safetensors")
        try? FileManager.default.removeItem(at: finished)
        try FileManager.default.copyItem(at: url, to: finished)
        let rerun = try train(resumeFrom: finished, expectedStart: 30)
        XCTAssertEqual(rerun.0.array, straight.0.array, "rerun of a finished run", file: file, line: line)
        try FileManager.default.removeItem(at: saved)
    }

    func testResumeMatchesAnUninterruptedRun() throws {
        let layout = MLPConfiguration(inputCount: 6, hidden: [5, 4], activation: .gelu).layout
        let all = Array(layout.specs.indices)
        try checkResume(TrainingSettings(
            steps: 30, batchSize: 8, optimizer: .adamw(learningRate: 1e-2), warmupSteps: 3, decay: .cosine,
            gradientClip: 1, orthoReg: OrthoRegSettings(lambda: 0.5), trainedParameters: all,
            regularizedParameters: FineTuneMode.full.regularizedParameters(layout)))
        try checkResume(TrainingSettings(
            steps: 30, batchSize: 8, optimizer: OptimizerSettings(kind: .sgd(momentum: 0.9), learningRate: 0.05, weightDecay: 0),
            trainedParameters: [], regularizedParameters: FineTuneMode.lora.loraTargets(layout),
            parametrization: .lora(rank: 2, alpha: 4, targets: FineTuneMode.lora.loraTargets(layout))))
        try checkResume(TrainingSettings(
            steps: 30, batchSize: 8, optimizer: .adamw(learningRate: 1e-2), trainedParameters: all, trainsHead: true))
    }

    /// A preemption request during step 12's report: the run saves after step 13 and throws
    /// TrainingPreempted; the rerun resumes at 13 and ends bitwise where an uninterrupted run does.
    func testAPreemptedRunSavesAtItsNextStepAndTheRerunMatches() throws {
        let configuration = MLPConfiguration(inputCount: 6, hidden: [5, 4], activation: .gelu)
        let layout = configuration.layout
        let settings = TrainingSettings(
            steps: 30, batchSize: 8, optimizer: .adamw(learningRate: 1e-2), warmupSteps: 3, decay: .cosine,
            orthoReg: OrthoRegSettings(lambda: 0.5), trainedParameters: Array(layout.specs.indices),
            regularizedParameters: FineTuneMode.full.regularizedParameters(layout))
        let base = FloatBuffer(count: layout.totalCount)
        var random = RandomStream(seed: 4)
        MLPBackbone(configuration, maxBatch: 8).initialize(base, random: &random)
        let checkpointing = Checkpointing(url: directory.appendingPathComponent("task.safetensors"), every: 0,
                                          fingerprint: "job/task")
        defer { Preemption.withdraw() }
        func train(checkpointing: Checkpointing?, preemptAfter: Int? = nil, resumed: @escaping (Int) -> Void = { _ in })
            throws -> [Float] {
            let parameters = FloatBuffer(count: base.count)
            parameters.copy(from: base)
            return try Trainer(backbone: MLPBackbone(configuration, maxBatch: 8), head: ClassificationHead(classes: 3, featureCount: 4),
                               settings: settings).run(
                parameters: parameters, base: base, data: data(), random: RandomStream(seed: 9), label: "task",
                reportEvery: 1, checkpointing: checkpointing,
                progress: { if $0.step == preemptAfter { Preemption.request() } }, resumed: resumed).array
        }
        let straight = try train(checkpointing: nil)
        XCTAssertThrowsError(try train(checkpointing: checkpointing, preemptAfter: 12)) { error in
            let preempted = error as? TrainingPreempted
            XCTAssertEqual(preempted?.step, 13, "\(error)")
            XCTAssertEqual(preempted?.description, "task: preempted at step 13 of 30; its checkpoint is saved, a rerun resumes there")
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: checkpointing.url.path), "saved at the preemption")
        Preemption.withdraw()
        var resumedAt = 0
        XCTAssertEqual(try train(checkpointing: checkpointing, resumed: { resumedAt = $0 }), straight)
        XCTAssertEqual(resumedAt, 13)
        // A run without a checkpoint to save does not answer the request: it trains to the end.
        Preemption.request()
        XCTAssertEqual(try train(checkpointing: nil), straight)
    }

    func testForeignOrDamagedCheckpointsAreIgnored() throws {
        let url = directory.appendingPathComponent("x.safetensors")
        try Data("not a checkpoint".utf8).write(to: url)
        XCTAssertNil(TrainingCheckpoint.read(from: url, fingerprint: "a", trainedCount: 3, headCount: 0))
        try TrainingCheckpoint(step: 1, optimizerSteps: 1, shuffles: 0, position: 0, trained: [1, 2, 3], firstMoment: [],
                               secondMoment: [], head: [], headFirstMoment: [], headSecondMoment: [])
            .write(to: url, fingerprint: "a")
        XCTAssertNotNil(TrainingCheckpoint.read(from: url, fingerprint: "a", trainedCount: 3, headCount: 0))
        XCTAssertNil(TrainingCheckpoint.read(from: url, fingerprint: "b", trainedCount: 3, headCount: 0), "other job")
        XCTAssertNil(TrainingCheckpoint.read(from: url, fingerprint: "a", trainedCount: 4, headCount: 0), "other model")
    }
}
