// CacheBlockTests: a ViT step and an evaluation run in cache blocks of a few samples; the blocks'
// gradients add up to the whole batch's (up to rounding), in every parametrization and with
// micro-batches, and the evaluation's features do not depend on the block.
import Foundation
import XCTest
@testable import Core

final class CacheBlockTests: XCTestCase {
    // 8×8 images, patch 4: T = 5 tokens of width 8, so the model's own block is 4 samples.
    private let configuration = ViTConfiguration(channels: 1, height: 8, width: 8, patch: 4, dim: 8, depth: 2, heads: 2)
    private let classes = 3
    private let batch = 12

    func testTheModelsOwnBlockReachesTwiceTheWidthInTokenRows() {
        XCTAssertEqual(configuration.cacheBlockSamples, 4, "4 samples of 5 tokens: 20 rows ≥ 2·8")
        XCTAssertEqual(ViTConfiguration.cacheBlockSamples(tokens: 17, width: 64), 8, "the 28×28 demo ViT")
        XCTAssertEqual(ViTConfiguration.cacheBlockSamples(tokens: 50, width: 768), 31, "CLIP ViT-B/32")
        XCTAssertEqual(ViTConfiguration.cacheBlockSamples(tokens: 197, width: 768), 8, "CLIP ViT-B/16")
        XCTAssertEqual(ViTConfiguration.cacheBlockSamples(tokens: 4096, width: 8), 1, "never fewer than one sample")
        XCTAssertEqual(ViTBackbone(configuration, maxBatch: 3).cacheBlock, 3, "never more than the workspace")
        XCTAssertEqual(ViTBackbone(configuration, maxBatch: 12, cacheBlock: 12).cacheBlock, 12)
        XCTAssertEqual(MLPBackbone(MLPConfiguration(inputCount: 4, hidden: [3], activation: .relu), maxBatch: 9).cacheBlock, 9,
                       "an MLP takes its whole workspace")
    }

    func testMicroBatchesAreCutIntoAsManyBlocksAsWholeBlocksFit() {
        let whole = MicroBatchPlan(batch: 128, microBatches: 1)
        XCTAssertEqual(whole.cacheBlocks(of: 0, samples: 8), (0..<16).map { ($0 * 8)..<($0 * 8 + 8) })
        let four = MicroBatchPlan(batch: 128, microBatches: 4)
        XCTAssertEqual(four.cacheBlocks(of: 1, samples: 8), [32..<40, 40..<48, 48..<56, 56..<64])
        XCTAssertEqual(four.cacheBlocks(of: 3, samples: 31), [96..<128], "32 rows hold one whole block of 31")
        XCTAssertEqual(MicroBatchPlan(batch: 20, microBatches: 1).cacheBlocks(of: 0, samples: 8), [0..<10, 10..<20])
        XCTAssertEqual(MicroBatchPlan(batch: 5, microBatches: 1).cacheBlocks(of: 0, samples: 8), [0..<5])
        XCTAssertEqual(MicroBatchPlan.split(3..<10, into: 3), [3..<5, 5..<7, 7..<10])
    }

    private func data(count: Int) -> Dataset {
        var random = RandomStream(seed: 4)
        return Dataset(inputs: (0..<(count * configuration.inputCount)).map { _ in Float(random.nextGaussian()) },
                       labels: (0..<count).map { _ in Int32(random.nextInt(below: classes)) },
                       sampleShape: [1, 8, 8])
    }

    private func base() -> FloatBuffer {
        let base = FloatBuffer(count: configuration.layout.totalCount)
        var random = RandomStream(seed: 6)
        ViTBackbone(configuration, maxBatch: 1).initialize(base, random: &random)
        return base
    }

    private func head() -> ClassificationHead {
        let head = ClassificationHead(classes: classes, featureCount: configuration.featureCount)
        for i in 0..<head.parameters.count { head.parameters[i] = Float(i % 5) * 0.1 - 0.2 }
        return head
    }

    /// τ after `steps` steps of plain SGD (lr 1, no clipping): one step's τ is minus the gradient.
    private func taskVector(cacheBlock: Int, microBatches: Int, mode: FineTuneMode, steps: Int = 1,
                            trainsHead: Bool = false) throws -> (tau: [Float], head: [Float]) {
        let layout = configuration.layout
        let parametrization: Parametrization = switch mode {
        case .lora: .lora(rank: 2, alpha: 4, targets: mode.loraTargets(layout))
        case .linearized: .linearized
        default: .direct
        }
        let settings = TrainingSettings(
            steps: steps, batchSize: batch, microBatches: microBatches,
            optimizer: OptimizerSettings(kind: .sgd(momentum: 0), learningRate: 1, weightDecay: 0),
            labelSmoothing: 0.1, trainedParameters: mode.trainedParameters(layout)!,
            regularizedParameters: mode.regularizedParameters(layout), trainsHead: trainsHead,
            parametrization: parametrization)
        let base = base()
        let parameters = FloatBuffer(count: base.count)
        parameters.copy(from: base)
        let head = head()
        let backbone = ViTBackbone(configuration, maxBatch: batch, cacheBlock: cacheBlock)
        let tau = try Trainer(backbone: backbone, head: head, settings: settings).run(
            parameters: parameters, base: base, data: data(count: 40), random: RandomStream(seed: 2), label: "blocks",
            reportEvery: 1, progress: { _ in })
        return (tau.array, head.parameters.array)
    }

    private func assertClose(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        let scale = max(b.map(abs).max() ?? 0, 1e-12)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        XCTAssertGreaterThan(scale, 1e-6, "\(what): the gradient must not vanish", file: file, line: line)
        XCTAssertLessThan(worst / scale, 2e-5, "\(what): blocks differ from the whole batch beyond rounding",
                          file: file, line: line)
    }

    func testBlocksAddUpToTheWholeBatchsGradientInEveryMode() throws {
        for mode in [FineTuneMode.full, .attention, .lora, .linearized] {
            let whole = try taskVector(cacheBlock: batch, microBatches: 1, mode: mode)
            for block in [1, 4, 5] {
                assertClose(try taskVector(cacheBlock: block, microBatches: 1, mode: mode).tau, whole.tau,
                            "\(mode) in blocks of \(block)")
            }
            assertClose(try taskVector(cacheBlock: 2, microBatches: 3, mode: mode).tau, whole.tau,
                        "\(mode), 3 micro-batches in blocks of 2")
        }
    }

    func testTheTrainedHeadsGradientAddsUpAcrossBlocksToo() throws {
        let whole = try taskVector(cacheBlock: batch, microBatches: 1, mode: .full, trainsHead: true)
        let blocked = try taskVector(cacheBlock: 3, microBatches: 1, mode: .full, trainsHead: true)
        assertClose(blocked.head.enumerated().map { $1 - head().parameters[$0] },
                    whole.head.enumerated().map { $1 - head().parameters[$0] }, "the head's step")
        assertClose(blocked.tau, whole.tau, "the backbone's step")
    }

    func testEvaluationFeaturesDoNotDependOnTheBlock() {
        let data = data(count: 23)
        let base = base()
        let reference = Evaluation.features(backbone: ViTBackbone(configuration, maxBatch: 23, cacheBlock: 23),
                                            parameters: base, data: data)
        for block in [1, 4, 7] {
            let features = Evaluation.features(backbone: ViTBackbone(configuration, maxBatch: 23, cacheBlock: block),
                                               parameters: base, data: data)
            XCTAssertEqual(features.count, reference.count)
            let worst = zip(features, reference).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThan(worst, 1e-5, "features in chunks of \(block)")
        }
    }
}
