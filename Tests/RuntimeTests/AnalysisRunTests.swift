// AnalysisRunTests: a 4-task run with every analysis, negation and ξ; analyze, report and eval.
import Foundation
import XCTest
@testable import Coordinator
@testable import Core
@testable import Reporting
import TestSupport
import Transport

final class AnalysisRunTests: XCTestCase {
    private var workspace: SyntheticWorkspace!

    override func setUpWithError() throws {
        workspace = try syntheticWorkspace("analysis", taskCount: 4)
    }

    private func plan(output: String) throws -> JobPlan {
        try workspace.plan(workspace.jobText(
            output: output, steps: 30,
            extra: "evaluate: {negation: {targets: [task1, task3], control: task0, threshold: 0.9}, disentanglement: {samples: 50}}",
            disentanglement: true))
    }

    func testReportCarriesEveryAnalysisAndTheEvaluationsDoNotDependOnRanks() throws {
        let plan = try plan(output: "np3")
        XCTAssertEqual(plan.analysis.disentanglement?.pairs.count, 6, "every pair of 4 tasks")
        XCTAssertEqual(plan.analysis.negation?.targets, [1, 3])
        let report = try workspace.run(plan, ranks: 3)
        let single = try workspace.run(self.plan(output: "np1"), ranks: 1)
        XCTAssertEqual(report.negation, single.negation, "negation: same α and accuracies for any number of ranks")
        XCTAssertEqual(report.disentanglement?.pairs, single.disentanglement?.pairs, "ξ: same values for any number of ranks")

        // report.json: every field, by its documented key.
        let root = try XCTUnwrap(JSONSerialization.jsonObject(
            with: Data(contentsOf: workspace.directory.appendingPathComponent("np3/report.json"))) as? [String: Any])
        let names = workspace.taskNames
        let cosine = try XCTUnwrap(root["cosine_similarity"] as? [String: Any])
        XCTAssertEqual(cosine["tasks"] as? [String], names)
        XCTAssertEqual((cosine["matrix"] as? [[Double]])?.count, 4)
        let perLayer = try XCTUnwrap(root["cosine_similarity_per_layer"] as? [String: [[Double]]])
        XCTAssertEqual(Set(perLayer.keys), ["layers.0.weight", "layers.1.weight"])
        let penalty = try XCTUnwrap(root["orthoreg_penalty"] as? [String: [String: Double]])
        let spectra = try XCTUnwrap(root["singular_values"] as? [String: [String: [Double]]])
        XCTAssertNotNil((root["sign_conflict"] as? [String: Any])?["definition"] as? String)
        let negation = try XCTUnwrap(root["negation"] as? [String: Any])
        XCTAssertEqual((negation["results"] as? [[String: Any]])?.compactMap { $0["target"] as? String }, ["task1", "task3"])
        for key in ["alpha", "target_accuracy", "control_accuracy", "constraint_met", "curve"] {
            XCTAssertNotNil((negation["results"] as? [[String: Any]])?.first?[key], key)
        }
        let xi = try XCTUnwrap(root["disentanglement"] as? [String: Any])
        XCTAssertEqual((xi["pairs"] as? [[String: Any]])?.count, 6)
        XCTAssertNotNil(xi["seconds"] as? Double)
        XCTAssertEqual(xi["split"] as? String, "test")
        XCTAssertEqual(xi["inputs"] as? [String: Int], Dictionary(uniqueKeysWithValues: names.map { ($0, 50) }),
                       "a 50-input subset of each 80-input test split")

        // The analyses equal a recomputation from the saved task vectors (the numpy check's Swift twin).
        let vectors = try names.map { try workspace.values("np3/task_vectors/\($0).safetensors") }
        for (i, name) in names.enumerated() {
            for (tensor, shape) in [("layers.0.weight", [12, 16]), ("layers.1.weight", [8, 12])] {
                let expected = OrthoRegularizer.penalty(delta: vectors[i][tensor]!, rows: shape[0], columns: shape[1], form: .frobenius)
                XCTAssertEqual(penalty[name]?[tensor] ?? -1, expected, accuracy: 1e-9)
                XCTAssertEqual(spectra[name]?[tensor]?.count, shape.min(), "min(rows, columns) values when fewer than 32")
            }
            for j in names.indices {
                let a = vectors[i].keys.sorted().flatMap { vectors[i][$0]!.map(Double.init) }
                let b = vectors[j].keys.sorted().flatMap { vectors[j][$0]!.map(Double.init) }
                let dot = zip(a, b).map(*).reduce(0, +)
                let expected = dot / (a.map { $0 * $0 }.reduce(0, +).squareRoot() * b.map { $0 * $0 }.reduce(0, +).squareRoot())
                XCTAssertEqual(report.cosineSimilarity!.matrix[i][j], expected, accuracy: 1e-9)
            }
        }
        for pair in try XCTUnwrap(report.disentanglement).pairs {
            XCTAssertEqual(pair.error[0][0], 0, "ξ(0, 0) = 0")
            XCTAssertTrue(pair.error.joined().allSatisfy { $0 >= 0 && $0 <= 2 })
        }

        // report.html: every section.
        let html = try String(contentsOf: workspace.directory.appendingPathComponent("np3/report.html"), encoding: .utf8)
        for section in ReportPage.sections {
            XCTAssertTrue(html.contains("<section id=\"\(section.id)\">"), section.id)
        }

        // `analyze` recomputes the same analyses from the files; `report` rebuilds the page.
        let directory = RunDirectory(workspace.directory.appendingPathComponent("np3"))
        try FileManager.default.removeItem(at: directory.reportPage)
        let reanalyzed = try directory.reanalyze()
        XCTAssertEqual(reanalyzed.cosine, report.cosineSimilarity?.matrix)
        XCTAssertEqual(reanalyzed.gramDeviation, report.orthoRegPenaltyPerLayer)
        XCTAssertEqual(try directory.readReport(), report, "analyze leaves report.json as the run wrote it")
        XCTAssertTrue(FileManager.default.fileExists(atPath: directory.reportPage.path))
        XCTAssertEqual(try directory.writePage(), directory.reportPage)

        // `eval` of the merged model on 2 ranks gives the run's test accuracies of that merge.
        let rows = try InProcessWorld.run(size: 2) { communicator in
            try ModelEvaluation.run(plan: plan, model: directory.url.appendingPathComponent("merged/task_arithmetic.safetensors"),
                                    run: directory, communicator: communicator)
        }
        XCTAssertEqual(rows[0]?.map(\.accuracy), report.merges[0].perTask.map(\.accuracy))
        XCTAssertNil(rows[1], "rows on rank 0 only")
        let table = ModelEvaluation.table(try XCTUnwrap(rows[0]), model: "task_arithmetic")
        XCTAssertTrue(table.contains("normalised") && table.contains("task3"), table)
    }

    func testDisentanglementCanBeSwitchedOff() throws {
        let text = workspace.jobText(output: "off", steps: 5)
        let plan = try workspace.plan(text)
        XCTAssertNil(plan.analysis.disentanglement)
        XCTAssertNil(plan.analysis.negation)
        let report = try workspace.run(plan, ranks: 2)
        XCTAssertNil(report.disentanglement)
        XCTAssertNil(report.negation)
        XCTAssertNotNil(report.cosineSimilarity, "the task vector analyses always run")
    }
}
