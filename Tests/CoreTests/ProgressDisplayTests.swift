// ProgressDisplayTests: the live progress rows (pace and ETA) and the per-rank log file.
import Foundation
import XCTest
@testable import Core
@testable import Reporting
import TestSupport

final class ProgressDisplayTests: XCTestCase {
    func testETAIsMeasuredFromTheFirstStepSeen() {
        let start = Date(timeIntervalSince1970: 1000)
        func row(_ step: Int, at seconds: Double) -> ProgressDisplay.Row {
            ProgressDisplay.Row(task: "mnist", rank: 2, step: step, steps: 1000, loss: 0.5, orthoReg: 1.25,
                                samplesPerSecond: 640, updated: start.addingTimeInterval(seconds))
        }
        // The first report arrives after 100 s of data loading, at step 10; then 10 steps per second.
        let first = ProgressDisplay.advance(nil, to: row(10, at: 100))
        XCTAssertNil(first.eta, "no pace yet")
        let later = ProgressDisplay.advance(first, to: row(110, at: 110))
        XCTAssertEqual(try XCTUnwrap(later.eta), 89, accuracy: 1e-9, "890 steps left at 10 steps/s")
        XCTAssertEqual(ProgressDisplay.advance(later, to: row(1000, at: 199)).eta, 0)
        XCTAssertTrue(later.text.hasPrefix("mnist (rank 2)  step 110/1000  loss 0.5000  orthoreg 1.2500  640 samples/s  ETA 1m29s"),
                      later.text)
        XCTAssertEqual(ProgressDisplay.duration(7384), "2h03m")
        XCTAssertEqual(ProgressDisplay.duration(59.6), "1m00s")
        XCTAssertEqual(ProgressDisplay.duration(5), "5s")
    }

    func testRankLogsAppendTimeStampedLines() throws {
        let directory = try temporaryFolder("log").appendingPathComponent("logs")
        do {
            let console = Console(rank: 1, size: 3, level: .quiet, log: RunLog(directory: directory, rank: 1))
            XCTAssertFalse(FileManager.default.fileExists(atPath: directory.path), "nothing written before the first line")
            console.info("first")
            console.verbose("detail")
        }
        let again = Console(rank: 1, size: 3, level: .quiet, log: RunLog(directory: directory, rank: 1))
        again.info("after a rerun")
        let lines = try String(contentsOf: directory.appendingPathComponent("rank-1.log"), encoding: .utf8)
            .split(separator: "\n")
        XCTAssertEqual(lines.map { $0.split(separator: " ", maxSplits: 1).last.map(String.init) ?? "" },
                       ["[rank 1] first", "[rank 1] detail", "[rank 1] after a rerun"], "every level reaches the log, in order")
        XCTAssertTrue(lines.allSatisfy { $0.first == "2" && $0.contains("T") && $0.contains("Z ") }, "UTC time stamps: \(lines)")
    }
}
