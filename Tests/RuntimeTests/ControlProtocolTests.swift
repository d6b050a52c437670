// ControlProtocolTests: every control message round-trips through protobuf-c; malformed input,
// another protocol version, another binary version and another job are refused clearly.
import Foundation
import XCTest
@testable import Coordinator
import ControlProtocol
import Core
import JobSchema
import TestSupport
import Transport

final class ControlProtocolTests: XCTestCase {
    func testEveryMessageRoundTrips() throws {
        let messages: [ControlMessage] = [
            .job(.init(binaryVersion: "0.1.0", configHash: String(repeating: "ab", count: 32),
                       jobText: "name: é ∑\nseed: 1\n", baseDirectory: "/tmp/x", origin: "job.yaml", worldSize: 3)),
            .assignment(tasks: ["mnist", "digits", ""], rank: 1),
            .assignment(tasks: [], rank: 0),
            .progress(.init(task: "mnist", step: 10, steps: 100, loss: 0.25, orthoReg: 3.5, samplesPerSecond: 1e4)),
            .result(.init(task: "mnist", zeroShotAccuracy: 0.9, finetunedAccuracy: 0.97,
                          taskVectorSHA256: "00", resumedFromStep: 7, taskVectorFileSHA256: "ab", headFileSHA256: "cd",
                          finalLoss: 0.125, trainSeconds: 3.5)),
            .failure(task: "", reason: "line with \"quotes\"", rank: 4),
            .shutdown(success: true), .shutdown(success: false),
        ]
        for message in messages {
            XCTAssertEqual(try ControlMessage.decode(message.encoded(), from: "test"), message)
        }
    }

    func testMalformedAndForeignMessagesAreRefused() {
        func refused(_ bytes: [UInt8], _ expected: String, line: UInt = #line) {
            XCTAssertThrowsError(try ControlMessage.decode(bytes, from: "rank 3"), line: line) { error in
                XCTAssertTrue("\(error)".hasPrefix("rank 3: ") && "\(error)".contains(expected), "\(error)", line: line)
            }
        }
        refused([0xff, 0xff, 0xff], "malformed")
        refused(Array(ControlMessage.shutdown(success: true).encoded().dropLast()), "malformed")
        var wrongVersion = ControlMessage.shutdown(success: true).encoded()
        XCTAssertEqual(wrongVersion[0], 0x08, "field 1, varint")
        wrongVersion[1] = 0x02
        refused(wrongVersion, "control protocol version 2")
        refused([0x08, 0x01], "without a known body")
        refused([UInt8](repeating: 0, count: ControlMessage.maximumSize + 1), "exceeds")
        // Random bytes never crash the decoder.
        var random = RandomStream(seed: 3)
        for length in 0..<300 {
            let bytes = (0..<length).map { _ in UInt8(random.nextInt(below: 256)) }
            _ = try? ControlMessage.decode(bytes, from: "fuzz")
        }
    }

    func testRanksRefuseAnotherBinaryVersionOrAnotherJob() throws {
        let workspace = try syntheticWorkspace("announce")
        let source = JobAnnouncer.Source(text: workspace.jobText(output: "out"), origin: "job.yaml",
                                         baseDirectory: workspace.directory)
        // Same binary and job everywhere: every rank gets the plan.
        let plans = try InProcessWorld.run(size: 3) { communicator in
            try JobAnnouncer.announce(source, communicator: communicator).name
        }
        XCTAssertEqual(plans, ["synthetic", "synthetic", "synthetic"])

        XCTAssertThrowsError(try InProcessWorld.run(size: 3) { communicator in
            try JobAnnouncer.announce(source, communicator: communicator,
                                      binaryVersion: communicator.rank == 2 ? "9.9.9" : JobRunner.version).name
        }) { error in
            XCTAssertTrue("\(error)".contains("rank 2 runs orthofuse 9.9.9, rank 0 runs \(JobRunner.version)"), "\(error)")
        }
        XCTAssertThrowsError(try InProcessWorld.run(size: 2) { communicator in
            try JobAnnouncer.announce(source, communicator: communicator,
                                      configHash: { communicator.rank == 1 ? "stale" : $0.configHash }).name
        }) { error in
            XCTAssertTrue("\(error)".contains("rank 1 reads the job as configuration stale"), "\(error)")
        }
        let broken = JobAnnouncer.Source(text: "name: x\nstepz: 1\n", origin: "bad.yaml", baseDirectory: workspace.directory)
        XCTAssertThrowsError(try InProcessWorld.run(size: 2) { communicator in
            try JobAnnouncer.announce(broken, communicator: communicator).name
        }) { error in
            XCTAssertTrue("\(error)".hasPrefix("bad.yaml"), "rank 0 reports the job's own error: \(error)")
        }
    }

    func testConfigHashIsTheSHA256OfTheCanonicalJob() throws {
        let workspace = try syntheticWorkspace("hash")
        let config = try JobConfig.parse(workspace.jobText(output: "out"), origin: "job.yaml", baseDirectory: workspace.directory)
        XCTAssertEqual(config.configHash.count, 64)
        XCTAssertEqual(config.configHash, Checksum.sha256(config.canonicalYAML))
        XCTAssertEqual(Checksum.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }
}
