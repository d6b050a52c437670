// BenchCommand: `orthofuse bench train|merge|allgather`: speed measurements, printed, never asserted
// (scripts/bench.sh sets them beside PyTorch; scripts/bench_merge.sh runs the merge grid).
import ArgumentParser
import Benchmarks
import Core
import Foundation
import MPITransport
import Reporting

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed: a training step (train), merging task vectors over ranks (merge), or their exchange (allgather).",
        subcommands: [TrainBench.self, MergeBenchCommand.self, AllGatherBenchCommand.self])
}

struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "The real Trainer's step on random data: prints one JSON line (ms_per_step, samples_per_second, …).")

    @Option(help: "Backbone: mlp, vit (timm's layout) or clip_vit (open_clip's image tower).")
    var arch = "mlp"

    @Option(help: "Input shape, comma-separated: 784 for the MLP, 1,28,28 (channels, height, width) for the ViT, 3,224,224 for clip_vit.")
    var input: String?

    @Option(help: "MLP hidden widths, comma-separated.")
    var hidden = "256,256"

    @Option(help: "ViT patch size.") var patch = 7
    @Option(help: "ViT width.") var width = 64
    @Option(help: "ViT depth.") var depth = 4
    @Option(help: "ViT attention heads.") var heads = 4
    @Option(help: "clip_vit: the output dimension of proj.") var outputDim = 512
    @Option(help: "clip_vit: the blocks' activation, quick_gelu (default) or gelu.") var activation: String?
    @Option(help: "Classes of the head.") var classes = 10
    @Option(help: "Batch size.") var batch = 128
    @Option(help: "Timed steps per run (median of 3 runs after a warm-up).") var steps = 100
    @Option(help: "OpenBLAS threads.") var threads = 1
    @Option(parsing: .unconditional, help: "OrthoReg λ (0: off).") var orthoreg = 0.0
    @Option(help: "Micro-batches per step (the batch is cut into this many).") var microBatches = 1
    @Option(help: "vit, clip_vit: samples per cache block (0: the model's own; the batch size: the whole batch in one pass).")
    var cacheBlock = 0

    func validate() throws {
        guard ["mlp", "vit", "clip_vit"].contains(arch) else { throw ValidationError("--arch: mlp, vit or clip_vit") }
        guard activation.map({ TransformerActivation(rawValue: $0) != nil && arch == "clip_vit" }) ?? true, outputDim > 0 else {
            throw ValidationError("--activation (clip_vit only): quick_gelu or gelu; --output-dim: positive")
        }
        guard batch > 0, steps > 0, threads > 0, classes > 1, microBatches > 0, batch % microBatches == 0 else {
            throw ValidationError("--batch, --steps, --threads, --micro-batches must be positive (--batch a multiple of --micro-batches), --classes at least 2")
        }
        guard orthoreg >= 0, orthoreg.isFinite else { throw ValidationError("--orthoreg: a number ≥ 0") }
        guard cacheBlock >= 0 else { throw ValidationError("--cache-block: 0 (the model's own) or a number of samples") }
    }

    /// clip_vit's activation: OpenAI's weights use QuickGELU.
    private var blockActivation: TransformerActivation { activation.flatMap(TransformerActivation.init) ?? .quickGELU }

    func run() throws {
        BLASRuntime.setThreads(threads)
        let defaultInput = ["mlp": "784", "vit": "1,28,28", "clip_vit": "3,224,224"][arch]!
        let dimensions = (input ?? defaultInput).split(separator: ",").compactMap { Int($0) }
        let backbone: any Backbone
        let shape: String
        if arch == "mlp" {
            let widths = hidden.split(separator: ",").compactMap { Int($0) }
            guard dimensions.count == 1, dimensions[0] > 0, !widths.isEmpty, widths.allSatisfy({ $0 > 0 }) else {
                throw ValidationError("--input: one size for the MLP; --hidden: positive widths")
            }
            backbone = MLPBackbone(MLPConfiguration(inputCount: dimensions[0], hidden: widths, activation: .relu), maxBatch: batch)
            shape = "\(dimensions[0])-\(widths.map(String.init).joined(separator: "-"))-\(classes)"
        } else {
            guard dimensions.count == 3, dimensions.allSatisfy({ $0 > 0 }), dimensions[1] % patch == 0, dimensions[2] % patch == 0,
                  width % heads == 0 else {
                throw ValidationError("--input C,H,W with H and W multiples of --patch; --width a multiple of --heads")
            }
            let isCLIP = arch == "clip_vit"
            backbone = ViTBackbone(ViTConfiguration(channels: dimensions[0], height: dimensions[1], width: dimensions[2],
                                                    patch: patch, dim: width, depth: depth, heads: heads,
                                                    flavor: isCLIP ? .openCLIP(outputDim: outputDim) : .timm,
                                                    activation: isCLIP ? blockActivation : .gelu), maxBatch: batch,
                                   cacheBlock: cacheBlock > 0 ? cacheBlock : nil)
            shape = "\(dimensions.map(String.init).joined(separator: "x")) p\(patch) d\(width) depth\(depth) h\(heads)"
                + (isCLIP ? " e\(outputDim) \(blockActivation.rawValue)" : "")
        }
        let result = try TrainingBench.measure(backbone: backbone, arch: arch, shape: shape, classes: classes, batch: batch,
                                               steps: steps, orthoRegLambda: orthoreg, microBatches: microBatches,
                                               threads: threads)
        print(result.jsonLine)
    }
}

struct MergeBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Sharded vs all-gather merging of synthetic task vectors under mpirun: time, GB/s, peak memory per rank.")

    @Option(help: "sharded or allgather.") var variant = "sharded"
    @Option(help: "Merging method.") var method = "task_arithmetic"
    @Option(help: "Task vectors.") var tasks = 8
    @Option(help: "Parameters per task vector (rounded up to 1024×1024 layers).") var parameters = 50_000_000
    @Option(help: "Seed of the synthetic task vectors.") var seed: UInt64 = 1

    func run() throws {
        guard ["sharded", "allgather"].contains(variant) else { throw ValidationError("--variant: sharded or allgather") }
        guard let name = MergeMethodName(rawValue: method) else { throw ValidationError("--method: unknown method \(method)") }
        guard tasks > 0, parameters > 0 else { throw ValidationError("--tasks and --parameters must be positive") }
        try MergeBench.run(.init(sharded: variant == "sharded", method: name, taskCount: tasks, parameters: parameters, seed: seed))
    }
}

struct AllGatherBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allgather",
        abstract: "Under mpirun: the task-vector exchange (GB/s) beside one bare MPI_Allgather of the same bytes; one JSON line.")

    @Option(help: "Task vectors (a multiple of the ranks).") var tasks = 4
    @Option(help: "Parameters per task vector.") var parameters = 16_000_000
    @Option(help: "Timings of each (the best is printed).") var repeats = 5
    @Option(help: "Seed of the synthetic task vectors.") var seed: UInt64 = 1

    func run() throws {
        guard tasks > 0, parameters > 0, repeats > 0 else { throw ValidationError("--tasks, --parameters and --repeats must be positive") }
        guard tasks.multipliedReportingOverflow(by: parameters).partialValue <= 1 << 31 else {
            throw ValidationError("--tasks × --parameters must be at most 2^31 (8 GB of task vectors)")
        }
        do {
            if let result = try AllGatherBench.run(taskCount: tasks, parameters: parameters, repeats: repeats, seed: seed) {
                print(result.jsonLine)
            }
        } catch {
            // Every rank finds the same error: rank 0 says it.
            if (MPIEnvironment.launcherRank ?? 0) == 0 { Console.error("\(error)") }
            throw ExitCode.failure
        }
    }
}
