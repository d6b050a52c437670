// MergeMethodsRunTests: a job with several merge methods reports each one, and each merged file is
// θ0 + α·Δ(method) recomputed here from the saved task vectors.
import Foundation
import XCTest
@testable import Coordinator
@testable import Core
@testable import JobSchema
@testable import Reporting
import TestSupport

final class MergeMethodsRunTests: XCTestCase {
    private var workspace: SyntheticWorkspace!

    override func setUpWithError() throws {
        workspace = try syntheticWorkspace("methods")
    }

    func testEveryMethodIsReportedAndItsFileIsBasePlusAlphaDelta() throws {
        let methods = """
            methods:
                - task_arithmetic
                - ties
                - dare_ties
                - tsv
                - consensus
                - {name: ties, density: 0.5, trim: per-tensor, alpha: {from: 0.8, to: 2.5, count: 4}}
            """
        let text = workspace.jobText(output: "out") {
            $0.replacingOccurrences(of: "methods: [task_arithmetic]", with: methods)
        }
        let plan = try workspace.plan(text)
        XCTAssertEqual(plan.merges.map(\.label), ["task_arithmetic", "ties", "dare_ties", "tsv", "consensus", "ties-2"])
        XCTAssertEqual(plan.merges[5].alphaGrid, AlphaRange(from: 0.8, to: 2.5, count: 4).values, "its own grid")
        XCTAssertEqual(plan.merges[1].alphaGrid, AlphaRange(from: 0.2, to: 1, count: 9).values, "the job's grid by default")

        let report = try workspace.run(plan, ranks: 3)
        XCTAssertEqual(report.merges.map(\.label), plan.merges.map(\.label))
        XCTAssertEqual(report.merges.map(\.method), ["task_arithmetic", "ties", "dare_ties", "tsv", "consensus", "ties"])

        let layout = plan.model.layout
        func buffer(_ path: String) throws -> FloatBuffer {
            let values = FloatBuffer(count: layout.totalCount)
            try layout.load(workspace.read(path), into: values, origin: path)
            return values
        }
        let base = try buffer("out/base.safetensors")
        let taskVectors = try workspace.taskNames.map { try buffer("out/task_vectors/\($0).safetensors") }
        var deltas: [[Float]] = []
        for (merge, entry) in zip(plan.merges, report.merges) {
            XCTAssertEqual(entry.file, "merged/\(merge.label).safetensors")
            XCTAssertTrue(merge.alphaGrid.contains(entry.alpha), "\(merge.label): α from its grid")
            XCTAssertEqual(entry.alphaCurve.map(\.alpha), merge.alphaGrid)
            XCTAssertEqual(entry.settings, merge.settings.reportKnobs)

            let delta = try TaskVectorMerger.mergedTaskVector(taskVectors, layout: layout, settings: merge.settings)
            deltas.append(delta.array)
            let file = try workspace.read("out/\(entry.file)")
            let merged = FloatBuffer(count: layout.totalCount)
            try layout.load(file, into: merged, origin: entry.file)
            var worst = 0.0
            for i in 0..<layout.totalCount {
                let expected = Double(base[i]) + entry.alpha * Double(delta[i])
                worst = max(worst, abs(Double(merged[i]) - expected) / max(1, abs(expected)))
            }
            XCTAssertLessThan(worst, 1e-6, "\(merge.label): merged ≠ θ0 + α·Δ (worst relative error \(worst))")

            XCTAssertEqual(file.metadata["orthofuse.kind"], "merged")
            XCTAssertEqual(file.metadata["orthofuse.method"], merge.settings.method.rawValue)
            XCTAssertEqual(file.metadata["orthofuse.label"], merge.label)
            XCTAssertEqual(file.metadata["orthofuse.alpha"], "\(entry.alpha)")
            for (knob, value) in merge.settings.knobValues {
                XCTAssertEqual(file.metadata[knob.metadataKey], value, "\(merge.label): \(knob)")
            }
        }
        XCTAssertNotEqual(deltas[0], deltas[1], "ties is not task arithmetic")
        XCTAssertNotEqual(deltas[1], deltas[5], "the two ties entries differ")

        // Every rank computes the same Δ: one rank gives the same files and accuracies as three.
        let single = try workspace.run(workspace.plan(text.replacingOccurrences(of: "output: out", with: "output: np1")), ranks: 1)
        XCTAssertEqual(single.merges.map(\.alpha), report.merges.map(\.alpha))
        XCTAssertEqual(single.merges.map(\.perTask), report.merges.map(\.perTask))
        for entry in report.merges {
            XCTAssertEqual(try workspace.values("np1/\(entry.file)"), try workspace.values("out/\(entry.file)"), entry.label)
        }

        // report.json carries each merge's knobs.
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: workspace.directory.appendingPathComponent("out/report.json")))
        let merges = try XCTUnwrap((json as? [String: Any])?["merges"] as? [[String: Any]])
        XCTAssertEqual(merges.map { $0["label"] as? String }, plan.merges.map(\.label))
        let ties = try XCTUnwrap(merges[5]["settings"] as? [String: Any])
        XCTAssertEqual(ties["density"] as? Double, 0.5)
        XCTAssertEqual(ties["trim"] as? String, "per-tensor")
        XCTAssertNil(ties["k"], "only the knobs ties reads")
        let consensus = try XCTUnwrap(merges[4]["settings"] as? [String: Any])
        XCTAssertEqual(consensus["k"] as? Int, MergeSettings(method: .consensus).consensusK)
        XCTAssertEqual((merges[0]["settings"] as? [String: Any])?.count, 0, "task arithmetic has no knobs")
    }
}
