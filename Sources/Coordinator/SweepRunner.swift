// SweepRunner: the SPMD program of `orthofuse sweep`, executed by every rank.
//
//  1. Rank 0 reads the sweep file, expands its cells and checks every cell's job (keys, values,
//     files) before any training, then broadcasts the cells still to run: a cell is finished when
//     its folder holds report.json, sweep-cell.json and a job.yaml equal to the cell's canonical
//     job. A failure here is one line from rank 0 on every rank.
//  2. Each cell to run is one job on all ranks (JobAnnouncer, then JobRunner: its tasks share the
//     ranks through the task scheduler). A rerun of an unfinished cell resumes its tasks from the
//     cell's manifest and checkpoints, like a rerun of `orthofuse run`.
//  3. After each cell rank 0 writes sweep-cell.json, then summary.csv and summary.html from every
//     finished cell (atomically), so an interrupted sweep keeps its summary up to date.
// `--only CELL` runs one cell (into `--output DIR` if given, and then leaves the summary alone).
import Core
import JobSchema
import Reporting
import Foundation
import Transport

public final class SweepRunner {
    public struct Options: Sendable {
        public var only: String?
        /// With `only`: run that cell here instead of its own folder.
        public var output: URL?

        public init(only: String? = nil, output: URL? = nil) {
            self.only = only
            self.output = output
        }
    }

    /// What rank 0 broadcasts per cell to run.
    struct CellJob: Codable {
        var id: String
        var text: String
        var origin: String
        var baseDirectory: String
    }

    /// Written into a cell's folder when it finished (after its report).
    struct CellRecord: Codable {
        var cell: String
        var canonicalJobSHA256: String
        enum CodingKeys: String, CodingKey {
            case cell
            case canonicalJobSHA256 = "canonical_job_sha256"
        }
    }

    public static let cellRecordName = "sweep-cell.json"

    public let communicator: any Communicator
    public let console: Console

    public init(communicator: any Communicator, console: Console) {
        self.communicator = communicator
        self.console = console
    }

    /// Runs the sweep. `runCell` runs one cell's plan on this rank (a JobRunner with the caller's
    /// console and progress display). Returns the summary on rank 0 (nil elsewhere).
    @discardableResult
    public func run(sweepFile: URL, options: Options = Options(),
                    runCell: (JobPlan) throws -> Void) throws -> SweepSummary? {
        try run(sweep: try Sweep.load(sweepFile), options: options, runCell: runCell)
    }

    /// The same for a sweep made in code (the demo); `sweep` is only evaluated on rank 0.
    @discardableResult
    public func run(sweep load: @autoclosure () throws -> Sweep, options: Options = Options(),
                    runCell: (JobPlan) throws -> Void) throws -> SweepSummary? {
        let isCoordinator = communicator.rank == 0
        var sweep: Sweep?
        let todo: [CellJob] = try PhaseAgreement.run(communicator) {
            guard isCoordinator else { return [] }
            let loaded = try load()
            sweep = loaded
            return try cellsToRun(loaded, options: options)
        }
        let bytes = try communicator.broadcast(isCoordinator ? Array(try JSONEncoder().encode(todo)) : [], root: 0)
        let cells = try JSONDecoder().decode([CellJob].self, from: Data(bytes))
        if isCoordinator, let sweep {
            let finished = options.only == nil ? sweep.cells.count - cells.count : 0
            console.info("sweep '\(sweep.name)': \(sweep.cells.count) cells, \(finished) finished earlier, \(cells.count) to run; "
                + "summary in \(sweep.output.path)")
        }
        for (number, cell) in cells.enumerated() {
            let started = Date()
            if isCoordinator { console.info("cell \(number + 1)/\(cells.count): \(cell.id)") }
            do {
                let plan = try JobAnnouncer.announce(
                    JobAnnouncer.Source(text: cell.text, origin: cell.origin,
                                        baseDirectory: URL(fileURLWithPath: cell.baseDirectory)),
                    communicator: communicator)
                try runCell(plan)
                if isCoordinator {
                    try record(cell, canonicalJob: plan.canonicalJob, in: plan.output)
                    if let sweep, options.output == nil { try Self.writeSummary(sweep) }
                    let report = try RunDirectory(plan.output).readReport()
                    console.info("cell \(cell.id) done in \(String(format: "%.0f", Date().timeIntervalSince(started))) s: "
                        + Self.headline(report))
                }
            } catch let error as PeerFailure {
                throw error
            } catch let preempted as TrainingPreempted {
                throw preempted
            } catch {
                throw isCoordinator ? OrthofuseError("cell \(cell.id): \(error)") : error
            }
        }
        guard isCoordinator, let sweep, options.output == nil else { return nil }
        return try Self.writeSummary(sweep)
    }

    /// "merged 87.52 % (zero-shot 85.38, fine-tuned 93.17, retention 27 %)" for each merge.
    static func headline(_ report: RunReport) -> String {
        report.merges.map { merge in
            String(format: "%@ %.2f %% (zero-shot %.2f, fine-tuned %.2f, retention %.0f %%)", merge.label,
                   100 * merge.absoluteAccuracy, 100 * report.meanZeroShotAccuracy, 100 * report.meanFinetunedAccuracy,
                   100 * (merge.retention ?? .nan))
        }.joined(separator: "; ")
    }

    /// The cells rank 0 will run, every cell's job checked first.
    func cellsToRun(_ sweep: Sweep, options: Options) throws -> [CellJob] {
        _ = try sweep.checkJobs()
        let chosen: [Sweep.Cell]
        if let only = options.only {
            chosen = [try sweep.cell(named: only)]
        } else {
            if options.output != nil { throw OrthofuseError("--output needs --only CELL (a whole sweep writes to its own output)") }
            chosen = try sweep.cells.filter { try !Self.isFinished($0, in: sweep) }
        }
        return try chosen.map { cell in
            CellJob(id: cell.id, text: try cell.jobText(output: options.output), origin: sweep.cellOrigin(cell),
                    baseDirectory: sweep.baseDirectory.path)
        }
    }

    /// Whether the cell's folder holds its finished record, its report, and the very job this cell
    /// is now: the job.yaml a run writes is the canonical job (defaults filled in, paths resolved),
    /// so moving the base job into a file of its own does not make finished cells run again,
    /// while any change to what a cell trains or evaluates does.
    public static func isFinished(_ cell: Sweep.Cell, in sweep: Sweep) throws -> Bool {
        try finishedJob(cell, in: sweep) != nil
    }

    /// The cell's parsed job when the cell is finished (see `isFinished`), else nil.
    static func finishedJob(_ cell: Sweep.Cell, in sweep: Sweep) throws -> JobConfig? {
        let folder = RunDirectory(cell.output)
        guard FileManager.default.fileExists(atPath: folder.reportJSON.path),
              FileManager.default.fileExists(atPath: cell.output.appendingPathComponent(cellRecordName).path),
              let ran = folder.jobText
        else { return nil }
        let job = try JobConfig.parse(try cell.jobText(), origin: sweep.cellOrigin(cell), baseDirectory: sweep.baseDirectory)
        return ran == job.canonicalYAML ? job : nil
    }

    private func record(_ cell: CellJob, canonicalJob: String, in output: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(CellRecord(cell: cell.id, canonicalJobSHA256: Checksum.sha256(canonicalJob)))
        try AtomicFile.write(data, to: output.appendingPathComponent(Self.cellRecordName))
    }

    /// summary.csv and summary.html from every finished cell of `sweep`, in cell order.
    @discardableResult
    public static func writeSummary(_ sweep: Sweep) throws -> SweepSummary {
        var rows: [SweepSummary.Row] = []
        for cell in sweep.cells {
            guard let job = try finishedJob(cell, in: sweep) else { continue }
            let report = try RunDirectory(cell.output).readReport()
            let suite = cell.assignments.first { $0.key == "tasks" }?.label ?? sweep.suite
            rows += SweepSummary.rows(cell: cell.id, suite: suite, job: job, report: report)
        }
        let summary = SweepSummary(rows: rows)
        try FileSystemMessage.createDirectory(sweep.output)
        try AtomicFile.write(Data(summary.csv().utf8), to: sweep.output.appendingPathComponent("summary.csv"))
        try SweepSummaryPage.write(summary, name: sweep.name, to: sweep.output.appendingPathComponent("summary.html"))
        return summary
    }
}
