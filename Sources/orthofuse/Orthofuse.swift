// Orthofuse: the command-line entry point (run, sweep, demo, pretrain, merge, eval, analyze, report, doctor, bench).
import ArgumentParser
import Coordinator
import Core
import JobSchema
import Reporting
import Foundation
import MPITransport
import Transport

@main
struct Orthofuse: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orthofuse",
        abstract: "Fine-tune one model per task with OrthoReg on MPI ranks, merge the task vectors, evaluate.",
        version: JobRunner.version,
        subcommands: [Run.self, SweepCommand.self, Demo.self, Pretrain.self, Merge.self, Eval.self, Analyze.self, Report.self, Doctor.self, Bench.self])

    static func main() {
        BLASEnvironment.ensureCoreType()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

/// Output verbosity, shared by the commands that run jobs.
struct OutputOptions: ParsableArguments {
    @Flag(name: .shortAndLong, help: "Print only the results table and errors.")
    var quiet = false

    @Flag(name: .shortAndLong, help: "Print more detail (every rank's progress).")
    var verbose = false

    var level: Console.Level { quiet ? .quiet : (verbose ? .verbose : .normal) }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a job: fine-tune every task, gather the task vectors, merge, evaluate, report.",
        discussion: """
            Without mpirun one process does every task in turn. Under `mpirun -np N` rank 0 \
            coordinates and the ranks fine-tune tasks in parallel; results do not depend on N. \
            A rerun of the same job into the same output resumes: tasks whose files match the \
            output's manifest.json are not retrained, the others continue from their checkpoints.
            """)

    @Argument(help: "The job file (YAML).")
    var job: String

    @Flag(help: "Require an earlier run of this job in the output directory to resume (a plain rerun also resumes).")
    var resume = false

    @OptionGroup var output: OutputOptions

    func run() throws {
        try Launch.runJob(source: .file(URL(fileURLWithPath: job)), level: output.level, requiresResume: resume)
    }
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the built-in demo: 4 real image tasks (MNIST, Fashion-MNIST, Animal-MNIST, digits), fine-tuned without and with OrthoReg.",
        discussion: """
            Both runs share θ0, the frozen heads and every random stream; the table sets zero-shot, \
            fine-tuned and merged accuracy without and with OrthoReg side by side, with retention \
            (the share of the fine-tuning gain the merge keeps). Prepare the data first with \
            scripts/prepare_data.py (scripts/demo.sh does everything).
            """)

    @Option(help: "Directory holding the prepared datasets (mnist/, fashion_mnist/, animal_mnist/, digits/).")
    var data = "data"

    @Option(help: "Directory for the outputs: cells/orthoreg=without and cells/orthoreg=with, summary.csv.")
    var output = "runs/demo"

    @Option(help: "Backbone: mlp (784-256-256) or vit (patch 7, width 64, depth 4, 4 heads).")
    var model = "mlp"

    @Option(help: "Fine-tuning mode: full, attention (vit only), lora or linearized.")
    var mode = "full"

    // `parsing: .unconditional`: `--steps -1` reaches the range check instead of "missing value".
    @Option(parsing: .unconditional, help: "OrthoReg strength λ of the run with OrthoReg.")
    var orthoregLambda = 1.0

    @Option(help: "OrthoReg form of the run with OrthoReg: frobenius, squared, offdiagonal or l2 (docs/results.md compares them).")
    var orthoregForm = "offdiagonal"

    @Option(parsing: .unconditional, help: "Fine-tuning steps per task.")
    var steps = 1000

    @Flag(help: "Print the demo sweep (its job and the two settings) and exit.")
    var printJob = false

    @OptionGroup var verbosity: OutputOptions

    func validate() throws {
        guard ["mlp", "vit"].contains(model) else { throw ValidationError("--model must be mlp or vit") }
        guard ["full", "attention", "lora", "linearized"].contains(mode) else {
            throw ValidationError("--mode must be full, attention, lora or linearized")
        }
        guard OrthoRegForm(rawValue: orthoregForm) != nil else {
            throw ValidationError("--orthoreg-form must be one of \(OrthoRegForm.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard orthoregLambda > 0 else { throw ValidationError("--orthoreg-lambda must be > 0 (the other run has none)") }
        guard steps > 0 else { throw ValidationError("--steps must be positive") }
    }

    func run() throws {
        let text = DemoJob.sweepYAML(DemoJob.Options(dataDirectory: data, output: output, model: model, mode: mode,
                                                     orthoRegLambda: orthoregLambda, orthoRegForm: orthoregForm,
                                                     steps: steps))
        if printJob {
            print(text, terminator: "")
            return
        }
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        try Launch.runSweep({ try JobSchema.Sweep.parse(text, origin: "demo", baseDirectory: cwd) },
                            options: SweepRunner.Options(), level: verbosity.level, isDemo: true)
    }
}

struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check this installation: MPI collectives on every rank, OpenBLAS kernels and speed.")

    @Flag(help: "Print only the OpenBLAS settings orthofuse runs with here (NAME=value lines, no MPI), for launchers to pass to every rank.")
    var blasEnv = false

    func run() throws {
        if blasEnv {
            // The family OpenBLAS runs in this process, after BLASEnvironment.ensureCoreType: the
            // user's choice or the one made for this CPU (a name OpenBLAS does not know ends as
            // the family it picked itself).
            print("OPENBLAS_CORETYPE=\(BLASRuntime.coreName)")
            print("OPENBLAS_NUM_THREADS=1")
            return
        }
        let communicator = try Launch.makeCommunicator()
        defer { Launch.finish(communicator) }
        let lines = try CommunicatorSelfCheck.run(communicator)
        // Again with every collective split into calls of at most 3 elements: the paths that keep
        // huge buffers within MPI's Int32 counts, which full-size data cannot reach here.
        let chunked = try (communicator as? MPICommunicator).map { try CommunicatorSelfCheck.run($0.withMaxElementsPerCall(3)) }
        let speed = BLASCheck.sgemmGigaflops(size: 512)
        if communicator.rank == 0 {
            for line in lines { print("mpi \(line)") }
            if let chunked { print("mpi in chunks of 3 elements: \(chunked.count) checks ok") }
            print("ranks: \(communicator.size)")
        }
        let speeds = try communicator.allReduce(
            (0..<communicator.size).map { $0 == communicator.rank ? speed : 0 }, .sum)
        if communicator.rank == 0 {
            print("OpenBLAS core: \(BLASRuntime.coreName)")
            for (rank, value) in speeds.enumerated() {
                print(String(format: "rank %d: sgemm 512³ %.1f GFLOP/s (1 thread)", rank, value))
            }
        }
    }
}
