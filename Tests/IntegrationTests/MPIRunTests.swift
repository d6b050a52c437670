// MPIRunTests: the built `orthofuse` binary under real mpirun (and without it) on a synthetic job.
import Foundation
import XCTest
import Core
import JobSchema
import TestSupport

final class MPIRunTests: XCTestCase {
    private var directory: URL!
    private var taskNames: [String] = []

    private static var packageRoot: URL { BuiltProducts.packageRoot }
    private static var binary: URL { BuiltProducts.orthofuse }

    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary.path) else {
            throw OrthofuseError("orthofuse binary not built at \(Self.binary.path) (run `swift build --build-tests`)")
        }
        directory = try temporaryFolder("mpi")
        taskNames = try SyntheticTasks.write(to: directory)
    }

    /// Runs a command (through /usr/bin/env) in the test's folder, MPI's variables scrubbed.
    private func execute(_ arguments: [String], timeout: TimeInterval = 300) throws -> ProcessOutcome {
        try Subprocess.run(URL(fileURLWithPath: "/usr/bin/env"), arguments, in: directory, timeout: timeout)
    }

    private func launch(ranks: Int, _ arguments: [String]) throws -> ProcessOutcome {
        try execute([Self.packageRoot.appendingPathComponent("cluster/launch.sh").path, "-np", "\(ranks)", "--",
                     Self.binary.path] + arguments)
    }

    private func writeJob(_ name: String, output: String) throws -> String {
        let text = SyntheticTasks.jobYAML(taskNames: taskNames).replacingOccurrences(of: "output: out", with: "output: \(output)")
        try text.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        return directory.appendingPathComponent(name).path
    }

    private func tensors(_ path: String) throws -> [String: [Float]] {
        try tensorValues(at: directory.appendingPathComponent(path))
    }

    /// `launch.sh -np 3 --max-restarts N -- PROGRAM run JOB`: it must finish, its stderr saying each
    /// of `lines`.
    private func launchRestarting(_ program: URL, _ job: String, maxRestarts: Int, saying lines: [String],
                                  file: StaticString = #filePath, line: UInt = #line) throws {
        let outcome = try execute([Self.packageRoot.appendingPathComponent("cluster/launch.sh").path, "-np", "3",
                                   "--max-restarts", "\(maxRestarts)", "--", program.path, "run", job, "--quiet"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr, file: file, line: line)
        for expected in lines {
            XCTAssertTrue(outcome.stderr.contains(expected), "'\(expected)' in: \(outcome.stderr)", file: file, line: line)
        }
    }

    /// Starts a shell that, once the job writing into `output` has its first checkpoint, sends
    /// SIGUSR1 to the processes named `program` whose command line contains `text` (not the others
    /// that may run on the machine).
    private func sigusr1(to program: String, whoseCommandHas text: String, onceCheckpointed output: String) throws -> Process {
        let checkpoints = directory.appendingPathComponent("\(output)/checkpoints").path
        let signaller = Process()
        signaller.executableURL = URL(fileURLWithPath: "/bin/sh")
        signaller.arguments = ["-c", """
            while [ -z "$(ls '\(checkpoints)' 2>/dev/null)" ]; do sleep 0.02; done
            for p in $(pgrep -x \(program)); do
                if tr '\\0' ' ' < /proc/$p/cmdline | grep -q '\(text)'; then kill -USR1 $p; fi
            done
            """]
        try signaller.run()
        return signaller
    }

    /// Every task's vector in run folder `output` is bitwise the one in `reference`.
    private func assertSameTaskVectors(_ output: String, as reference: String, _ context: String,
                                       file: StaticString = #filePath, line: UInt = #line) throws {
        for name in taskNames {
            XCTAssertEqual(try tensors("\(output)/task_vectors/\(name).safetensors"),
                           try tensors("\(reference)/task_vectors/\(name).safetensors"), "\(name) \(context)",
                           file: file, line: line)
        }
    }

    func testSweepUnderMPIRunResumesAndOneCellReproducesItsRow() throws {
        _ = try writeJob("base.yaml", output: "unused")
        try """
            name: mpi-sweep
            job: base.yaml
            axes:
              finetune.orthoreg.form: [offdiagonal, l2]
              finetune.orthoreg.lambda: [0.5]
            """.write(to: directory.appendingPathComponent("sweep.yaml"), atomically: true, encoding: .utf8)
        let first = try launch(ranks: 2, ["sweep", "sweep.yaml", "--quiet"])
        XCTAssertEqual(first.status, 0, "sweep failed:\n\(first.stdout)\n\(first.stderr)")
        let csv = try String(contentsOf: directory.appendingPathComponent("runs/mpi-sweep/summary.csv"), encoding: .utf8)
        let rows = csv.split(separator: "\n").dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        XCTAssertEqual(rows.count, 2, csv)
        XCTAssertTrue(first.stdout.contains("retention"), "the summary table: \(first.stdout)")
        let listed = try execute([Self.binary.path, "sweep", "sweep.yaml", "--list"])
        XCTAssertEqual(listed.stdout, "finished  form=offdiagonal,lambda=0.5\nfinished  form=l2,lambda=0.5\n")
        // One process, one cell, elsewhere: the same merged accuracy as the sweep's row.
        let again = try execute([Self.binary.path, "sweep", "sweep.yaml", "--only", "form=l2,lambda=0.5", "--output", "again", "--quiet"])
        XCTAssertEqual(again.status, 0, "--only failed:\n\(again.stdout)\n\(again.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("again/report.json"))) as? [String: Any]
        let merged = ((report?["merges"] as? [[String: Any]])?.first?["absolute_accuracy"] as? Double) ?? -1
        // Columns: cell is quoted ("form=l2,lambda=0.5") and holds one comma, so merged_abs is field 15.
        let l2Row = try XCTUnwrap(rows.first { $0.first == "\"form=l2" })
        XCTAssertEqual(String(format: "%.6f", merged), String(l2Row[15]), "row \(l2Row)")
        let bad = try execute([Self.binary.path, "sweep", "sweep.yaml", "--only", "form=x"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
    }

    func testDemoIsATwoCellSweepWithoutAndWithOrthoReg() throws {
        let printed = try execute([Self.binary.path, "demo", "--print-job", "--orthoreg-form", "l2", "--orthoreg-lambda", "0.5"])
        XCTAssertEqual(printed.status, 0, printed.stderr)
        let sweep = try Sweep.parse(printed.stdout, origin: "demo", baseDirectory: directory)
        XCTAssertEqual(sweep.cells.map(\.id), ["orthoreg=without", "orthoreg=with"])
        let jobs = try sweep.cells.map { try JobConfig.parse($0.jobText(), origin: $0.id, baseDirectory: directory) }
        XCTAssertEqual(jobs.map(\.finetune.orthoreg.lambda), [0, 0.5])
        XCTAssertEqual(jobs[1].finetune.orthoreg.form, .l2)
        XCTAssertEqual(jobs[0].seed, jobs[1].seed, "both runs share θ0, heads and streams")
        let refused = try execute([Self.binary.path, "demo", "--orthoreg-form", "nope"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("--orthoreg-form must be one of frobenius, squared, offdiagonal, l2"), refused.stderr)
    }

    func testThreeRanksUnderMPIRunMatchOneProcessWithoutMPI() throws {
        let job3 = try writeJob("job3.yaml", output: "np3")
        let three = try launch(ranks: 3, ["run", job3])
        XCTAssertEqual(three.status, 0, "mpirun -np 3 failed:\n\(three.stdout)\n\(three.stderr)")
        // Rank 0 reports the workers' results; each rank keeps its own log in the run directory.
        XCTAssertTrue(three.stdout.contains("finished on rank 2"), "rank 2 did work:\n\(three.stdout)")
        let log = try String(contentsOf: directory.appendingPathComponent("np3/logs/rank-2.log"), encoding: .utf8)
        XCTAssertTrue(log.contains("[rank 2] task2: fine-tuned test accuracy"), log)
        XCTAssertTrue(three.stdout.contains("mean (norm.)"), "results table printed")
        XCTAssertFalse(three.stdout.contains("\u{1B}["), "output into a pipe: plain progress lines, no terminal redraws")

        let job1 = try writeJob("job1.yaml", output: "np1")
        let one = try execute([Self.binary.path, "run", job1])
        XCTAssertEqual(one.status, 0, "single process failed:\n\(one.stdout)\n\(one.stderr)")

        for file in ["base.safetensors", "report.json", "job.yaml", "merged/task_arithmetic.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: directory.appendingPathComponent("np3/\(file)").path), file)
        }
        for name in taskNames {
            XCTAssertEqual(try tensors("np3/task_vectors/\(name).safetensors"), try tensors("np1/task_vectors/\(name).safetensors"),
                           "task vector \(name): np=3 differs from np=1")
            XCTAssertEqual(try tensors("np3/heads/\(name).safetensors"), try tensors("np1/heads/\(name).safetensors"))
        }
        XCTAssertEqual(try tensors("np3/merged/task_arithmetic.safetensors"), try tensors("np1/merged/task_arithmetic.safetensors"))

        // merged = θ0 + α Σ τ at the reported α.
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("np3/report.json"))) as? [String: Any]
        let alpha = try XCTUnwrap(((report?["merges"] as? [[String: Any]])?.first?["alpha"]) as? Double)
        let base = try tensors("np3/base.safetensors")
        let merged = try tensors("np3/merged/task_arithmetic.safetensors")
        let vectors = try taskNames.map { try tensors("np3/task_vectors/\($0).safetensors") }
        for (name, values) in base {
            for i in values.indices {
                let expected = Double(values[i]) + alpha * vectors.map { Double($0[name]![i]) }.reduce(0, +)
                XCTAssertEqual(Double(merged[name]![i]), expected, accuracy: 1e-5 * max(1, abs(expected)), "\(name)[\(i)]")
            }
        }
    }

    /// More tasks than ranks (a queue) and more ranks than tasks (data-parallel groups) under real
    /// mpirun give the task vectors of one process.
    func testQueueAndDataParallelGroupsMatchOneProcess() throws {
        let fiveTasks = try SyntheticTasks.write(to: directory, taskCount: 5)
        func job(_ name: String, output: String, tasks: [String]) throws -> String {
            let text = SyntheticTasks.jobYAML(taskNames: tasks)
                .replacingOccurrences(of: "output: out", with: "output: \(output)")
                .replacingOccurrences(of: "  mode: full", with: "  mode: full\n  micro_batches: 4")
            try text.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
            return directory.appendingPathComponent(name).path
        }
        for (tasks, ranks, label) in [(fiveTasks, 2, "five"), (taskNames, 5, "three")] {
            let parallel = try launch(ranks: ranks, ["run", job("\(label)-np\(ranks).yaml", output: "\(label)-np\(ranks)", tasks: tasks)])
            XCTAssertEqual(parallel.status, 0, "\(tasks.count) tasks on \(ranks) ranks:\n\(parallel.stdout)\n\(parallel.stderr)")
            if ranks > tasks.count {
                XCTAssertTrue(parallel.stdout.contains("data-parallel groups (task→ranks): task0→0–1, task1→2–3, task2→4"), parallel.stdout)
            } else {
                XCTAssertTrue(parallel.stdout.contains("finished on rank 1"), parallel.stdout)
            }
            let single = try execute([Self.binary.path, "run", job("\(label)-np1.yaml", output: "\(label)-np1", tasks: tasks)])
            XCTAssertEqual(single.status, 0, single.stderr)
            for name in tasks {
                XCTAssertEqual(try tensors("\(label)-np\(ranks)/task_vectors/\(name).safetensors"),
                               try tensors("\(label)-np1/task_vectors/\(name).safetensors"),
                               "task vector \(name): \(tasks.count) tasks on \(ranks) ranks differ from one process")
            }
            XCTAssertEqual(try tensors("\(label)-np\(ranks)/merged/task_arithmetic.safetensors"),
                           try tensors("\(label)-np1/merged/task_arithmetic.safetensors"))
        }
    }

    /// A ViT job in attention-only mode with OrthoReg under mpirun: only the attention projection
    /// weights move, and the three ranks agree with one process.
    func testViTAttentionOnlyUnderMPIRun() throws {
        func job(_ output: String) throws -> String {
            let text = SyntheticTasks.jobYAML(taskNames: taskNames, orthoRegLambda: 2)
                .replacingOccurrences(of: "output: out", with: "output: \(output)")
                .replacingOccurrences(of: "model: {arch: mlp, input: [16], hidden: [12, 8], activation: gelu}",
                                      with: "model: {arch: vit, input: [1, 4, 4], patch: 2, width: 8, depth: 2, heads: 2}")
                .replacingOccurrences(of: "mode: full", with: "mode: attention")
            let path = directory.appendingPathComponent("\(output).yaml")
            try text.write(to: path, atomically: true, encoding: .utf8)
            return path.path
        }
        let three = try launch(ranks: 3, ["run", try job("vit3"), "--quiet"])
        XCTAssertEqual(three.status, 0, "mpirun -np 3 failed:\n\(three.stdout)\n\(three.stderr)")
        let one = try execute([Self.binary.path, "run", try job("vit1"), "--quiet"])
        XCTAssertEqual(one.status, 0, one.stderr)
        for name in taskNames {
            let vector = try tensors("vit3/task_vectors/\(name).safetensors")
            XCTAssertEqual(vector, try tensors("vit1/task_vectors/\(name).safetensors"), "\(name): np=3 differs from np=1")
            for (tensor, values) in vector {
                let attention = tensor.hasSuffix(".attn.qkv.weight") || tensor.hasSuffix(".attn.proj.weight")
                XCTAssertEqual(values.contains { $0 != 0 }, attention, "\(name) \(tensor)")
            }
        }
    }

    /// kill -9 of one rank mid-run ends the mpirun; the rerun resumes every task from its
    /// checkpoint and ends exactly where an uninterrupted run does.
    /// A synthetic job of `steps` steps that checkpoints every `every`, saved as OUTPUT.yaml.
    private func checkpointedJob(_ output: String, steps: Int, every: Int) throws -> String {
        let text = SyntheticTasks.jobYAML(taskNames: taskNames, steps: steps)
            .replacingOccurrences(of: "output: out", with: "output: \(output)")
            .replacingOccurrences(of: "  grad_clip: 1.0", with: "  grad_clip: 1.0\n  checkpoint_every: \(every)")
        let path = directory.appendingPathComponent("\(output).yaml")
        try text.write(to: path, atomically: true, encoding: .utf8)
        return path.path
    }

    func testKilledRankThenRerunResumes() throws {
        func job(_ output: String) throws -> String { try checkpointedJob(output, steps: 6000, every: 200) }
        let clean = try execute([Self.binary.path, "run", try job("clean"), "--quiet"])
        XCTAssertEqual(clean.status, 0, clean.stderr)

        let killedJob = try job("killed")
        let checkpoints = directory.appendingPathComponent("killed/checkpoints").path
        let killer = Process()
        killer.executableURL = URL(fileURLWithPath: "/bin/sh")
        // Once the first checkpoint exists (the job is mid-way: 6000 steps, one every 200), SIGKILL
        // rank 2 of this job (found by its environment; not mpirun itself).
        killer.arguments = ["-c", """
            while [ -z "$(ls '\(checkpoints)' 2>/dev/null)" ]; do sleep 0.02; done
            for p in $(pgrep -f '^\(Self.binary.path) run \(killedJob)'); do
                if tr '\\0' '\\n' < /proc/$p/environ | grep -qx 'OMPI_COMM_WORLD_RANK=2'; then kill -9 $p; fi
            done
            """]
        try killer.run()
        let killed = try launch(ranks: 3, ["run", killedJob, "--quiet"])
        killer.waitUntilExit()
        XCTAssertNotEqual(killed.status, 0, "the kill came mid-run")
        // Rank 2 died: one line says so, without mpirun's noise — rank 0's, or launch.sh's naming
        // the killed rank when mpirun ends rank 0 before its next MPI call notices (a race that
        // load decides).
        let lines = killed.stderr.split(separator: "\n").filter { !$0.isEmpty }
        XCTAssertEqual(lines.count, 1, "one line:\n\(killed.stderr)")
        XCTAssertTrue(killed.stderr.contains("orthofuse: error: the job was stopped")
                      || killed.stderr.contains("launch.sh: the job failed: rank 2 on host"), killed.stderr)

        let rerun = try launch(ranks: 3, ["run", killedJob, "--quiet"])
        XCTAssertEqual(rerun.status, 0, rerun.stderr)
        try assertSameTaskVectors("killed", as: "clean", "after resuming")
        let report = try JSONSerialization.jsonObject(
            with: Data(contentsOf: directory.appendingPathComponent("killed/report.json"))) as? [String: Any]
        let resumed = ((report?["tasks"] as? [[String: Any]]) ?? []).compactMap { $0["resumed_from_step"] as? Int }
        XCTAssertTrue(resumed.contains { $0 > 0 }, "some task resumed from a checkpoint: \(resumed)")
    }

    /// The program for mpirun: orthofuse, except that on the first attempt rank 1 sends itself
    /// `signal` once a checkpoint of the job writing into `output` exists.
    private func faultingOnce(signal: String, output: String) throws -> URL {
        let wrapper = directory.appendingPathComponent("\(signal)-once.sh")
        let marker = directory.appendingPathComponent("\(signal)-sent").path
        let checkpoints = directory.appendingPathComponent("\(output)/checkpoints").path
        try """
            #!/bin/sh
            if [ "$OMPI_COMM_WORLD_RANK" = 1 ] && [ ! -e '\(marker)' ]; then
                touch '\(marker)'
                ( while [ -z "$(ls '\(checkpoints)' 2>/dev/null)" ]; do sleep 0.02; done; kill -\(signal) $$ ) &
            fi
            exec '\(Self.binary.path)' "$@"
            """.write(to: wrapper, atomically: true, encoding: .utf8)
        XCTAssertEqual(chmod(wrapper.path, 0o755), 0)
        return wrapper
    }

    /// `launch.sh --max-restarts 1` and a rank that hangs once (SIGSTOP after the first checkpoint):
    /// rank 0's heartbeat check ends the job, the launcher names the cause and runs it again, and
    /// the job finishes where an uninterrupted run does.
    func testLauncherRestartsAfterAHungRank() throws {
        func job(_ output: String) throws -> String {
            try checkpointedJob(output, steps: 3000, every: 100)
        }
        let cleanJob = try job("steady")
        XCTAssertEqual(try execute([Self.binary.path, "run", cleanJob, "--quiet"]).status, 0)
        let hungJob = try job("hung")
        try (try String(contentsOfFile: hungJob, encoding: .utf8) + "runtime: {heartbeat_timeout: 3}\n")
            .write(toFile: hungJob, atomically: true, encoding: .utf8)
        let wrapper = try faultingOnce(signal: "STOP", output: "hung")
        try launchRestarting(wrapper, hungJob, maxRestarts: 1, saying: [
            "rank 1 sent nothing for", "launch.sh: rank 0 ended the job: a rank stopped sending heartbeats", "restarting (1 of 1)"])
        try assertSameTaskVectors("hung", as: "steady", "after the restart")
    }

    /// SIGUSR1 to mpirun, as Slurm's `--signal` or `scancel --signal=USR1` sends it before the time
    /// limit: mpirun forwards it, every training rank checkpoints after its current step, the job
    /// exits 75 with one line, and the rerun resumes from those checkpoints (not the periodic ones)
    /// and ends bitwise where an uninterrupted run does.
    func testSIGUSR1CheckpointsEveryTrainingRankAndTheRerunResumes() throws {
        let every = 1000
        func job(_ output: String) throws -> String { try checkpointedJob(output, steps: 6000, every: every) }
        let clean = try execute([Self.binary.path, "run", try job("straight"), "--quiet"])
        XCTAssertEqual(clean.status, 0, clean.stderr)

        let preemptedJob = try job("preempted")
        let signaller = try sigusr1(to: "mpirun", whoseCommandHas: preemptedJob, onceCheckpointed: "preempted")
        let preempted = try launch(ranks: 3, ["run", preemptedJob, "--quiet"])
        signaller.waitUntilExit()
        XCTAssertEqual(preempted.status, 75, "preempted:\n\(preempted.stderr)")
        let lines = preempted.stderr.split(separator: "\n").filter { !$0.isEmpty }
        XCTAssertEqual(lines.count, 1, "one line:\n\(preempted.stderr)")
        XCTAssertTrue(preempted.stderr.contains("orthofuse: the job was preempted (SIGUSR1)"), preempted.stderr)

        let rerun = try launch(ranks: 3, ["run", preemptedJob, "--quiet"])
        XCTAssertEqual(rerun.status, 0, rerun.stderr)
        try assertSameTaskVectors("preempted", as: "straight", "after the preemption")
        let report = try JSONSerialization.jsonObject(
            with: Data(contentsOf: directory.appendingPathComponent("preempted/report.json"))) as? [String: Any]
        let resumed = ((report?["tasks"] as? [[String: Any]]) ?? []).compactMap { $0["resumed_from_step"] as? Int }
        XCTAssertEqual(resumed.count, taskNames.count, "\(resumed)")
        XCTAssertTrue(resumed.contains { $0 > 0 && $0 % every != 0 }, "a task resumed from its preemption checkpoint: \(resumed)")
    }

    /// cluster/slurm.sbatch as Slurm runs it, with stand-ins for srun (mpirun on 2 ranks) and
    /// scontrol (records its arguments): SIGUSR1 to the batch script reaches the ranks, the job
    /// exits 75, the script requeues it, and the requeued run resumes from the preemption's
    /// checkpoints and finishes.
    func testSlurmScriptForwardsSIGUSR1AndRequeues() throws {
        let every = 1000
        let job = try checkpointedJob("slurm", steps: 6000, every: every)
        let bin = directory.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        let requeues = directory.appendingPathComponent("requeues").path
        let standIns = [
            "srun": """
                #!/bin/sh
                while [ "${1#--}" != "$1" ]; do shift; done   # srun's own options
                exec mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$@"
                """,
            "scontrol": "#!/bin/sh\necho \"$*\" >> '\(requeues)'\n",
        ]
        for (name, text) in standIns {
            try text.write(to: bin.appendingPathComponent(name), atomically: true, encoding: .utf8)
            XCTAssertEqual(chmod(bin.appendingPathComponent(name).path, 0o755), 0)
        }
        let script = Self.packageRoot.appendingPathComponent("cluster/slurm.sbatch").path
        let sbatch = ["SLURM_JOB_ID=42", "ORTHOFUSE=\(Self.binary.path)", "PATH=\(bin.path):\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")",
                      "bash", script, job]
        let signaller = try sigusr1(to: "bash", whoseCommandHas: "slurm.sbatch \(job)", onceCheckpointed: "slurm")
        let preempted = try execute(sbatch)
        signaller.waitUntilExit()
        XCTAssertEqual(preempted.status, 75, preempted.stderr)
        XCTAssertTrue(preempted.stderr.contains("orthofuse: the job was preempted (SIGUSR1)"), preempted.stderr)
        XCTAssertEqual(try String(contentsOfFile: requeues, encoding: .utf8), "requeue 42\n")

        let requeued = try execute(sbatch)
        XCTAssertEqual(requeued.status, 0, requeued.stderr)
        let report = try JSONSerialization.jsonObject(
            with: Data(contentsOf: directory.appendingPathComponent("slurm/report.json"))) as? [String: Any]
        let resumed = ((report?["tasks"] as? [[String: Any]]) ?? []).compactMap { $0["resumed_from_step"] as? Int }
        XCTAssertTrue(resumed.contains { $0 > 0 && $0 % every != 0 }, "resumed from the preemption's checkpoints: \(resumed)")
        XCTAssertEqual(try String(contentsOfFile: requeues, encoding: .utf8), "requeue 42\n", "a finished job is not requeued")
    }

    /// `launch.sh --max-restarts 2`: rank 1 is killed once, after the first checkpoint exists; the
    /// launcher names the cause, runs the job again, and it ends bitwise where an uninterrupted run does.
    func testLauncherRestartsAfterAKilledRankAndTheJobFinishes() throws {
        func job(_ output: String) throws -> String { try checkpointedJob(output, steps: 3000, every: 100) }
        let clean = try execute([Self.binary.path, "run", try job("uninterrupted"), "--quiet"])
        XCTAssertEqual(clean.status, 0, clean.stderr)
        // The program mpirun starts: on the first attempt rank 1 kills itself once a checkpoint exists.
        let wrapper = try faultingOnce(signal: "KILL", output: "restarted")
        try launchRestarting(wrapper, try job("restarted"), maxRestarts: 2, saying: [
            "launch.sh: rank 1 on host", "killed by signal 9", "restarting (1 of 2)"])
        try assertSameTaskVectors("restarted", as: "uninterrupted", "after the restart")
    }

    /// `merge.sharded: true` on 3 MPI ranks: the slices travel by MPI_Alltoallv, each rank writes
    /// its own task's files, and the merged files are bitwise those of an unsharded run on one
    /// rank, and θ0 + α·Δ with Δ merged here from the saved task vectors (bit for bit too, except
    /// TSV, whose SVDs ran with the OpenBLAS kernels the launcher chose, not this process's).
    func testShardedMergeUnderMPIRunEqualsUnshardedMerging() throws {
        func job(_ sharded: Bool) throws -> String {
            let text = SyntheticTasks.jobYAML(taskNames: taskNames)
                .replacingOccurrences(of: "output: out", with: "output: sharded-\(sharded)")
                .replacingOccurrences(of: "methods: [task_arithmetic]", with: """
                    methods: [task_arithmetic, ties, dare, tsv, {name: ties, trim: per-tensor}]
                      sharded: \(sharded)
                    """)
            let path = directory.appendingPathComponent("sharded-\(sharded).yaml")
            try text.write(to: path, atomically: true, encoding: .utf8)
            return path.path
        }
        let outcome = try launch(ranks: 3, ["run", try job(true)])
        XCTAssertEqual(outcome.status, 0, "mpirun -np 3 failed:\n\(outcome.stdout)\n\(outcome.stderr)")
        XCTAssertTrue(outcome.stdout.contains("merging sharded"), outcome.stdout)
        let gathered = try launch(ranks: 1, ["run", try job(false), "--quiet"])
        XCTAssertEqual(gathered.status, 0, "mpirun -np 1 failed:\n\(gathered.stdout)\n\(gathered.stderr)")

        let layout = MLPConfiguration(inputCount: 16, hidden: [12, 8], activation: .gelu).layout
        func buffer(_ file: String) throws -> FloatBuffer {
            let values = FloatBuffer(count: layout.totalCount)
            try layout.load(Safetensors.read(directory.appendingPathComponent("sharded-true/\(file)")), into: values, origin: file)
            return values
        }
        let base = try buffer("base.safetensors")
        let taskVectors = try taskNames.map { try buffer("task_vectors/\($0).safetensors") }
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("sharded-true/report.json")))
        let merges = try XCTUnwrap((report as? [String: Any])?["merges"] as? [[String: Any]])
        XCTAssertEqual(merges.count, 5)
        for merge in merges {
            let label = try XCTUnwrap(merge["label"] as? String)
            let file = try XCTUnwrap(merge["file"] as? String)
            XCTAssertEqual(try tensors("sharded-true/\(file)"), try tensors("sharded-false/\(file)"), label)
            if label == "tsv" { continue }
            let alpha = try XCTUnwrap(merge["alpha"] as? Double)
            let settings = label == "ties-2"
                ? MergeSettings(method: .ties, trim: .perTensor) : MergeSettings(method: try XCTUnwrap(MergeMethodName(rawValue: label)))
            let delta = try TaskVectorMerger.mergedTaskVector(taskVectors, layout: layout, settings: settings)
            let expected = FloatBuffer(count: layout.totalCount)
            TaskArithmetic.merge(base: base, taskVectorSum: delta, alpha: Float(alpha), into: expected)
            XCTAssertEqual(try buffer(file).array.map(\.bitPattern), expected.array.map(\.bitPattern), label)
        }
    }

    func testBadJobIsOneErrorLineAndNonZeroExit() throws {
        let path = directory.appendingPathComponent("bad.yaml")
        try SyntheticTasks.jobYAML(taskNames: taskNames).replacingOccurrences(of: "steps: 40", with: "stepz: 40")
            .write(to: path, atomically: true, encoding: .utf8)
        let outcome = try launch(ranks: 2, ["run", path.path])
        XCTAssertNotEqual(outcome.status, 0)
        let errorLines = outcome.stderr.split(separator: "\n").filter { $0.contains("orthofuse: error:") }
        XCTAssertEqual(errorLines.count, 1, "exactly one error line from rank 0:\n\(outcome.stderr)")
        XCTAssertTrue(errorLines.first?.contains("stepz") ?? false, outcome.stderr)
        XCTAssertEqual(outcome.stderr.split(separator: "\n").filter { !$0.isEmpty }.count, 1,
                       "no MPI noise besides it:\n\(outcome.stderr)")

        let missing = try execute([Self.binary.path, "run", directory.appendingPathComponent("nope.yaml").path])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("nope.yaml"), missing.stderr)
    }

    func testDoctorChecksCollectivesOnEveryRank() throws {
        let outcome = try launch(ranks: 3, ["doctor"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertTrue(outcome.stdout.contains("ranks: 3"), outcome.stdout)
        XCTAssertFalse(outcome.stdout.contains("FAIL"), outcome.stdout)
    }
}

