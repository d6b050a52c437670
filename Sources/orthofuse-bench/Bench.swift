// Bench: measures orthofuse's training step (MLP, AdamW, ± OrthoReg) and sgemm; prints, never asserts.
//
// Usage: orthofuse-bench [--steps N] [--batch B] [--hidden 256,256] [--input 784] [--classes 10]
//        orthofuse-bench merge ...   (sharded vs all-gather merging under mpirun: MergeBench.swift)
// scripts/bench.sh runs this beside the PyTorch twin (scripts/bench_torch.py) and prints the ratio;
// scripts/bench_merge.sh runs the merge grid.
import Core
import Foundation

@main
struct Bench {
    static func main() {
        BLASEnvironment.ensureCoreType()
        if CommandLine.arguments.dropFirst().first == "merge" {
            do {
                try MergeBench.main(Array(CommandLine.arguments.dropFirst(2)))
            } catch {
                FileHandle.standardError.write(Data("orthofuse-bench merge: \(error)\n".utf8))
                exit(1)
            }
            return
        }
        var steps = 300
        var batch = 128
        var hidden = [256, 256]
        var input = 784
        var classes = 10
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            guard let value = arguments.next() else { break }
            switch argument {
            case "--steps": steps = Int(value) ?? steps
            case "--batch": batch = Int(value) ?? batch
            case "--hidden": hidden = value.split(separator: ",").compactMap { Int($0) }
            case "--input": input = Int(value) ?? input
            case "--classes": classes = Int(value) ?? classes
            default: break
            }
        }
        BLASRuntime.setThreads(1)
        print("OpenBLAS core: \(BLASRuntime.coreName), 1 thread")
        print(String(format: "sgemm 1024³: %.1f GFLOP/s", sgemmGigaflops(1024)))
        let mlp = MLPConfiguration(inputCount: input, hidden: hidden, activation: .relu)
        for lambda: Float in [0, 1] {
            let milliseconds = trainingStepMilliseconds(backbone: MLPBackbone(mlp, maxBatch: batch), classes: classes,
                                                        batch: batch, steps: steps, orthoRegLambda: lambda)
            print(String(format: "orthofuse mlp %d-%@-%d batch %d adamw orthoreg=%g: %.3f ms/step",
                         input, hidden.map(String.init).joined(separator: "-"), classes, batch, lambda, milliseconds))
        }
        // The cost of cutting the batch into 4 micro-batches (the default when it allows), one rank.
        if batch % 4 == 0 {
            let whole = trainingStepMilliseconds(backbone: MLPBackbone(mlp, maxBatch: batch), classes: classes,
                                                 batch: batch, steps: steps, orthoRegLambda: 1)
            let cut = trainingStepMilliseconds(backbone: MLPBackbone(mlp, maxBatch: batch), classes: classes,
                                               batch: batch, steps: steps, orthoRegLambda: 1, microBatches: 4)
            print(String(format: "orthofuse mlp micro_batches 4 vs 1 (orthoreg=1): %.3f vs %.3f ms/step, ratio %.2f",
                         cut, whole, cut / whole))
        }
        // The demo's ViT: 28×28, patch 7, width 64, depth 4, 4 heads.
        let vit = ViTConfiguration(channels: 1, height: 28, width: 28, patch: 7, dim: 64, depth: 4, heads: 4)
        for lambda: Float in [0, 1] {
            let milliseconds = trainingStepMilliseconds(backbone: ViTBackbone(vit, maxBatch: batch), classes: classes,
                                                        batch: batch, steps: max(steps / 10, 10), orthoRegLambda: lambda)
            print(String(format: "orthofuse vit 28x28 p7 d64 depth4 batch %d adamw orthoreg=%g: %.3f ms/step",
                         batch, lambda, milliseconds))
        }
    }

    static func sgemmGigaflops(_ n: Int) -> Double {
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

    /// The real Trainer on random data: median over 3 runs of (time / steps), after a warm-up run.
    static func trainingStepMilliseconds(backbone: any Backbone, classes: Int, batch: Int, steps: Int,
                                         orthoRegLambda: Float, microBatches: Int = 1) -> Double {
        var random = RandomStream(seed: 1)
        let count = batch * 8
        let input = backbone.inputCount
        let data = Dataset(inputs: (0..<(count * input)).map { _ in Float(random.nextDouble()) },
                           labels: (0..<count).map { _ in Int32(random.nextInt(below: classes)) }, sampleShape: [input])
        let base = FloatBuffer(count: backbone.layout.totalCount)
        backbone.initialize(base, random: &random)
        let head = ClassificationHead(classes: classes, featureCount: backbone.featureCount)
        let settings = TrainingSettings(
            steps: steps, batchSize: batch, microBatches: microBatches, optimizer: .adamw(learningRate: 1e-3),
            orthoReg: OrthoRegSettings(lambda: orthoRegLambda),
            trainedParameters: Array(backbone.layout.specs.indices),
            regularizedParameters: FineTuneMode.full.regularizedParameters(backbone.layout))
        let trainer = Trainer(backbone: backbone, head: head, settings: settings)
        var times: [Double] = []
        for run in 0..<4 {
            let parameters = FloatBuffer(count: base.count)
            parameters.copy(from: base)
            let start = Date()
            try? trainer.run(parameters: parameters, base: base, data: data, random: RandomStream(seed: 2), label: "bench",
                             reportEvery: steps)
            if run > 0 { times.append(Date().timeIntervalSince(start) * 1000 / Double(steps)) }
        }
        return times.sorted()[times.count / 2]
    }
}
