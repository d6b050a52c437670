// MergeRecipeTests: the `orthofuse merge --config` file: its keys, paths and one-line errors.
import Foundation
import XCTest
@testable import Core
@testable import JobSchema

final class MergeRecipeTests: XCTestCase {
    private let directory = URL(fileURLWithPath: "/srv/merges", isDirectory: true)

    private func parse(_ yaml: String) throws -> MergeRecipe {
        try MergeRecipe.parse(yaml, origin: "merge.yaml", baseDirectory: directory)
    }

    private func refusal(_ yaml: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try parse(yaml)
            XCTFail("accepted:\n\(yaml)", file: file, line: line)
        } catch {
            let message = "\(error)"
            XCTAssertFalse(message.contains("\n"), "one line: \(message)", file: file, line: line)
            return message
        }
        return ""
    }

    func testEveryKeyIsRead() throws {
        let recipe = try parse("""
            method: breadcrumbs
            alpha: 1.5
            density: 0.3
            trim: per-tensor
            gamma: 0.05
            lambda: 0.5
            k: 3
            seed: 9
            common_fraction: 0.6
            base: models/base.safetensors
            models: [a.safetensors, /abs/b.safetensors]
            output: ../out/merged.safetensors
            dtype: bfloat16
            """)
        XCTAssertEqual(recipe.method, .breadcrumbs)
        XCTAssertEqual(recipe.dtype, .bfloat16)
        XCTAssertEqual(recipe.alpha, 1.5)
        XCTAssertEqual(recipe.density, 0.3)
        XCTAssertEqual(recipe.trim, .perTensor)
        XCTAssertEqual(recipe.gamma, 0.05)
        XCTAssertEqual(recipe.lambda, 0.5)
        XCTAssertEqual(recipe.k, 3)
        XCTAssertEqual(recipe.seed, 9)
        XCTAssertEqual(recipe.commonFraction, 0.6)
        XCTAssertEqual(recipe.writtenKnobs, MergeKnob.allCases)
        XCTAssertEqual(recipe.base?.url.path, "/srv/merges/models/base.safetensors")
        XCTAssertEqual(recipe.models?.map(\.url.path), ["/srv/merges/a.safetensors", "/abs/b.safetensors"])
        XCTAssertEqual(recipe.models?[0].label, "merge.yaml: models[0]")
        XCTAssertEqual(recipe.output?.url.path, "/srv/out/merged.safetensors")
    }

    func testEveryKeyIsOptional() throws {
        let recipe = try parse("method: tsv")
        XCTAssertEqual(recipe.method, .tsv)
        XCTAssertEqual(recipe.writtenKnobs, [])
        XCTAssertNil(recipe.models)
    }

    func testErrorsNameTheKey() {
        let cases: [(String, String)] = [
            ("method: ties\ndensty: 0.2",
             "merge.yaml: densty: unknown key (allowed: method, alpha, density, trim, gamma, lambda, k, seed, common_fraction, base, models, output, dtype)"),
            ("method: tie", "merge.yaml: method: expected one of average, task_arithmetic, ties, dare, dare_ties, breadcrumbs, tsv, consensus, iso_c, iso_cts, magmax, got \"tie\""),
            ("trim: local", "merge.yaml: trim: expected one of global, per-tensor, got \"local\""),
            ("density: 0", "merge.yaml: density: must be in (0, 1]"),
            ("gamma: 1", "merge.yaml: gamma: must be in [0, 1)"),
            ("lambda: -0.1", "merge.yaml: lambda: must be >= 0"),
            ("k: 0", "merge.yaml: k: must be > 0"),
            ("seed: -1", "merge.yaml: seed: must be >= 0"),
            ("alpha: .inf", "merge.yaml: alpha: must be a finite number"),
            ("models: []", "merge.yaml: models: must not be empty"),
            ("models: a.safetensors", "merge.yaml: models: expected a list, got \"a.safetensors\""),
            ("base: \"\"", "merge.yaml: base: must not be empty"),
            ("- ties", "merge.yaml: expected a mapping of merge settings, got a list"),
            ("", "merge.yaml: empty merge file"),
            ("dtype: int8", "merge.yaml: dtype: expected one of auto, float32, bfloat16, float16, got \"int8\""),
        ]
        for (yaml, expected) in cases {
            XCTAssertEqual(refusal(yaml), expected)
        }
    }

    func testLoadNamesAMissingFile() {
        XCTAssertThrowsError(try MergeRecipe.load(URL(fileURLWithPath: "/nonexistent/merge.yaml"), origin: "merge.yaml")) {
            XCTAssertEqual("\($0)", "merge.yaml: no such file")
        }
    }
}
