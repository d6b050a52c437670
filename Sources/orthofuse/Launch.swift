// Launch: starting a job on this process's rank(s), and turning failures into one line + exit code.
import Coordinator
import Core
import JobSchema
import Reporting
import Foundation
import MPITransport
import Transport

enum JobSource {
    case file(URL)
    case text(String, origin: String, baseDirectory: URL)
}

enum Launch {
    static var launchedByMPI: Bool { MPIEnvironment.launchedByLauncher }

    /// MPI when launched by mpirun; otherwise a single in-process rank (no MPI singleton start-up).
    static func makeCommunicator() throws -> any Communicator {
        StopSignal.installPreemption()
        if launchedByMPI {
            // From the start: a rank may die while the others are still starting up.
            StopSignal.install(rank: MPIEnvironment.launcherRank ?? -1, output: nil)
            return try MPIEnvironment.initialize()
        }
        return InProcessWorld(size: 1).communicator(rank: 0)
    }

    static func finish(_ communicator: any Communicator) {
        if communicator is MPICommunicator {
            try? MPIEnvironment.finalize()
        }
    }

    /// Rank 0 reads and checks the job and announces it (JobAnnouncer); every rank verifies it runs
    /// the same binary and job, so a bad job or a mixed installation is one error line from rank 0.
    static func runJob(source: JobSource, level: Console.Level, requiresResume: Bool = false) throws {
        try onEveryRank(level: level) { communicator, console in
            var plan = try JobAnnouncer.announce(try read(source), communicator: communicator)
            plan.requiresResume = requiresResume
            try runPlan(plan, communicator: communicator, console: console, level: level)
        }
    }

    /// Starts this process's rank, runs `body`, finalises MPI. A failure is printed once, by rank 0
    /// (other ranks learn of it as PeerFailure), and exits 1.
    /// Under mpirun the other ranks write to their log files; rank 0's terminal shows every task's
    /// progress (from the workers' Progress messages). --verbose shows every rank's lines.
    static func onEveryRank(level: Console.Level, _ body: (any Communicator, Console) throws -> Void) throws {
        let communicator: any Communicator
        do {
            communicator = try makeCommunicator()
        } catch {
            throw CleanExit.message("cannot start MPI: \(error)")
        }
        let rank = communicator.rank
        let console = Console(rank: rank, size: communicator.size,
                              level: rank == 0 ? level : (level == .verbose ? .normal : .quiet))
        do {
            try body(communicator, console)
            finish(communicator)
        } catch let preempted as TrainingPreempted {
            exitPreempted(preempted, rank: rank, console: console)
        } catch {
            // A PeerFailure was reported where it happened; rank 0 prints any other error, once.
            if rank == 0, !(error is PeerFailure) { Console.error("\(error)") }
            StopSignal.exitingWithError(code: 1)
            finish(communicator)
            Foundation.exit(1)
        }
    }

    /// A training run of this rank saved its checkpoint and stopped: say so (rank 0 on the terminal,
    /// the others in their logs) and end the process without MPI_Finalize, which would wait for
    /// ranks still inside a collective; mpirun then ends them (see StopSignal).
    private static func exitPreempted(_ preempted: TrainingPreempted, rank: Int, console: Console) -> Never {
        console.info("\(preempted)")
        if rank == 0 { FileHandle.standardError.write(Data((StopSignal.preemptionLine(output: currentOutput) + "\n").utf8)) }
        fflush(nil)  // every stdio stream: the log lines before the exit
        _exit(StopSignal.preemptedExitCode)
    }

    /// The output folder of the plan this process runs, for the preemption line.
    nonisolated(unsafe) private static var currentOutput: URL?

    /// Runs one announced plan on this rank: its logs in the run directory, rank 0's progress display.
    static func runPlan(_ plan: JobPlan, communicator: any Communicator, console: Console, level: Console.Level) throws {
        currentOutput = plan.output
        if communicator is MPICommunicator { StopSignal.install(rank: communicator.rank, output: plan.output) }
        let progress = communicator.rank == 0 && level >= .normal ? ProgressDisplay(interactive: liveProgress) : nil
        defer { progress?.clear() }
        let logged = console.logging(to: RunLog(directory: plan.output.appendingPathComponent("logs"), rank: communicator.rank))
            .showing(progress)
        try JobRunner(plan: plan, communicator: communicator, console: logged).run()
    }

    /// `orthofuse sweep`: every cell a job on all ranks (SweepRunner), one error line on failure.
    /// `load` runs on rank 0 only. The demo (`isDemo`) owns its cells' folders: a cell run with other
    /// settings is moved aside instead of refused, and the end shows its runs side by side.
    static func runSweep(_ load: @escaping () throws -> JobSchema.Sweep, options: SweepRunner.Options, level: Console.Level,
                         isDemo: Bool = false) throws {
        try onEveryRank(level: level) { communicator, console in
            let rank = communicator.rank
            var sweep: JobSchema.Sweep?
            let summary = try SweepRunner(communicator: communicator, console: console).run(
                sweep: try { let loaded = try load(); sweep = loaded; return loaded }(), options: options) { plan in
                    if isDemo {
                        // Before any rank opens its log file in the output.
                        if rank == 0 { moveAsideAnotherJobsOutput(plan, console: console) }
                        try communicator.barrier()
                    }
                    try runPlan(plan, communicator: communicator, console: console, level: level)
                }
            guard let summary, let sweep, rank == 0 else { return }
            if isDemo {
                let runs = try sweep.cells.map { cell in
                    (label: cell.assignments.last?.label ?? cell.id, report: try RunDirectory(cell.output).readReport())
                }
                print(ComparisonTable.text(runs))
            } else {
                print(summary.table())
            }
        }
    }

    /// Renames `plan.output` to `<output>.previous` (replacing an older one) when it holds a run
    /// that this job would be refused to write into.
    static func moveAsideAnotherJobsOutput(_ plan: JobPlan, console: Console) {
        let output = plan.output
        guard let manifest = try? RunManifest.read(in: output),
              manifest.conflict(training: plan.trainingSections, taskDefinitions: plan.taskDefinitions) != nil
        else { return }
        let previous = output.deletingLastPathComponent().appendingPathComponent(output.lastPathComponent + ".previous")
        try? FileManager.default.removeItem(at: previous)
        if (try? FileManager.default.moveItem(at: output, to: previous)) != nil {
            console.info("the earlier demo run in \(output.path) used other settings: moved to \(previous.path)")
        }
    }

    /// Whether rank 0 redraws its progress block in place. `ORTHOFUSE_PROGRESS=live|plain`
    /// decides (cluster/launch.sh sets it from its own stdout); without it, a process under mpirun
    /// prints plain lines, since mpirun gives its ranks a pseudo-terminal even when writing to a file.
    static var liveProgress: Bool {
        switch ProcessInfo.processInfo.environment["ORTHOFUSE_PROGRESS"] {
        case "live": return true
        case "plain": return false
        default: return !launchedByMPI && isatty(STDOUT_FILENO) == 1
        }
    }

    static func read(_ source: JobSource) throws -> JobAnnouncer.Source {
        switch source {
        case let .file(url):
            let text = try FileBytes.readText(url, origin: url.path, limit: JobConfig.maximumFileSize, kind: "job file")
            return JobAnnouncer.Source(text: text, origin: url.lastPathComponent,
                                       baseDirectory: url.deletingLastPathComponent().standardizedFileURL)
        case let .text(text, origin, baseDirectory):
            return JobAnnouncer.Source(text: text, origin: origin, baseDirectory: baseDirectory)
        }
    }
}

enum CleanExit: Error, CustomStringConvertible {
    case message(String)
    var description: String {
        switch self {
        case let .message(text): return text
        }
    }
}
