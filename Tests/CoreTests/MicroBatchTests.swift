// MicroBatchTests: one micro-batch is bitwise the whole-batch step, several match it up to rounding;
// the job's `finetune.micro_batches` key.
import Foundation
import XCTest
@testable import Core
@testable import JobSchema

final class MicroBatchTests: XCTestCase {
    private let configuration = MLPConfiguration(inputCount: 6, hidden: [7, 5], activation: .gelu)
    private let classes = 3

    private func data(count: Int = 60) -> Dataset {
        var random = RandomStream(seed: 21)
        return Dataset(inputs: (0..<(count * configuration.inputCount)).map { _ in Float(random.nextGaussian()) },
                       labels: (0..<count).map { _ in Int32(random.nextInt(below: classes)) },
                       sampleShape: [configuration.inputCount])
    }

    private func base() -> FloatBuffer {
        let base = FloatBuffer(count: configuration.layout.totalCount)
        var random = RandomStream(seed: 5)
        MLPBackbone(configuration, maxBatch: 1).initialize(base, random: &random)
        return base
    }

    private func head() -> ClassificationHead {
        let head = ClassificationHead(classes: classes, featureCount: configuration.hidden.last!)
        for i in 0..<head.parameters.count { head.parameters[i] = Float(i % 7) * 0.07 - 0.2 }
        return head
    }

    /// The settings every mode is checked with: OrthoReg, clipping and label smoothing on.
    private func settings(_ parametrization: Parametrization, microBatches: Int, steps: Int = 12,
                          optimizer: OptimizerSettings = .adamw(learningRate: 1e-2),
                          trainsHead: Bool = false) -> TrainingSettings {
        let layout = configuration.layout
        let mode: FineTuneMode = switch parametrization {
        case .direct: .full
        case .lora: .lora
        case .linearized: .linearized
        }
        return TrainingSettings(
            steps: steps, batchSize: 16, microBatches: microBatches, optimizer: optimizer, warmupSteps: 2,
            decay: .cosine, gradientClip: 0.5, labelSmoothing: 0.1, orthoReg: OrthoRegSettings(lambda: 0.5),
            trainedParameters: mode.trainedParameters(layout)!, regularizedParameters: mode.regularizedParameters(layout),
            trainsHead: trainsHead, parametrization: parametrization)
    }

    private var parametrizations: [(String, Parametrization)] {
        [("full", .direct), ("lora", .lora(rank: 2, alpha: 4, targets: FineTuneMode.lora.loraTargets(configuration.layout))),
         ("linearized", .linearized)]
    }

    private struct Outcome {
        var taskVector: [Float]
        var head: [Float]
        var losses: [Double]
    }

    private func train(_ settings: TrainingSettings) throws -> Outcome {
        let base = base()
        let parameters = FloatBuffer(count: base.count)
        parameters.copy(from: base)
        let head = head()
        var losses: [Double] = []
        let vector = try Trainer(backbone: MLPBackbone(configuration, maxBatch: 16), head: head, settings: settings).run(
            parameters: parameters, base: base, data: data(), random: RandomStream(seed: 9), label: "test",
            reportEvery: 1, progress: { losses.append($0.loss) })
        return Outcome(taskVector: vector.array, head: head.parameters.array, losses: losses)
    }

    /// The training loop as it was before micro-batches: the whole batch in one forward and
    /// backward. One micro-batch must reproduce it bit for bit.
    private func trainWholeBatches(_ settings: TrainingSettings) -> Outcome {
        let backbone = MLPBackbone(configuration, maxBatch: 16)
        let layout = backbone.layout
        let base = base()
        let parameters = FloatBuffer(count: base.count)
        parameters.copy(from: base)
        let head = head()
        let random = RandomStream(seed: 9)
        let sampler = MinibatchSampler(data: data(), batchSize: settings.batchSize, random: random)
        let batch = sampler.batchSize
        let features = backbone.featureCount
        var adapters: LoRAAdapters?
        if case let .lora(rank, alpha, targets) = settings.parametrization {
            var stream = random
            adapters = LoRAAdapters(layout: layout, targets: targets, rank: rank, alpha: alpha,
                                    random: RandomStream(seed: stream.next(), label: "lora-init"))
        }
        let linearized = settings.parametrization == .linearized
        let tangent = FloatBuffer(count: layout.totalCount)
        let featureTangent = FloatBuffer(count: batch * features)
        let gradient = FloatBuffer(count: layout.totalCount)
        let headGradient = FloatBuffer(count: head.layout.totalCount)
        let logits = FloatBuffer(count: batch * classes)
        let logitGradient = FloatBuffer(count: batch * classes)
        let featureGradient = FloatBuffer(count: batch * features)
        let trainedRanges = settings.trainedParameters.sorted().map { layout.range(at: $0) }
        let optimizer = Optimizer(settings: settings.optimizer, parameterCount: adapters?.values.count ?? layout.totalCount)
        let optimizerRanges = adapters.map { [0..<$0.values.count] } ?? trainedRanges
        let headOptimizer = Optimizer(settings: settings.optimizer, parameterCount: headGradient.count)
        let schedule = LearningRateSchedule(baseRate: settings.optimizer.learningRate, warmupSteps: settings.warmupSteps,
                                            totalSteps: settings.steps, decay: settings.decay)
        let regularizer = settings.orthoReg.isActive && adapters == nil
            ? OrthoRegularizer(settings: settings.orthoReg, layout: layout, parameterIndices: settings.regularizedParameters)
            : nil
        var losses: [Double] = []
        for step in 0..<settings.steps {
            sampler.next()
            let rate = schedule.rate(at: step)
            adapters?.materialize(parameters: parameters, base: base)
            let output: UnsafePointer<Float>
            if linearized {
                ElementWise.subtract(tangent.pointer, parameters.pointer, base.pointer, count: layout.totalCount)
                let primal = backbone.forwardWithTangent(parameters: base.pointer, tangent: tangent.pointer,
                                                         inputs: sampler.inputs.pointer, batch: batch,
                                                         featureTangent: featureTangent.pointer)
                ElementWise.add(featureTangent.pointer, primal, count: batch * features)
                output = UnsafePointer(featureTangent.pointer)
            } else {
                output = backbone.forward(parameters: parameters.pointer, inputs: sampler.inputs.pointer, batch: batch)
            }
            head.forward(logits: logits.pointer, features: output, batch: batch)
            losses.append(sampler.labels.withUnsafeBufferPointer {
                CrossEntropy.forwardBackward(logitGradient: logitGradient.pointer, logits: logits.pointer,
                                             labels: $0.baseAddress!, batch: batch, classes: classes,
                                             labelSmoothing: settings.labelSmoothing)
            })
            featureGradient.zero()
            headGradient.zero()
            head.backward(featureGradient: featureGradient.pointer,
                          parameterGradient: settings.trainsHead ? headGradient.pointer : nil,
                          logitGradient: logitGradient.pointer, features: output, batch: batch)
            gradient.zero()
            backbone.backward(featureGradient: featureGradient.pointer,
                              parameters: linearized ? base.pointer : parameters.pointer,
                              inputs: sampler.inputs.pointer, batch: batch, parameterGradient: gradient.pointer,
                              inputGradient: nil)
            if let adapters {
                _ = adapters.backpropagate(backboneGradient: gradient, orthoReg: settings.orthoReg)
                if settings.gradientClip > 0 {
                    GradientClipping.clip(adapters.gradient.pointer, ranges: optimizerRanges, maxNorm: settings.gradientClip)
                }
                optimizer.step(parameters: adapters.values.pointer, gradient: adapters.gradient.pointer, rate: rate,
                               ranges: optimizerRanges)
            } else {
                regularizer?.apply(parameters: parameters.pointer, base: base.pointer, gradient: gradient.pointer)
                if settings.gradientClip > 0 {
                    GradientClipping.clip(gradient.pointer, ranges: trainedRanges, maxNorm: settings.gradientClip)
                }
                optimizer.step(parameters: parameters.pointer, gradient: gradient.pointer, rate: rate, ranges: trainedRanges)
            }
            if settings.trainsHead {
                headOptimizer.step(parameters: head.parameters.pointer, gradient: headGradient.pointer, rate: rate,
                                   ranges: [0..<headGradient.count])
            }
        }
        let vector: FloatBuffer
        if let adapters {
            vector = adapters.taskVector(count: layout.totalCount)
        } else {
            vector = TaskVector.difference(finetuned: parameters, base: base)
        }
        return Outcome(taskVector: vector.array, head: head.parameters.array, losses: losses)
    }

    func testOneMicroBatchIsTheWholeBatchStepBitwise() throws {
        for (name, parametrization) in parametrizations {
            let settings = settings(parametrization, microBatches: 1)
            let trained = try train(settings)
            let reference = trainWholeBatches(settings)
            XCTAssertEqual(trained.taskVector, reference.taskVector, name)
            XCTAssertEqual(trained.losses, reference.losses, name)
            XCTAssertGreaterThan(trained.taskVector.map(abs).max() ?? 0, 0, name)
        }
        // Pre-training also trains the head.
        let pretraining = settings(.direct, microBatches: 1, trainsHead: true)
        let trained = try train(pretraining)
        let reference = trainWholeBatches(pretraining)
        XCTAssertEqual(trained.taskVector, reference.taskVector, "pre-training")
        XCTAssertEqual(trained.head, reference.head, "pre-training head")
        XCTAssertNotEqual(trained.head, head().parameters.array)
    }

    /// ‖a − b‖ / ‖b‖.
    private func relativeDistance(_ a: [Float], _ b: [Float]) -> Double {
        var difference = 0.0
        var norm = 0.0
        for (x, y) in zip(a, b) {
            difference += Double(x - y) * Double(x - y)
            norm += Double(y) * Double(y)
        }
        return (difference / norm).squareRoot()
    }

    func testMicroBatchesGiveTheWholeBatchGradientUpToRounding() throws {
        // One plain SGD step with rate 1 moves θ by −g: the task vector is the gradient.
        let sgd = OptimizerSettings(kind: .sgd(momentum: 0), learningRate: 1, weightDecay: 0)
        for smoothing: Float in [0, 0.1] {
            for trainsHead in [false, true] {
                func step(_ microBatches: Int) throws -> Outcome {
                    var settings = settings(.direct, microBatches: microBatches, steps: 1, optimizer: sgd,
                                            trainsHead: trainsHead)
                    settings.warmupSteps = 0
                    settings.gradientClip = 0
                    settings.orthoReg = OrthoRegSettings(lambda: 0)
                    settings.labelSmoothing = smoothing
                    return try train(settings)
                }
                let whole = try step(1)
                let label = "smoothing \(smoothing), head \(trainsHead)"
                for microBatches in [2, 4, 8] {
                    let parts = try step(microBatches)
                    XCTAssertEqual(parts.losses[0], whole.losses[0], accuracy: 1e-5 * whole.losses[0], label)
                    XCTAssertLessThan(relativeDistance(parts.taskVector, whole.taskVector), 1e-5, label)
                    if trainsHead {
                        let start = head().parameters.array
                        XCTAssertLessThan(relativeDistance(zip(parts.head, start).map(-), zip(whole.head, start).map(-)), 1e-5, label)
                    }
                }
            }
        }
    }

    func testMicroBatchesMustDivideTheBatch() throws {
        let job = """
            name: q
            model: {arch: mlp, input: [16], hidden: [8]}
            tasks:
              - {name: a, classes: 4, train: a.npz, test: b.npz}
            finetune: {steps: 10, batch_size: 128, micro_batches: 3}
            output: out
            """
        let directory = URL(fileURLWithPath: "/srv/jobs", isDirectory: true)
        XCTAssertThrowsError(try JobConfig.parse(job, origin: "job.yaml", baseDirectory: directory)) { error in
            XCTAssertEqual((error as? OrthofuseError)?.message,
                           "job.yaml: finetune.micro_batches: must divide finetune.batch_size (128) into equal micro-batches")
        }
        XCTAssertThrowsError(try JobConfig.parse(job.replacingOccurrences(of: "micro_batches: 3", with: "micro_batches: 0"),
                                                 origin: "job.yaml", baseDirectory: directory)) { error in
            XCTAssertEqual((error as? OrthofuseError)?.message, "job.yaml: finetune.micro_batches: must be > 0")
        }
        let four = try JobConfig.parse(job.replacingOccurrences(of: "micro_batches: 3", with: "micro_batches: 4"),
                                       origin: "job.yaml", baseDirectory: directory)
        XCTAssertEqual(four.finetune.microBatches, 4)
        XCTAssertEqual(try JobConfig.parse(four.canonicalYAML, origin: "copy.yaml", baseDirectory: directory), four)
        // The default for an MLP: 1 (its step is slower cut up); written out in the canonical job.
        let byDefault = try JobConfig.parse(job.replacingOccurrences(of: ", micro_batches: 3", with: ""),
                                            origin: "job.yaml", baseDirectory: directory)
        XCTAssertEqual(byDefault.finetune.microBatches, 1)
        XCTAssertTrue(byDefault.canonicalYAML.contains("micro_batches: 1\n"), byDefault.canonicalYAML)
        let one = try JobConfig.parse(job.replacingOccurrences(of: "micro_batches: 3", with: "micro_batches: 1"),
                                      origin: "job.yaml", baseDirectory: directory)
        XCTAssertEqual(byDefault.configHash, one.configHash, "the default is the same job as saying 1")
        XCTAssertNotEqual(one.configHash, four.configHash)
    }

    func testTransformerJobsCutTheBatchInFourByDefault() throws {
        func parse(batch: Int, microBatches: String = "") throws -> JobConfig {
            try JobConfig.parse("""
                name: q
                model: {arch: vit, input: [1, 8, 8], patch: 4, width: 8, depth: 1, heads: 2}
                tasks:
                  - {name: a, classes: 4, train: a.npz, test: b.npz}
                finetune: {steps: 10, batch_size: \(batch)\(microBatches)}
                output: out
                """, origin: "job.yaml", baseDirectory: URL(fileURLWithPath: "/srv/jobs", isDirectory: true))
        }
        // 4 when micro-batches keep at least 8 rows, else 1; a value the job gives is kept.
        XCTAssertEqual(try parse(batch: 128).finetune.microBatches, 4)
        XCTAssertEqual(try parse(batch: 128).configHash, try parse(batch: 128, microBatches: ", micro_batches: 4").configHash)
        XCTAssertEqual(try parse(batch: 24).finetune.microBatches, 1, "24 rows would make micro-batches of 6")
        XCTAssertEqual(try parse(batch: 128, microBatches: ", micro_batches: 2").finetune.microBatches, 2)
    }
}
