// LineEvaluationTests: the α grid evaluated with the MLP's first layer shared gives each α the
// accuracy of the model θ0 + α·Δ evaluated on its own; other backbones take one pass per α.
import XCTest
@testable import Core

final class LineEvaluationTests: XCTestCase {
    private let configuration = MLPConfiguration(inputCount: 9, hidden: [12, 6], activation: .gelu)
    private let classes = 4
    private let alphas = stride(from: 0.0, through: 2.0, by: 0.25).map { $0 }

    private func gaussians(_ count: Int, seed: UInt64, scale: Double = 1) -> [Float] {
        var random = RandomStream(seed: seed)
        return (0..<count).map { _ in Float(scale * random.nextGaussian()) }
    }

    private func data(count: Int) -> Dataset {
        var random = RandomStream(seed: 3)
        return Dataset(inputs: gaussians(count * configuration.inputCount, seed: 2),
                       labels: (0..<count).map { _ in Int32(random.nextInt(below: classes)) },
                       sampleShape: [configuration.inputCount])
    }

    private func buffer(_ values: [Float]) -> FloatBuffer {
        let buffer = FloatBuffer(count: values.count)
        for (i, value) in values.enumerated() { buffer[i] = value }
        return buffer
    }

    private func head() -> ClassificationHead {
        let head = ClassificationHead(classes: classes, featureCount: configuration.hidden.last!)
        let values = gaussians(head.parameters.count, seed: 4)
        for i in 0..<head.parameters.count { head.parameters[i] = values[i] }
        return head
    }

    /// An MLP, θ0, a direction Δ and a head: the line θ0 + α·Δ the tests evaluate.
    private struct Line {
        let backbone: MLPBackbone
        let base: FloatBuffer
        let direction: FloatBuffer
        let head: ClassificationHead

        /// `accuraciesAlongLine` on this line.
        func grid(_ alphas: [Double], _ data: Dataset, linearizedAround: FloatBuffer? = nil, atBase: Double? = nil) -> [Double] {
            Evaluation.accuraciesAlongLine(backbone: backbone, base: base, direction: direction, alphas: alphas, head: head,
                                           data: data, linearizedAround: linearizedAround, atBase: atBase)
        }

        /// Per α: θ(α) built, then evaluated as any model is.
        func onePassPerAlpha(_ alphas: [Double], _ data: Dataset, linearizedAround: FloatBuffer? = nil) -> [Double] {
            alphas.map { alpha in
                let model = FloatBuffer(count: base.count)
                TaskArithmetic.merge(base: base, taskVectorSum: direction, alpha: Float(alpha), into: model)
                return Evaluation.accuracy(backbone: backbone, parameters: model, head: head, data: data,
                                           linearizedAround: linearizedAround)
            }
        }
    }

    private func line(maxBatch: Int, seed: UInt64) -> Line {
        let count = configuration.layout.totalCount
        return Line(backbone: MLPBackbone(configuration, maxBatch: maxBatch),
                    base: buffer(gaussians(count, seed: seed, scale: 0.5)),
                    direction: buffer(gaussians(count, seed: seed + 1, scale: 0.5)), head: head())
    }

    func testMLPGridMatchesOneEvaluationPerAlpha() {
        // Rows not a multiple of the workspace, so the last chunk is partial.
        let line = line(maxBatch: 32, seed: 5)
        let samples = data(count: 301)
        let separate = line.onePassPerAlpha(alphas, samples)
        XCTAssertEqual(line.grid(alphas, samples), separate)
        XCTAssertGreaterThan(Set(separate).count, 3, "the direction must move the predictions for the check to bite")
    }

    func testAlphaZeroTakesTheBasesKnownAccuracy() {
        let line = line(maxBatch: 32, seed: 10)
        let samples = data(count: 90)
        let measured = line.grid(alphas, samples)
        XCTAssertEqual(measured[0], Evaluation.accuracy(backbone: line.backbone, parameters: line.base, head: line.head,
                                                        data: samples),
                       "θ(0) is θ0 itself")
        // A known value stands in for α = 0 only (a sentinel here, to see that it is used).
        XCTAssertEqual(line.grid(alphas, samples, atBase: 0.125), [0.125] + measured.dropFirst())
        XCTAssertEqual(line.grid([0.5, 1], samples, atBase: 0.125), [measured[2], measured[4]],
                       "a grid without 0 is all measured (α 0.5 and 1)")
    }

    func testMLPForwardFromFirstPreActivationIsTheForwardPass() {
        let backbone = MLPBackbone(configuration, maxBatch: 8)
        let parameters = buffer(gaussians(configuration.layout.totalCount, seed: 7))
        let samples = data(count: 8)
        let (weight, bias, width) = backbone.firstLayer
        XCTAssertEqual(width, 12)
        let preActivation = FloatBuffer(count: 8 * width)
        samples.inputs.withUnsafeBufferPointer { x in
            Linear.forward(out: preActivation.pointer, inp: x.baseAddress!, weight: parameters.pointer + weight,
                           bias: parameters.pointer + bias, rows: 8, inputs: configuration.inputCount, outputs: width)
        }
        let fromPreActivation = Array(UnsafeBufferPointer(
            start: backbone.forward(parameters: parameters.pointer, firstPreActivation: preActivation.pointer, batch: 8),
            count: 8 * backbone.featureCount))
        let direct = samples.inputs.withUnsafeBufferPointer { x in
            Array(UnsafeBufferPointer(start: backbone.forward(parameters: parameters.pointer, inputs: x.baseAddress!, batch: 8),
                                      count: 8 * backbone.featureCount))
        }
        XCTAssertEqual(fromPreActivation, direct)
    }

    func testLinearizedAndEmptyFallBackToOnePassPerAlpha() {
        let line = line(maxBatch: 16, seed: 8)
        let samples = data(count: 50)
        XCTAssertEqual(line.grid(alphas, samples, linearizedAround: line.base),
                       line.onePassPerAlpha(alphas, samples, linearizedAround: line.base))
        let empty = Dataset(inputs: [], labels: [], sampleShape: [configuration.inputCount])
        XCTAssertEqual(line.grid(alphas, empty), alphas.map { _ in 0 })
    }
}
