// DataParallelTrainingTests: a task trained by a group of in-process ranks, each computing some of
// every batch's micro-batches, ends bitwise where one rank does.
import Foundation
import XCTest
import Core
import Transport
import Worker
import TestSupport

final class DataParallelTrainingTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = try temporaryFolder("data-parallel")
    }

    private enum Model: Sendable {
        case mlp(MLPConfiguration)
        case vit(ViTConfiguration)

        var layout: ParameterLayout {
            switch self {
            case .mlp(let configuration): configuration.layout
            case .vit(let configuration): configuration.layout
            }
        }
    }

    /// A model, its θ0 and a labelled dataset; every rank builds its own backbone from it.
    private struct Fixture: Sendable {
        var model: Model
        var base: [Float]
        var data: Dataset
        var classes: Int

        var layout: ParameterLayout { model.layout }

        func backbone(maxBatch: Int) -> any Backbone {
            switch model {
            case .mlp(let configuration): MLPBackbone(configuration, maxBatch: maxBatch)
            case .vit(let configuration): ViTBackbone(configuration, maxBatch: maxBatch)
            }
        }
    }

    private func fixture(_ model: Model, samples: Int = 70, seed: UInt64 = 31) -> Fixture {
        var random = RandomStream(seed: seed)
        let backbone: any Backbone = switch model {
        case .mlp(let configuration): MLPBackbone(configuration, maxBatch: 1)
        case .vit(let configuration): ViTBackbone(configuration, maxBatch: 1)
        }
        let base = FloatBuffer(count: model.layout.totalCount)
        backbone.initialize(base, random: &random)
        let classes = 4
        let data = Dataset(inputs: (0..<(samples * backbone.inputCount)).map { _ in Float(random.nextGaussian()) },
                           labels: (0..<samples).map { _ in Int32(random.nextInt(below: classes)) },
                           sampleShape: [backbone.inputCount])
        return Fixture(model: model, base: base.array, data: data, classes: classes)
    }

    private let mlp = Model.mlp(MLPConfiguration(inputCount: 16, hidden: [12, 8], activation: .gelu))
    private let vit = Model.vit(ViTConfiguration(channels: 1, height: 8, width: 8, patch: 4, dim: 8, depth: 1, heads: 2))

    /// Fine-tuning in `mode` with OrthoReg, warm-up, cosine decay, clipping and label smoothing.
    private func settings(_ mode: FineTuneMode, layout: ParameterLayout, microBatches: Int, steps: Int = 15,
                          optimizer: OptimizerSettings = .adamw(learningRate: 5e-3)) -> TrainingSettings {
        let parametrization: Parametrization = switch mode {
        case .full, .attention: .direct
        case .lora: .lora(rank: 2, alpha: 4, targets: mode.loraTargets(layout))
        case .linearized: .linearized
        }
        return TrainingSettings(
            steps: steps, batchSize: 16, microBatches: microBatches, optimizer: optimizer, warmupSteps: 3,
            decay: .cosine, gradientClip: 0.5, labelSmoothing: 0.1, orthoReg: OrthoRegSettings(lambda: 0.5),
            trainedParameters: mode.trainedParameters(layout)!, regularizedParameters: mode.regularizedParameters(layout),
            parametrization: parametrization)
    }

    private struct Outcome: Sendable, Equatable {
        var taskVector: [Float]
        var head: [Float]
        var losses: [Double]
    }

    /// Trains `fixture` with `settings`, as one member of `group` when given.
    private static func train(_ fixture: Fixture, _ settings: TrainingSettings, group: (any MicroBatchGroup)? = nil,
                              checkpointing: Checkpointing? = nil,
                              atStep: @escaping (Int) -> Void = { _ in }) throws -> Outcome {
        let base = FloatBuffer(fixture.base)
        let parameters = FloatBuffer(fixture.base)
        let head = ClassificationHead(classes: fixture.classes, featureCount: fixture.backbone(maxBatch: 1).featureCount)
        for i in 0..<head.parameters.count { head.parameters[i] = Float(i % 5) * 0.1 - 0.2 }
        var losses: [Double] = []
        let trainer = Trainer(backbone: fixture.backbone(maxBatch: settings.batchSize), head: head, settings: settings)
        let vector = try trainer.run(
            parameters: parameters, base: base, data: fixture.data, random: RandomStream(seed: 9, label: "finetune/t"),
            label: "t", reportEvery: 1, checkpointing: checkpointing, group: group,
            progress: { losses.append($0.loss); atStep($0.step) })
        return Outcome(taskVector: vector.array, head: head.parameters.array, losses: losses)
    }

    /// Every member's outcome when a group of `members` in-process ranks trains together.
    private func trainInGroup(_ fixture: Fixture, _ settings: TrainingSettings, members: Int) throws -> [Outcome] {
        try InProcessWorld.run(size: members) { communicator in
            try Self.train(fixture, settings, group: CommunicatorGradientGroup(communicator: communicator))
        }
    }

    func testGroupsOfAnySizeTrainBitwiseAsOneRank() throws {
        let cases: [(String, Fixture, FineTuneMode)] = [
            ("mlp full", fixture(mlp), .full), ("mlp lora", fixture(mlp), .lora),
            ("mlp linearized", fixture(mlp), .linearized), ("vit attention", fixture(vit), .attention),
        ]
        for (name, fixture, mode) in cases {
            let settings = settings(mode, layout: fixture.layout, microBatches: 4)
            let alone = try Self.train(fixture, settings)
            XCTAssertGreaterThan(alone.taskVector.map(abs).max() ?? 0, 0, name)
            XCTAssertEqual(alone.losses.count, settings.steps, name)
            for members in [1, 2, 3, 4, 5] {
                let outcomes = try trainInGroup(fixture, settings, members: members)
                for (member, outcome) in outcomes.enumerated() {
                    XCTAssertEqual(outcome.taskVector, alone.taskVector, "\(name), member \(member) of \(members)")
                    XCTAssertEqual(outcome.losses, alone.losses, "\(name), member \(member) of \(members)")
                }
            }
        }
    }

    func testGroupTrainsTheHeadWithSGDBitwiseAsOneRank() throws {
        // Pre-training: the head trains too, and its gradient goes through the reduction.
        let fixture = fixture(mlp)
        var settings = settings(.full, layout: fixture.layout, microBatches: 8,
                                optimizer: OptimizerSettings(kind: .sgd(momentum: 0.9), learningRate: 0.05, weightDecay: 1e-4))
        settings.trainsHead = true
        settings.orthoReg = OrthoRegSettings(lambda: 0)
        let alone = try Self.train(fixture, settings)
        XCTAssertNotEqual(alone.head, (0..<alone.head.count).map { Float($0 % 5) * 0.1 - 0.2 }, "the head trains")
        for members in [2, 3] {
            for outcome in try trainInGroup(fixture, settings, members: members) {
                XCTAssertEqual(outcome, alone, "\(members) members")
            }
        }
    }

    func testSplitSmallerThanTheBatchIsCutAsEvenlyAsItGoes() throws {
        // 14 samples and batch 16: every batch is the 14 samples, cut 3, 4, 3, 4.
        let fixture = fixture(mlp, samples: 14)
        let settings = settings(.full, layout: fixture.layout, microBatches: 4)
        let alone = try Self.train(fixture, settings)
        for outcome in try trainInGroup(fixture, settings, members: 3) {
            XCTAssertEqual(outcome, alone)
        }
    }

    func testGroupsSplitFromOneWorldTrainTheirOwnTasks() throws {
        // Four ranks, two groups of two, each training its own task at the same time.
        let fixtures = [fixture(mlp, seed: 31), fixture(mlp, seed: 32)]
        let settings = settings(.full, layout: fixtures[0].layout, microBatches: 4)
        let alone = try fixtures.map { try Self.train($0, settings) }
        let outcomes = try InProcessWorld.run(size: 4) { communicator in
            let task = communicator.rank / 2
            guard let members = try communicator.split(color: task, key: communicator.rank) else {
                throw TransportError("rank \(communicator.rank) joined no group")
            }
            return try Self.train(fixtures[task], settings, group: CommunicatorGradientGroup(communicator: members))
        }
        for (rank, outcome) in outcomes.enumerated() {
            XCTAssertEqual(outcome, alone[rank / 2], "rank \(rank)")
        }
        XCTAssertNotEqual(alone[0].taskVector, alone[1].taskVector)
    }

    func testANonFiniteLossStopsEveryMemberAtTheSameStep() throws {
        // One sample is infinite: the step whose batch holds it fails, on whichever member computes it.
        var broken = fixture(mlp)
        var inputs = broken.data.inputs
        inputs[37 * 16 + 5] = .infinity
        broken.data = Dataset(inputs: inputs, labels: broken.data.labels, sampleShape: broken.data.sampleShape)
        let fixture = broken
        let settings = settings(.full, layout: fixture.layout, microBatches: 4)
        @Sendable func message(_ body: () throws -> Outcome) -> String {
            do {
                _ = try body()
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        let alone = message { try Self.train(fixture, settings) }
        XCTAssertTrue(alone.hasPrefix("t: the loss became ") && alone.contains("nan at step "), alone)
        for members in [2, 3] {
            let messages = try InProcessWorld.run(size: members) { communicator in
                message { try Self.train(fixture, settings, group: CommunicatorGradientGroup(communicator: communicator)) }
            }
            XCTAssertEqual(messages, Array(repeating: alone, count: members), "\(members) members")
        }
    }

    func testOnlyMemberZeroCheckpointsAndAnyGroupResumes() throws {
        let fixture = fixture(mlp)
        let settings = settings(.full, layout: fixture.layout, microBatches: 4, steps: 20)
        let straight = try Self.train(fixture, settings)
        let url = directory.appendingPathComponent("t.safetensors")
        let saved = directory.appendingPathComponent("at-step-10.safetensors")

        // Two members, each told its own file: only member 0's is written.
        let memberFiles = [0, 1].map { directory.appendingPathComponent("member\($0).safetensors") }
        let twoMembers = try InProcessWorld.run(size: 2) { communicator in
            let file = memberFiles[communicator.rank]
            return try Self.train(fixture, settings, group: CommunicatorGradientGroup(communicator: communicator),
                                  checkpointing: Checkpointing(url: file, every: 5, fingerprint: "job/t"),
                                  atStep: { step in
                                      if step == 10, communicator.rank == 0 {
                                          try? FileManager.default.copyItem(at: file, to: saved)
                                      }
                                  })
        }
        XCTAssertEqual(twoMembers, [straight, straight])
        XCTAssertTrue(FileManager.default.fileExists(atPath: memberFiles[0].path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: memberFiles[1].path), "member 1 wrote a checkpoint")

        // Three members resume from the step-10 checkpoint of the two, one rank from it too.
        for members in [3, 1] {
            try? FileManager.default.removeItem(at: url)
            try FileManager.default.copyItem(at: saved, to: url)
            let resumed = try InProcessWorld.run(size: members) { communicator in
                try Self.train(fixture, settings, group: CommunicatorGradientGroup(communicator: communicator),
                               checkpointing: Checkpointing(url: url, every: 5, fingerprint: "job/t"))
            }
            for outcome in resumed {
                XCTAssertEqual(outcome.taskVector, straight.taskVector, "\(members) members resumed")
                XCTAssertEqual(outcome.losses, Array(straight.losses[10...]), "\(members) members resumed")
            }
        }
    }
}
