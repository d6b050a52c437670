// PretrainCommand: `orthofuse pretrain`, a job's θ0 written to a safetensors file for later `base:`.
import ArgumentParser
import Coordinator
import Core
import Foundation

struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pretrain",
        abstract: "Pre-train a job's θ0 (its pretrain: section) and save it as safetensors, for other jobs' base:.",
        discussion: """
            θ0 is trained by one process (rank 0 under mpirun) and cached in the job's output as \
            base.safetensors, so a rerun of the same job copies the cache instead of training again. \
            The file's metadata records the job and the joint training accuracy.
            """)

    @Argument(help: "The job file (YAML) with a pretrain: section.")
    var job: String

    @Option(name: .long, help: "Where to write θ0 (safetensors).")
    var save: String

    @Flag(help: "Replace the file given by --save when it exists.")
    var force = false

    @OptionGroup var output: OutputOptions

    func run() throws {
        let destination = URL(fileURLWithPath: save).standardizedFileURL
        try Launch.onEveryRank(level: output.level) { communicator, console in
            let plan = try JobAnnouncer.announce(try Launch.read(.file(URL(fileURLWithPath: job))),
                                                 communicator: communicator)
            if let summary = try BasePretraining.run(plan: plan, to: destination, replacing: force,
                                                     communicator: communicator, console: console) {
                console.info(summary)
            }
        }
    }
}
