// AnalysisConfigTests: `evaluate.negation` and `evaluate.disentanglement`: defaults, text, errors.
import Foundation
import XCTest
@testable import Core
@testable import JobSchema

final class AnalysisConfigTests: XCTestCase {
    private func job(evaluate: String?) -> String {
        """
        name: analyses
        model: {arch: mlp, input: [4], hidden: [3]}
        tasks:
          - {name: a, classes: 2, train: a.npz, test: a.npz}
          - {name: b, classes: 2, train: b.npz, test: b.npz}
          - {name: c, classes: 2, train: c.npz, test: c.npz}
        finetune: {steps: 1}
        output: out
        \(evaluate.map { "evaluate: \($0)" } ?? "")
        """
    }

    private func parse(_ evaluate: String?) throws -> JobConfig {
        try JobConfig.parse(job(evaluate: evaluate), origin: "job.yaml", baseDirectory: URL(fileURLWithPath: "/jobs"))
    }

    private func refusal(_ evaluate: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try parse(evaluate)
            XCTFail("accepted: \(evaluate)", file: file, line: line)
        } catch {
            return "\(error)"
        }
        return ""
    }

    func testDefaultsAndCanonicalText() throws {
        let defaults = try parse(nil)
        XCTAssertNil(defaults.evaluate.negation)
        XCTAssertTrue(defaults.evaluate.disentanglement.enabled)
        XCTAssertEqual(defaults.evaluate.disentanglement.grid.values, [0, 0.25, 0.5, 0.75, 1])
        XCTAssertEqual(defaults.evaluate.disentanglement.samples, 1000)
        XCTAssertEqual(defaults.evaluate.disentanglement.pairIndices(among: ["a", "b", "c"]).map { [$0.0, $0.1] },
                       [[0, 1], [0, 2], [1, 2]], "every pair in job order")

        let written = try parse("{negation: {targets: [c, a], control: b}, disentanglement: {pairs: [[c, a]], grid: {to: 2}, samples: 0}}")
        let negation = try XCTUnwrap(written.evaluate.negation)
        XCTAssertEqual(negation.threshold, 0.95)
        XCTAssertEqual(negation.targetNames(among: ["a", "b", "c"]), ["c", "a"])
        XCTAssertEqual(written.evaluate.disentanglement.grid, AlphaRange(from: 0, to: 2, count: 5), "ξ's own count default")
        XCTAssertEqual(written.evaluate.disentanglement.pairIndices(among: ["a", "b", "c"]).map { [$0.0, $0.1] }, [[2, 0]])
        XCTAssertEqual(written.evaluate.disentanglement.samples, 0, "0: every test input")
        let reread = try JobConfig.parse(written.canonicalYAML, origin: "copy", baseDirectory: URL(fileURLWithPath: "/"))
        XCTAssertEqual(reread, written)

        let all = try parse("{negation: {control: b, threshold: 0.8}}")
        XCTAssertEqual(all.evaluate.negation?.targetNames(among: ["a", "b", "c"]), ["a", "c"], "every task but the control")

        let off = try parse("{disentanglement: false}")
        XCTAssertFalse(off.evaluate.disentanglement.enabled)
        XCTAssertTrue(off.evaluate.disentanglement.pairIndices(among: ["a", "b"]).isEmpty)
        XCTAssertTrue(off.canonicalYAML.contains("disentanglement: false"), off.canonicalYAML)
        XCTAssertEqual(try JobConfig.parse(off.canonicalYAML, origin: "copy", baseDirectory: URL(fileURLWithPath: "/")), off)
    }

    func testErrorsNameTheKeyPath() {
        XCTAssertEqual(refusal("{negation: {control: z}}"),
                       "job.yaml: evaluate.negation.control: unknown task \"z\" (tasks: a, b, c)")
        XCTAssertEqual(refusal("{negation: {targets: [a, b], control: b}}"),
                       "job.yaml: evaluate.negation.targets[1]: b is the control; a task cannot be both")
        XCTAssertEqual(refusal("{negation: {targets: [a, a], control: b}}"), "job.yaml: evaluate.negation.targets[1]: a is listed twice")
        XCTAssertEqual(refusal("{negation: {control: a, threshold: 1.5}}"), "job.yaml: evaluate.negation.threshold: must be in (0, 1]")
        XCTAssertTrue(refusal("{negation: {control: a, treshold: 0.9}}")
            .hasPrefix("job.yaml: evaluate.negation.treshold: unknown key (allowed: targets, control, threshold)"))
        XCTAssertEqual(refusal("{negation: {targets: [a]}}"), "job.yaml: evaluate.negation.control: required")
        XCTAssertEqual(refusal("{disentanglement: {pairs: [[a, q]]}}"),
                       "job.yaml: evaluate.disentanglement.pairs[0][1]: unknown task \"q\" (tasks: a, b, c)")
        XCTAssertEqual(refusal("{disentanglement: {pairs: [[a, a]]}}"),
                       "job.yaml: evaluate.disentanglement.pairs[0]: must name two different tasks")
        XCTAssertEqual(refusal("{disentanglement: {pairs: [[a, b], [b, a]]}}"),
                       "job.yaml: evaluate.disentanglement.pairs[1]: the pair b, a is listed twice")
        XCTAssertTrue(refusal("{disentanglement: {grid: {step: 2}}}")
            .hasPrefix("job.yaml: evaluate.disentanglement.grid.step: unknown key (allowed: from, to, count)"))
        XCTAssertEqual(refusal("{disentanglement: {grid: {from: 1, to: 0}}}"),
                       "job.yaml: evaluate.disentanglement.grid.to: must be >= from (1.0)")
        XCTAssertEqual(refusal("{disentanglement: {grid: {count: 0}}}"), "job.yaml: evaluate.disentanglement.grid.count: must be > 0")
        XCTAssertEqual(refusal("{disentanglement: {samples: -1}}"), "job.yaml: evaluate.disentanglement.samples: must be >= 0")
        XCTAssertTrue(refusal("{disentanglement: 3}").hasPrefix("job.yaml: evaluate.disentanglement: expected true, false or {pairs, grid}"))
    }
}
