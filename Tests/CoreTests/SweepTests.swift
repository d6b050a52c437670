// SweepTests: a sweep file's expansion into cells (axes × grids, names, key paths), its one-line
// errors, and the summary's rows and columns.
import Foundation
import XCTest
@testable import Core
@testable import JobSchema
@testable import Reporting

final class SweepTests: XCTestCase {
    private let directory = URL(fileURLWithPath: "/tmp/sweep-tests")

    private let baseJob = """
        job:
          name: base
          model: {arch: mlp, input: [4], hidden: [8], activation: relu}
          tasks:
            - {name: a, classes: 2, train: a.npz, test: a.npz}
          finetune: {steps: 10, optimizer: {name: adamw, lr: 1.0e-3}}
        """

    private func parse(_ body: String) throws -> Sweep {
        try Sweep.parse("name: s\n" + baseJob + "\n" + body, origin: "sweep.yaml", baseDirectory: directory)
    }

    private func config(_ cell: Sweep.Cell) throws -> JobConfig {
        try JobConfig.parse(cell.jobText(), origin: cell.id, baseDirectory: directory)
    }

    func testAxesCrossWithTheFirstAxisOutermost() throws {
        let sweep = try parse("""
            axes:
              seed: [1, 2]
              finetune.orthoreg.lambda: [0, 0.5, 1]
            """)
        XCTAssertEqual(sweep.cells.map(\.id), [
            "seed=1,lambda=0", "seed=1,lambda=0.5", "seed=1,lambda=1",
            "seed=2,lambda=0", "seed=2,lambda=0.5", "seed=2,lambda=1",
        ])
        let jobs = try sweep.cells.map(config)
        XCTAssertEqual(jobs.map(\.seed), [1, 1, 1, 2, 2, 2])
        XCTAssertEqual(jobs.map(\.finetune.orthoreg.lambda), [0, 0.5, 1, 0, 0.5, 1], "a missing mapping is created")
        XCTAssertEqual(jobs.map(\.finetune.optimizer.learningRate), Array(repeating: 1e-3, count: 6), "the rest is the base job")
        XCTAssertEqual(sweep.cells[4].output.path, "/tmp/sweep-tests/runs/s/cells/seed=2,lambda=0.5")
        XCTAssertEqual(jobs[4].output.url.path, sweep.cells[4].output.path, "each cell writes into its own folder")
        XCTAssertEqual(sweep.cells[4].assignments.map(\.key), ["seed", "finetune.orthoreg.lambda"])
    }

    func testGridsAreAUnionEachCrossedWithTheAxes() throws {
        let sweep = try parse("""
            output: out/here
            axes: {seed: [1, 2]}
            grids:
              - {finetune.orthoreg.lambda: [0]}
              - {finetune.orthoreg.form: [offdiagonal, l2], finetune.orthoreg.lambda: [1]}
            """)
        XCTAssertEqual(sweep.cells.map(\.id), [
            "seed=1,lambda=0", "seed=2,lambda=0",
            "seed=1,form=offdiagonal,lambda=1", "seed=1,form=l2,lambda=1",
            "seed=2,form=offdiagonal,lambda=1", "seed=2,form=l2,lambda=1",
        ])
        let forms = try sweep.cells.map { try config($0).finetune.orthoreg.form }
        XCTAssertEqual(forms, [.frobenius, .frobenius, .offdiagonal, .l2, .offdiagonal, .l2])
        XCTAssertEqual(sweep.output.path, "/tmp/sweep-tests/out/here")
    }

    func testNamedAndListValuesAndCollidingShortNames() throws {
        let sweep = try parse("""
            axes:
              model.hidden: [[16, 16], [32]]
              tasks:
                one: [{name: a, classes: 2, train: a.npz, test: a.npz}]
                two: [{name: a, classes: 2, train: a.npz, test: a.npz}, {name: b, classes: 3, train: b.npz, test: b.npz}]
              finetune.steps: [10]
              pretrain.steps: [5]
            """)
        XCTAssertEqual(sweep.cells.map(\.id).first, "hidden=16x16,tasks=one,finetune.steps=10,pretrain.steps=5")
        XCTAssertEqual(sweep.cells.count, 4)
        let last = try config(sweep.cells[3])
        XCTAssertEqual(last.tasks.map(\.name), ["a", "b"])
        guard case .mlp(let shape) = last.model.architecture else { return XCTFail("mlp") }
        XCTAssertEqual(shape.hidden, [32])
        XCTAssertEqual(last.pretrain?.steps, 5)
    }

    func testBadSweepFilesFailWithOneLineNamingTheKey() {
        let cases: [(String, String)] = [
            ("axes: {seed: []}", "sweep.yaml: axes.seed: must be a non-empty list of values or a mapping of named values"),
            ("axes: {seed: [1, 1]}", "sweep.yaml: axes.seed: the value 1 appears twice"),
            ("axes: {output: [a]}", "sweep.yaml: axes.output: the sweep sets each cell's output itself"),
            ("axes: {Finetune.steps: [1]}", "sweep.yaml: axes.Finetune.steps: must be a dotted path of job keys (e.g. finetune.orthoreg.lambda)"),
            ("axis: {seed: [1]}", "sweep.yaml: axis: unknown key (allowed: name, job, set, axes, grids, output, suite)"),
            ("grids: []", "sweep.yaml: grids: must be a non-empty list of axis mappings"),
            ("axes: {tasks: [[{name: a}]]}", "sweep.yaml: axes.tasks[0]: a structured value needs a name: write the axis as a mapping {name: value}"),
            ("axes: {seed: [1]}\ngrids: [{seed: [2]}]", "sweep.yaml: grids: seed is already an axis of `axes`"),
            ("axes: {model.hidden.x: [1]}", "sweep.yaml: model.hidden.x: the base job has a value that is not a mapping where the path needs one"),
        ]
        for (body, message) in cases {
            XCTAssertThrowsError(try parse(body), body) { error in
                XCTAssertEqual("\(error)", message, body)
            }
        }
        XCTAssertThrowsError(try Sweep.parse("name: s\naxes: {seed: [1]}", origin: "sweep.yaml", baseDirectory: directory)) {
            XCTAssertEqual("\($0)", "sweep.yaml: job: required: a job file or an inline job mapping")
        }
    }

    func testAnInvalidCellJobNamesTheCell() throws {
        let sweep = try parse("axes: {finetune.orthoreg.lambda: [1, -1]}")
        XCTAssertThrowsError(try sweep.checkJobs()) { error in
            XCTAssertTrue("\(error)".hasPrefix("sweep.yaml cell lambda=-1: finetune.orthoreg.lambda: must be >= 0"), "\(error)")
        }
        XCTAssertThrowsError(try sweep.cell(named: "lambda=2")) { error in
            XCTAssertTrue("\(error)".contains("no cell named lambda=2 (2 cells"), "\(error)")
        }
    }

    // MARK: Summary

    private func report(zeroShot: [Double], finetuned: [Double], merged: Double, cosine: Double) -> RunReport {
        let tasks = zeroShot.indices.map { i in
            RunReport.TaskEntry(name: "t\(i)", zeroShotAccuracy: zeroShot[i], finetunedAccuracy: finetuned[i],
                                zeroShotValidationAccuracy: 0, finetunedValidationAccuracy: 0, trainSamples: 1,
                                validationSamples: 1, testSamples: 1, taskVectorNorm: Double(i + 1), orthoRegPenalty: 0,
                                finalLoss: 0, trainSeconds: 1, rank: 0)
        }
        let merge = RunReport.MergeEntry(method: "task_arithmetic", alpha: 0.3, absoluteAccuracy: merged,
                                         normalizedAccuracy: 0.95, perTask: [], alphaCurve: [], file: "m")
        var report = RunReport(run: .init(job: "j", seed: 1, ranks: 1, finetuneMode: "full", orthoRegLambda: 0,
                                          orthoRegForm: "frobenius", blasCore: "x", wallSeconds: 12.5, version: "v"),
                               tasks: tasks, merges: [merge])
        report.cosineSimilarity = TaskMatrix(tasks: ["t0", "t1"], matrix: [[1, cosine], [cosine, 1]])
        report.orthoRegPenaltyPerLayer = ["t0": ["w": 2, "v": 1], "t1": ["w": 5]]
        return report
    }

    func testRowsCarryRetentionAndTheJobsSettings() throws {
        let sweep = try parse("axes: {seed: [1, 2]}\ngrids: [{finetune.orthoreg.form: [l2], finetune.orthoreg.lambda: [1]}]")
        let job = try config(sweep.cells[0])
        let rows = SweepSummary.rows(cell: sweep.cells[0].id, suite: nil, job: job,
                                     report: report(zeroShot: [0.8, 0.6], finetuned: [0.9, 0.9], merged: 0.8, cosine: 0.1))
        XCTAssertEqual(rows.count, 1)
        let row = rows[0]
        XCTAssertEqual(row.suite, "tasks2")
        XCTAssertEqual(row.form, "l2")
        XCTAssertEqual(row.width, 8)
        XCTAssertEqual(row.head, "probe")
        XCTAssertEqual(row.retention, (0.8 - 0.7) / (0.9 - 0.7), accuracy: 1e-12)
        XCTAssertEqual(row.taskVectorNorm, 1.5)
        XCTAssertEqual(row.meanCosine, 0.1)
        XCTAssertEqual(row.meanGramDeviation, 4, "mean over tasks of each task's sum over tensors")
        XCTAssertTrue(row.negationTarget.isNaN, "no negation in this job")

        let csv = SweepSummary(rows: rows).csv().split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        XCTAssertEqual(csv[0].map(String.init), SweepSummary.columns)
        XCTAssertEqual(csv[0].map(String.init), [
            "cell", "suite", "arch", "width", "mode", "form", "lambda", "lr", "steps", "head", "seed", "merge",
            "zero_shot", "finetuned", "merged_abs", "merged_norm", "retention", "alpha", "tau_norm", "mean_cosine",
            "mean_gram_deviation", "negation_target", "negation_control", "seconds",
        ])
        // The cell name has commas: quoted, so the row still has one field per column.
        XCTAssertTrue(SweepSummary(rows: rows).csv().contains("\"seed=1,form=l2,lambda=1\",tasks2,mlp,8,full,l2,1.0,0.001,10,probe,1,task_arithmetic,"))
    }

    func testGroupsAverageOverSeedsWithSampleStd() throws {
        let sweep = try parse("axes: {seed: [1, 2, 3]}")
        var rows: [SweepSummary.Row] = []
        for (cell, merged) in zip(sweep.cells, [0.80, 0.82, 0.84]) {
            rows += SweepSummary.rows(cell: cell.id, suite: "s", job: try config(cell),
                                      report: report(zeroShot: [0.7], finetuned: [0.9], merged: merged, cosine: 0))
        }
        let groups = SweepSummary(rows: rows).groups()
        XCTAssertEqual(groups.count, 1)
        XCTAssertEqual(groups[0].mean(\.mergedAbsolute), 0.82, accuracy: 1e-12)
        XCTAssertEqual(groups[0].std(\.mergedAbsolute), 0.02, accuracy: 1e-12)
        let page = SweepSummaryPage.html(SweepSummary(rows: rows), name: "s")
        XCTAssertTrue(page.contains("82.00 <span class=\"small\">± 2.00</span>"))
        XCTAssertTrue(SweepSummary(rows: rows).table().contains("82.00 ± 2.00"))
    }

    func testComparisonTableSetsRunsSideBySideWithRetention() {
        let without = report(zeroShot: [0.8, 0.6], finetuned: [0.9, 0.9], merged: 0.75, cosine: 0)
        let with = report(zeroShot: [0.8, 0.6], finetuned: [0.88, 0.86], merged: 0.79, cosine: 0)
        let lines = ComparisonTable.text([("without", without), ("with", with)]).split(separator: "\n").map(String.init)
        XCTAssertEqual(lines[0].split(separator: " ", omittingEmptySubsequences: true).prefix(4).joined(separator: " "),
                       "task zero-shot fine-tuned (without)")
        XCTAssertTrue(lines[0].contains("task_arithmetic (with)"))
        let mean = lines.first { $0.hasPrefix("mean (abs.)") }!.split(separator: " ").suffix(5).map(String.init)
        XCTAssertEqual(mean, ["70.00", "90.00", "87.00", "75.00", "79.00"])
        let retention = lines.first { $0.hasPrefix("retention") }!
        XCTAssertTrue(retention.contains("25.00 %") && retention.contains("52.94 %"), retention)
    }
}
