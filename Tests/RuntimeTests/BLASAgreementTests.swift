// BLASAgreementTests: every rank's kernel family gathered at a job's start, and the log line when
// ranks differ (task vectors would then depend on which rank trains which task).
import XCTest
@testable import Coordinator
import Transport

final class BLASAgreementTests: XCTestCase {
    func testGathersEveryRanksHostAndFamily() throws {
        let gathered = try InProcessWorld.run(size: 3) { communicator in
            try BLASAgreement.gather(communicator, core: communicator.rank == 2 ? "Haswell" : "SkylakeX",
                                     host: "node-\(communicator.rank)-" + String(repeating: "x", count: 80))
        }
        for ranks in gathered {
            XCTAssertEqual(ranks.map(\.core), ["SkylakeX", "SkylakeX", "Haswell"])
            XCTAssertEqual(ranks[1].host, "node-1-" + String(repeating: "x", count: 57), "host names are cut at 64 bytes")
        }
        let message = try XCTUnwrap(BLASAgreement.disagreement(gathered[0]))
        XCTAssertTrue(message.hasPrefix("ranks run different OpenBLAS kernels: SkylakeX on rank(s) 0, 1 ("), message)
        XCTAssertTrue(message.contains("; Haswell on rank(s) 2 (node-2-"), message)
        XCTAssertTrue(message.contains("export OPENBLAS_CORETYPE"), message)
        XCTAssertEqual(BLASAgreement.summary(gathered[0]), "SkylakeX (rank 0, 1), Haswell (rank 2)", "report.json's blas_core")
    }

    func testOneFamilyIsAgreement() {
        let ranks = (0..<4).map { BLASAgreement.Rank(host: "node\($0)", core: "SkylakeX") }
        XCTAssertNil(BLASAgreement.disagreement(ranks))
        XCTAssertEqual(BLASAgreement.summary(ranks), "SkylakeX")
        XCTAssertNil(BLASAgreement.disagreement([]))
    }
}
