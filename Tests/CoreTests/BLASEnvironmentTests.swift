// BLASEnvironmentTests: the kernel family chosen from CPU flags (Intel and AMD alike), and the
// check that refuses a family the CPU cannot run.
import XCTest
@testable import Core

final class BLASEnvironmentTests: XCTestCase {
    private let avx2: Set<String> = ["sse4_2", "avx", "avx2", "fma"]
    private var avx512: Set<String> { avx2.union(["avx512f", "avx512bw", "avx512vl", "avx512dq"]) }

    func testFamilyFollowsTheInstructionSets() {
        XCTAssertEqual(BLASEnvironment.coreType(forFlags: avx512), "SkylakeX")
        XCTAssertEqual(BLASEnvironment.coreType(forFlags: avx2), "Haswell")
        XCTAssertEqual(BLASEnvironment.coreType(forFlags: avx512.subtracting(["avx512dq"])), "Haswell",
                       "AVX-512 without DQ takes the AVX2 kernels")
        XCTAssertNil(BLASEnvironment.coreType(forFlags: ["sse4_2", "avx"]), "older CPUs keep OpenBLAS's own choice")
    }

    func testRefusesAFamilyTheCPULacks() {
        XCTAssertEqual(BLASEnvironment.missingFeatures(coreType: "SkylakeX", flags: avx2),
                       ["avx512f", "avx512bw", "avx512vl", "avx512dq"])
        XCTAssertEqual(BLASEnvironment.missingFeatures(coreType: "cooperlake", flags: avx512), ["avx512_bf16"],
                       "names compare without case")
        XCTAssertEqual(BLASEnvironment.missingFeatures(coreType: "Haswell", flags: avx512), [])
        XCTAssertEqual(BLASEnvironment.missingFeatures(coreType: "SomeFutureCore", flags: avx2), [],
                       "a family the table does not know is left to OpenBLAS")
        let message = BLASEnvironment.unsupportedMessage(coreType: "SkylakeX", flags: avx2)
        XCTAssertNotNil(message)
        XCTAssertTrue(message?.hasPrefix("OPENBLAS_CORETYPE=SkylakeX needs avx512f, avx512bw, avx512vl, avx512dq") ?? false,
                      message ?? "")
        XCTAssertTrue(message?.contains("set it to Haswell (this CPU's family) or unset it") ?? false, message ?? "")
        XCTAssertNil(BLASEnvironment.unsupportedMessage(coreType: "Haswell", flags: avx2))
    }
}
