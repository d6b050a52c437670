// EvalCommand: `orthofuse eval`, a given model with a run's heads on every task's test split.
import ArgumentParser
import Coordinator
import Core
import Reporting
import Foundation
import Transport

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a model (safetensors) with a job's frozen task heads on every task's test split.",
        discussion: """
            The heads come from the run directory (heads/<task>.safetensors, written by `orthofuse run`). \
            Under `mpirun -np N` each rank evaluates the tasks it would fine-tune. A linearized job's \
            model is evaluated as the linearized model at the run's θ0 (base.safetensors), as the run \
            evaluates its merges.
            """)

    @Argument(help: "The job file (YAML) that names the tasks, the model and the run directory.")
    var job: String

    @Option(help: "The model to evaluate: safetensors with the backbone's tensors (head.* tensors are ignored).")
    var model: String

    @Option(help: "The run directory holding heads/ (default: the job's output).")
    var runDirectory: String?

    func run() throws {
        try Launch.onEveryRank(level: .normal) { communicator, _ in
            let plan = try JobAnnouncer.announce(try Launch.read(.file(URL(fileURLWithPath: job))),
                                                 communicator: communicator)
            let directory = RunDirectory(runDirectory.map { URL(fileURLWithPath: $0) } ?? plan.output)
            let modelURL = URL(fileURLWithPath: model)
            if let rows = try ModelEvaluation.run(plan: plan, model: modelURL, run: directory, communicator: communicator) {
                print(ModelEvaluation.table(rows, model: modelURL.deletingPathExtension().lastPathComponent))
            }
        }
    }
}
