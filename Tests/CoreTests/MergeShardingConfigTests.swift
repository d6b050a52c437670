// MergeShardingConfigTests: `merge.sharded` (true | false | auto) decodes strictly and round-trips
// through the canonical job text.
import Foundation
import XCTest
@testable import Core
@testable import JobSchema

final class MergeShardingConfigTests: XCTestCase {
    private let directory = URL(fileURLWithPath: "/srv/jobs", isDirectory: true)

    private func job(_ merge: String?) -> String {
        """
        name: q
        model: {arch: mlp, input: [784], hidden: [64]}
        tasks:
          - {name: mnist, classes: 10, train: data/mnist/train.npz, test: data/mnist/test.npz}
        finetune: {steps: 10}
        \(merge.map { "merge: \($0)" } ?? "")
        output: runs/q
        """
    }

    private func parse(_ merge: String?) throws -> JobConfig {
        try JobConfig.parse(job(merge), origin: "job.yaml", baseDirectory: directory)
    }

    func testValuesAndDefault() throws {
        XCTAssertEqual(try parse(nil).merge.sharded, .auto)
        XCTAssertEqual(try parse("{sharded: auto}").merge.sharded, .auto)
        XCTAssertEqual(try parse("{sharded: }").merge.sharded, .auto, "an empty value is the default")
        XCTAssertEqual(try parse("{sharded: true}").merge.sharded, .on)
        XCTAssertEqual(try parse("{sharded: false}").merge.sharded, .off)
        XCTAssertEqual(try parse("{sharded: auto}").canonicalYAML, try parse(nil).canonicalYAML)
    }

    func testCanonicalTextRoundTrips() throws {
        for value in ["true", "false", "auto"] {
            let config = try parse("{sharded: \(value)}")
            XCTAssertTrue(config.canonicalYAML.contains("sharded: \(value)\n"), config.canonicalYAML)
            let reread = try JobConfig.parse(config.canonicalYAML, origin: "copy.yaml", baseDirectory: directory)
            XCTAssertEqual(reread, config)
            XCTAssertEqual(reread.canonicalYAML, config.canonicalYAML)
        }
    }

    func testBadValuesNameTheKey() {
        for (value, written) in [("maybe", "\"maybe\""), ("2", "2"), ("[true]", "a list")] {
            XCTAssertThrowsError(try parse("{sharded: \(value)}")) { error in
                XCTAssertEqual("\(error)", "job.yaml: merge.sharded: expected true, false or auto, got \(written)")
            }
        }
        XCTAssertThrowsError(try parse("{shardd: true}")) { error in
            XCTAssertEqual("\(error)", "job.yaml: merge.shardd: unknown key (allowed: methods, alpha, sharded)")
        }
    }
}
