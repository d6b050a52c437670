// MultiHostTests: a job across three simulated hosts (network namespaces, TCP only), and a cut
// link mid-run: the run fails, the link comes back, the rerun resumes and equals a clean run.
// Needs root (namespaces); skipped otherwise.
import Foundation
import XCTest
import Core
import TestSupport

final class MultiHostTests: XCTestCase {
    private static var root: URL { BuiltProducts.packageRoot }
    private var workspace: SyntheticWorkspace!

    private static var binary: URL { BuiltProducts.orthofuse }

    override func setUpWithError() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
                || FileManager.default.isExecutableFile(atPath: "/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/usr/bin/ip")
        else { throw XCTSkip("simulated hosts need root and iproute2") }
        workspace = try SyntheticWorkspace(label: "hosts")
        _ = try hosts(["down", "3"])
        let up = try hosts(["up", "3"])
        XCTAssertEqual(up.status, 0, up.output)
    }

    override func tearDownWithError() throws {
        // Explicitly after `down`, which runs in the workspace (teardown blocks would run first).
        _ = try? hosts(["down", "3"])
        workspace?.remove()
    }

    /// Runs cluster/netns-hosts.sh with `arguments` under a time limit; `during` runs
    /// while it is going (to cut a link). Its output is stdout then stderr.
    @discardableResult
    private func hosts(_ arguments: [String], timeout: Int = 120, during: (() throws -> Void)? = nil) throws -> (status: Int32, output: String) {
        let outcome = try Subprocess.run(URL(fileURLWithPath: "/usr/bin/timeout"),
                                         ["-k", "5", "\(timeout)", Self.root.appendingPathComponent("cluster/netns-hosts.sh").path] + arguments,
                                         in: workspace.directory, timeout: TimeInterval(timeout + 30), during: during)
        return (outcome.status, outcome.stdout + outcome.stderr)
    }

    private func job(_ output: String, steps: Int) throws -> String {
        let text = workspace.jobText(output: output, steps: steps, extra: "") {
            $0.replacingOccurrences(of: "  grad_clip: 1.0", with: "  grad_clip: 1.0\n  checkpoint_every: 200")
        }
        let path = workspace.directory.appendingPathComponent("\(output).yaml")
        try text.write(to: path, atomically: true, encoding: .utf8)
        return path.path
    }

    func testThreeHostsAndACutLink() throws {
        let steps = 6000
        // Reference: one process, no MPI.
        let reference = try Subprocess.run(Self.binary, ["run", try job("single", steps: steps), "--quiet"])
        XCTAssertEqual(reference.status, 0, reference.stderr)

        // Three hosts over TCP: the same task vectors.
        let clean = try hosts(["run", "3", "--", Self.binary.path, "run", try job("hosts", steps: steps), "--quiet"])
        XCTAssertEqual(clean.status, 0, clean.output)
        for task in workspace.taskNames {
            XCTAssertEqual(try workspace.values("hosts/task_vectors/\(task).safetensors"),
                           try workspace.values("single/task_vectors/\(task).safetensors"), "\(task) across hosts")
        }

        // Cut host 3's link while the job runs: the run ends (no hang) with a non-zero status and
        // the launcher names the lost host connection.
        let cutJob = try job("cut", steps: steps)
        // The cut comes once the first checkpoint exists (6000 steps, one every 200): mid-run.
        let checkpoints = workspace.directory.appendingPathComponent("cut/checkpoints").path
        let cut = try hosts(["run", "3", "--", Self.binary.path, "run", cutJob, "--quiet"], timeout: 90) {
            let deadline = Date().addingTimeInterval(60)
            while ((try? FileManager.default.contentsOfDirectory(atPath: checkpoints)) ?? []).isEmpty, Date() < deadline {
                Thread.sleep(forTimeInterval: 0.02)
            }
            _ = try self.hostsNow(["cut", "3"])
        }
        _ = try hostsNow(["restore", "3"])
        XCTAssertNotEqual(cut.status, 0, "the link was cut mid-run")
        XCTAssertTrue(cut.output.lowercased().contains("lost communication") || cut.output.contains("orthofuse: error"),
                      "the failure is named:\n\(cut.output)")

        // Rerun after restoring the link: resumes from checkpoints, ends equal to the clean run.
        let rerun = try hosts(["run", "3", "--", Self.binary.path, "run", cutJob, "--quiet"])
        XCTAssertEqual(rerun.status, 0, rerun.output)
        for task in workspace.taskNames {
            XCTAssertEqual(try workspace.values("cut/task_vectors/\(task).safetensors"),
                           try workspace.values("single/task_vectors/\(task).safetensors"), "\(task) after the resumed rerun")
        }
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: workspace.directory.appendingPathComponent("cut/report.json"))) as? [String: Any]
        let resumed = ((report?["tasks"] as? [[String: Any]]) ?? []).compactMap { $0["resumed_from_step"] as? Int }
        print("resumed from steps \(resumed)")
        XCTAssertEqual(resumed.count, workspace.taskNames.count)
        XCTAssertEqual(try workspace.values("cut/merged/task_arithmetic.safetensors"),
                       try workspace.values("single/merged/task_arithmetic.safetensors"))
    }

    /// A quick netns-hosts.sh call (cut/restore) while another one is running.
    private func hostsNow(_ arguments: [String]) throws -> Int32 {
        try Subprocess.run(Self.root.appendingPathComponent("cluster/netns-hosts.sh"), arguments, timeout: 60).status
    }
}
