// SweepRunTests: `orthofuse sweep` on in-process ranks: every cell a job, summary.csv and
// summary.html, a rerun that skips finished cells, and `--only` reproducing a row elsewhere.
import Foundation
import XCTest
@testable import Coordinator
@testable import Core
@testable import Reporting
import TestSupport
import Transport

final class SweepRunTests: XCTestCase {
    private var workspace: SyntheticWorkspace!
    private var directory: URL { workspace.directory }

    override func setUpWithError() throws {
        workspace = try syntheticWorkspace("sweep")
        try workspace.jobText(output: "unused", steps: 30).write(to: directory.appendingPathComponent("job.yaml"),
                                                                  atomically: true, encoding: .utf8)
    }

    private func writeSweep(lambdas: String) throws -> URL {
        let url = directory.appendingPathComponent("sweep.yaml")
        try """
            name: tiny
            job: job.yaml
            suite: synthetic3
            axes:
              head:
                probe: {steps: 60, batch_size: 32}
                proto: {kind: prototypes, shots: 5, temperature: 10}
            grids:
              - {finetune.orthoreg.lambda: [0]}
              - {finetune.orthoreg.form: [offdiagonal], finetune.orthoreg.lambda: \(lambdas)}
            """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// Runs the sweep on `ranks` threads; returns rank 0's summary and how many cells it ran.
    private func run(_ url: URL, ranks: Int, options: SweepRunner.Options = .init()) throws -> (SweepSummary?, Int) {
        let ran = LockedCounter()
        let summaries = try InProcessWorld.run(size: ranks) { communicator in
            try SweepRunner(communicator: communicator, console: Console(rank: communicator.rank, size: ranks, level: .quiet))
                .run(sweepFile: url, options: options) { plan in
                    if communicator.rank == 0 { ran.increment() }
                    try JobRunner(plan: plan, communicator: communicator,
                                  console: Console(rank: communicator.rank, size: ranks, level: .quiet)).run()
                }
        }
        return (summaries[0] ?? nil, ran.value)
    }

    func testSweepRunsEveryCellWritesTheSummaryAndResumes() throws {
        let url = try writeSweep(lambdas: "[0.5]")
        let (first, ran) = try run(url, ranks: 2)
        XCTAssertEqual(ran, 4)
        let summary = try XCTUnwrap(first)
        XCTAssertEqual(summary.rows.map(\.cell), ["head=probe,lambda=0", "head=proto,lambda=0",
                                                  "head=probe,form=offdiagonal,lambda=0.5", "head=proto,form=offdiagonal,lambda=0.5"])
        XCTAssertEqual(summary.rows.map(\.head), ["probe", "prototypes-5", "probe", "prototypes-5"])
        XCTAssertEqual(summary.rows.map(\.form), ["none", "none", "offdiagonal", "offdiagonal"])
        XCTAssertEqual(Set(summary.rows.map(\.suite)), ["synthetic3"])
        for row in summary.rows {
            XCTAssertEqual(row.retention, (row.mergedAbsolute - row.zeroShot) / (row.finetuned - row.zeroShot), accuracy: 1e-12)
            XCTAssertGreaterThan(row.finetuned, row.zeroShot, "fine-tuning helps on the synthetic tasks (\(row.cell))")
        }
        // The prototype head differs from the probe: other zero-shot accuracy on the same θ0.
        XCTAssertNotEqual(summary.rows[0].zeroShot, summary.rows[1].zeroShot)

        let output = directory.appendingPathComponent("runs/tiny")
        let csv = try String(contentsOf: output.appendingPathComponent("summary.csv"), encoding: .utf8)
        let lines = csv.split(separator: "\n")
        XCTAssertEqual(lines.count, 5)
        XCTAssertEqual(String(lines[0]), SweepSummary.columns.joined(separator: ","))
        XCTAssertTrue(FileManager.default.fileExists(atPath: output.appendingPathComponent("summary.html").path))
        let report = try RunDirectory(output.appendingPathComponent("cells/head=proto,lambda=0")).readReport()
        XCTAssertEqual(report.merges[0].retention ?? .nan, summary.rows[1].retention, accuracy: 1e-12, "retention in report.json")

        // A rerun runs nothing; a new λ value runs only its cells, and the summary keeps all.
        let (again, ranAgain) = try run(url, ranks: 1)
        XCTAssertEqual(ranAgain, 0)
        // (Rows compare by their CSV text: a quantity not measured is nan, which is never == itself.)
        XCTAssertEqual(again?.csv(), summary.csv())
        let wider = try writeSweep(lambdas: "[0.5, 2]")
        let (third, ranThird) = try run(wider, ranks: 2)
        XCTAssertEqual(ranThird, 2)
        XCTAssertEqual(third?.rows.count, 6)
        XCTAssertEqual(SweepSummary(rows: Array(third?.rows.prefix(3) ?? [])).csv(), SweepSummary(rows: Array(summary.rows.prefix(3))).csv(),
                       "finished rows unchanged")
    }

    func testOnlyReproducesOneCellElsewhere() throws {
        let url = try writeSweep(lambdas: "[0.5]")
        let (summary, _) = try run(url, ranks: 1)
        let row = try XCTUnwrap(summary?.rows.first { $0.cell == "head=proto,form=offdiagonal,lambda=0.5" })
        let elsewhere = directory.appendingPathComponent("again")
        let (none, ran) = try run(url, ranks: 3, options: .init(only: row.cell, output: elsewhere))
        XCTAssertNil(none, "a cell run elsewhere leaves the summary alone")
        XCTAssertEqual(ran, 1)
        let report = try RunDirectory(elsewhere).readReport()
        XCTAssertEqual(report.merges[0].absoluteAccuracy, row.mergedAbsolute, "same merged accuracy on 3 ranks as on 1")
        XCTAssertEqual(report.meanZeroShotAccuracy, row.zeroShot)

        XCTAssertThrowsError(try run(url, ranks: 2, options: .init(only: "head=nope"))) { error in
            XCTAssertTrue("\(error)".contains("no cell named head=nope"), "\(error)")
        }
        XCTAssertThrowsError(try run(url, ranks: 1, options: .init(output: elsewhere))) { error in
            XCTAssertTrue("\(error)".contains("--output needs --only CELL"), "\(error)")
        }
    }
}

/// A counter the rank threads share.
final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
