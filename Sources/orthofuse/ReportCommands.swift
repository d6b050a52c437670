// ReportCommands: `orthofuse report` (rebuild report.html) and `orthofuse analyze` (redo analyses).
import ArgumentParser
import Coordinator
import Core
import Reporting
import Foundation

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild a run's report.html from its report.json and job.yaml.",
        discussion: "The page is self-contained (inline SVG and CSS, no script, no network); open it in any browser.")

    @Argument(help: "The run directory (the job's output).")
    var runDirectory: String

    @Option(help: "Where to write the page (default: RUN_DIRECTORY/report.html).")
    var output: String?

    func run() throws {
        do {
            let written = try RunDirectory(URL(fileURLWithPath: runDirectory))
                .writePage(to: output.map { URL(fileURLWithPath: $0) })
            print("wrote \(written.path)")
        } catch {
            Console.error("\(error)")
            throw ExitCode.failure
        }
    }
}

struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Recompute the analyses of a run's saved task vectors; rewrite report.json and report.html.",
        discussion: """
            Cosine similarity (whole vector and per 2-D tensor), sign conflicts, the Gram deviation \
            ‖G − I‖_F of every 2-D update and its leading singular values, from \
            RUN_DIRECTORY/task_vectors and the tasks and model of RUN_DIRECTORY/job.yaml. Nothing is \
            trained; negation and the disentanglement error (they need the data) are kept as they were.
            """)

    @Argument(help: "The run directory (the job's output).")
    var runDirectory: String

    func run() throws {
        do {
            let directory = RunDirectory(URL(fileURLWithPath: runDirectory))
            let analysis = try directory.reanalyze()
            print(Self.cosineTable(analysis))
            print("\(analysis.matrices.count) matrices analysed; wrote \(directory.reportJSON.path) and \(directory.reportPage.path)")
        } catch {
            Console.error("\(error)")
            throw ExitCode.failure
        }
    }

    /// The whole-vector cosine matrix as text.
    static func cosineTable(_ analysis: TaskVectorAnalysis) -> String {
        let rows = zip(analysis.tasks, analysis.cosine).map { task, row in [task] + row.map { String(format: "%.4f", $0) } }
        return "cosine similarity of the task vectors\n" + TextTable.render(header: [""] + analysis.tasks, rows: rows)
    }
}
