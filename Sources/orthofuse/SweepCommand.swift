// SweepCommand: `orthofuse sweep SWEEP.yaml`: a grid of jobs over a base job's keys, resumable,
// summarised in summary.csv and summary.html.
import ArgumentParser
import Coordinator
import Core
import JobSchema
import Foundation

struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Run a sweep: one job per cell of a grid over a base job's keys; summary.csv and summary.html.",
        discussion: """
            The sweep file names a base job (`job:`), axes over its keys (`axes:`, e.g. \
            finetune.orthoreg.lambda: [0, 0.1, 1]) and optional unions of further grids (`grids:`). \
            Each cell runs as its own job in <output>/cells/<cell>, on every rank (under mpirun its tasks \
            share the ranks). A rerun skips finished cells and resumes the others. docs/sweeps.md has the format.
            """)

    @Argument(help: "The sweep file (YAML).")
    var sweep: String

    @Option(help: "Run only this cell (its name as --list prints it), e.g. to reproduce one row of summary.csv.")
    var only: String?

    @Option(help: "With --only: run the cell into this directory instead of its folder in the sweep (the summary is left alone).")
    var output: String?

    @Flag(help: "Check every cell's job, list the cells and whether each has finished, then exit.")
    var list = false

    @OptionGroup var verbosity: OutputOptions

    func validate() throws {
        if output != nil && only == nil { throw ValidationError("--output needs --only CELL") }
    }

    func run() throws {
        let file = URL(fileURLWithPath: sweep)
        if list {
            let loaded = try JobSchema.Sweep.load(file)
            _ = try loaded.checkJobs()
            for cell in loaded.cells {
                let done = try SweepRunner.isFinished(cell, in: loaded)
                print("\(done ? "finished" : "pending ")  \(cell.id)")
            }
            return
        }
        let options = SweepRunner.Options(only: only, output: output.map { URL(fileURLWithPath: $0).standardizedFileURL })
        try Launch.runSweep({ try JobSchema.Sweep.load(file) }, options: options, level: verbosity.level)
    }
}
