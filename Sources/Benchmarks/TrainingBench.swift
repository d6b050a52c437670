// TrainingBench: `orthofuse bench train`: the real Trainer's step time on random data (MLP or ViT,
// AdamW, ± OrthoReg), and sgemm's speed; measured and printed, never asserted.
import Core
import Foundation

public enum TrainingBench {
    public struct Result: Sendable, Encodable {
        public var arch: String
        public var shape: String
        public var batch: Int
        public var microBatches: Int
        /// Samples per cache block of the backbone (`Backbone.cacheBlock`).
        public var cacheBlock: Int
        public var orthoreg: Double
        public var threads: Int
        public var blasCore: String
        public var msPerStep: Double
        public var samplesPerSecond: Double
        /// The process's peak resident memory after the runs (weights, gradients, moments, θ0,
        /// activations, and the bench's batch·8 random samples), in MB.
        public var peakResidentMegabytes: Double

        enum CodingKeys: String, CodingKey {
            case arch, shape, batch, orthoreg, threads
            case microBatches = "micro_batches"
            case cacheBlock = "cache_block"
            case blasCore = "blas_core"
            case msPerStep = "ms_per_step"
            case samplesPerSecond = "samples_per_second"
            case peakResidentMegabytes = "peak_rss_mb"
        }

        /// One JSON line, the format scripts/bench.sh reads.
        public var jsonLine: String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
        }
    }

    /// `backbone`'s step measured (`stepMilliseconds`) and described; `shape` names the model.
    public static func measure(backbone: any Backbone, arch: String, shape: String, classes: Int, batch: Int,
                               steps: Int, orthoRegLambda: Double, microBatches: Int, threads: Int) throws -> Result {
        let milliseconds = try stepMilliseconds(backbone: backbone, classes: classes, batch: batch, steps: steps,
                                                orthoRegLambda: orthoRegLambda, microBatches: microBatches)
        return Result(arch: arch, shape: shape, batch: batch, microBatches: microBatches,
                      cacheBlock: backbone.cacheBlock, orthoreg: orthoRegLambda,
                      threads: threads, blasCore: BLASRuntime.coreName, msPerStep: milliseconds,
                      samplesPerSecond: Double(batch) * 1000 / milliseconds,
                      peakResidentMegabytes: Double(ProcessMemory.peakResidentBytes()) / 1e6)
    }

    /// The median over 3 timed runs (after a warm-up run) of time / steps of `backbone`'s full
    /// fine-tuning step with a linear head.
    public static func stepMilliseconds(backbone: any Backbone, classes: Int, batch: Int, steps: Int,
                                        orthoRegLambda: Double, microBatches: Int = 1) throws -> Double {
        var random = RandomStream(seed: 1)
        let count = batch * 8
        let input = backbone.inputCount
        let data = Dataset(inputs: (0..<(count * input)).map { _ in Float(random.nextDouble()) },
                           labels: (0..<count).map { _ in Int32(random.nextInt(below: classes)) },
                           sampleShape: [input])
        let base = FloatBuffer(count: backbone.layout.totalCount)
        backbone.initialize(base, random: &random)
        let head = ClassificationHead(classes: classes, featureCount: backbone.featureCount)
        let settings = TrainingSettings(
            steps: steps, batchSize: batch, microBatches: microBatches, optimizer: .adamw(learningRate: 1e-3),
            orthoReg: OrthoRegSettings(lambda: Float(orthoRegLambda)),
            trainedParameters: Array(backbone.layout.specs.indices),
            regularizedParameters: FineTuneMode.full.regularizedParameters(backbone.layout))
        let trainer = Trainer(backbone: backbone, head: head, settings: settings)
        var times: [Double] = []
        for run in 0..<4 {
            let parameters = FloatBuffer(count: base.count)
            parameters.copy(from: base)
            let start = Date()
            try trainer.run(parameters: parameters, base: base, data: data, random: RandomStream(seed: 2), label: "bench",
                            reportEvery: steps)
            if run > 0 { times.append(Date().timeIntervalSince(start) * 1000 / Double(steps)) }
        }
        return times.sorted()[times.count / 2]
    }

    /// sgemm of two n×n matrices, best of 5, in GFLOP/s.
    public static func sgemmGigaflops(_ n: Int) -> Double {
        let a = FloatBuffer([Float](repeating: 0.5, count: n * n))
        let b = FloatBuffer([Float](repeating: 0.25, count: n * n))
        let c = FloatBuffer(count: n * n)
        var best = Double.infinity
        for _ in 0..<5 {
            let start = Date()
            sgemm(transposeA: false, transposeB: false, m: n, n: n, k: n, alpha: 1, a: a.pointer, lda: n,
                  b: b.pointer, ldb: n, beta: 0, c: c.pointer, ldc: n)
            best = min(best, Date().timeIntervalSince(start))
        }
        return 2 * Double(n * n * n) / best / 1e9
    }
}
