// JobRunner: the SPMD program of `orthofuse run`, executed by every rank.
//
// The coordinator/worker protocol, step by step (R ranks, T tasks; rank 0 is the coordinator):
//  1. Job.     Rank 0 has parsed and checked the job (every named file exists) before this
//              runs; the caller broadcasts the job text so all ranks execute the same plan.
//  1b. Output. Rank 0 opens output/manifest.json: a directory holding another job's results
//              (other training settings, or a task of the same name with other data) is refused.
//  2. θ0.      Rank 0 loads `base:`, or pre-trains (`pretrain:`; cached in output/base.safetensors
//              and reused when its fingerprint matches), or makes the seeded initialisation;
//              then broadcasts θ0 as raw floats. Every rank holds the same θ0, bit for bit.
//              Rank 0 checks θ0 and each recorded task's files (SHA-256) against the manifest and
//              broadcasts which tasks are already finished: those are read back, not retrained.
//  3–4. Train. TaskScheduler.swift: a dynamic queue on rank 0 (Assignment / Progress / TaskResult /
//              Failure messages; longest task first; heartbeat timeout) when tasks ≥ training
//              ranks, else one data-parallel group per task (MPI_Comm_split; micro-batch-ordered
//              gradient reduction, bitwise the one-rank result). Each task's random streams derive
//              from (seed, task name), so its result depends on neither rank nor order. Each owner
//              writes its task vector and head when the task finishes; rank 0 records them in the
//              manifest. A failed task ends the job (`on_task_failure: abort`, one line from
//              rank 0) or is left out of what follows (`skip`).
//  5. Gather.  allGather of each rank's [τt ‖ head t] blocks, in task order; allReduce of the
//              per-task metrics (each task's slots are filled by its owner, zeros elsewhere).
//              Every rank now holds all task vectors. Sharded merging (`merge.sharded`, or
//              `auto` past JobPlan.autoShardingBytes): only the heads are gathered, and an
//              allToAll exchange gives each rank its slice of every task vector (ShardedMerge.swift).
//  6. Save.    Rank 0 writes base.safetensors and job.yaml (atomically).
//  7. Merge.   For each method entry, every rank computes the same merged task vector Δ from
//              the gathered task vectors (deterministic: same inputs, same seed, same kernels;
//              sharded: each rank merges its slice and the slices are gathered, bitwise the
//              same Δ; a phase agreement reports a failure); then for each α of that entry's grid it
//              builds θ0 + α·Δ and counts right predictions in its share of every task's
//              validation rows (SharedSplit.swift: whole chunks spread evenly over the ranks);
//              allReduce of the counts; every rank picks the same α (max mean normalised
//              validation accuracy, the smallest α on ties); the test rows likewise at that α.
//              Rank 0 writes merged/<label>.safetensors.
//  7b. Analyse. Rank 0 analyses the task vectors (cosine, sign conflicts, Gram deviation,
//              spectra; sharded: gathered one tensor at a time). Negation (`evaluate.negation`) and the disentanglement error ξ
//              (`evaluate.disentanglement`) are lists of (model, task) evaluations: each task's
//              owner measures its items, an allReduce sums them; negation's α grids run on the
//              shared validation rows of step 7 instead (AnalysisStage.swift).
//  8. Report.  Rank 0 writes report.json and report.html and prints the table; a final barrier
//              keeps every rank alive until the outputs exist.
import Core
import Reporting
import Foundation
import Transport
import Worker

public final class JobRunner {
    public let plan: JobPlan
    public let communicator: any Communicator
    public let console: Console
    public static let version = "0.1.0"

    public init(plan: JobPlan, communicator: any Communicator, console: Console) {
        self.plan = plan
        self.communicator = communicator
        self.console = console
    }

    private var rank: Int { communicator.rank }
    private var isCoordinator: Bool { communicator.rank == 0 }

    /// Runs the whole job; returns the report on rank 0 and nil elsewhere.
    @discardableResult
    public func run() throws -> RunReport? {
        let started = Date()
        let clock = RunReport.PhaseClock()
        BLASRuntime.setThreads(plan.blasThreads)
        let layout = plan.model.layout

        // 1b. The output directory: locked for this run; another job's results, or a folder that
        // is not a run, are refused before anything is written.
        let (keeper, lock) = try PhaseAgreement.run(communicator) { try isCoordinator ? openOutput() : (nil, nil) }
        defer { lock?.release() }
        clock.end("output")
        let kernels = try BLASAgreement.gather(communicator)
        if isCoordinator {
            let mixed = BLASAgreement.disagreement(kernels)
            let everywhere = communicator.size > 1 && mixed == nil ? " on every rank" : ""
            console.info("job '\(plan.name)': \(plan.tasks.count) tasks on \(communicator.size) rank(s), "
                + "model \(layout.totalCount) parameters, mode \(plan.mode.rawValue), OpenBLAS \(BLASRuntime.coreName)\(everywhere)")
            if let mixed { console.info("warning: \(mixed)") }
        }

        // 2. θ0
        let base = FloatBuffer(count: layout.totalCount)
        let baseSummary = try PhaseAgreement.run(communicator) { () -> String in
            isCoordinator ? try prepareBase(into: base) : ""
        }
        try communicator.broadcast(base.buffer, root: 0)
        if isCoordinator { console.info("θ0: \(baseSummary)") }
        clock.end("θ0")

        // 3–4. Tasks finished in an earlier run are verified; the rest are scheduled and trained.
        // Rank 0 verifies (a failure is agreed on), then tells every rank: no collective runs
        // inside the agreement, where rank 0 may have thrown before reaching it.
        let verified = try PhaseAgreement.run(communicator) { try keeper.map { try finishedTasks(keeper: $0, base: base) } ?? [:] }
        let finished = try broadcastFinishedTasks(verified)
        // The workspace is sized for the training batch; evaluation runs in chunks of it (a ViT's
        // activations for the evaluation batch would cost memory for nothing).
        let backbone = plan.model.makeBackbone(maxBatch: plan.finetune.batchSize)
        let worker = TaskWorker(
            backbone: backbone, base: base, seed: plan.seed, finetune: plan.finetune, probe: plan.probe,
            console: console,
            checkpoints: (plan.output.appendingPathComponent("checkpoints"), plan.checkpointEvery,
                          trainingFingerprint(base: base)))
        let scheduler = TaskScheduler(plan: plan, communicator: communicator, console: console, worker: worker,
                                      finished: finished, manifest: keeper, metadata: commonMetadata())
        let outcome = try scheduler.run()

        let (succeeded, failedTasks) = try settleFailures(outcome)
        clock.end("training")
        // From here on the plan holds the tasks that succeeded, in job order.
        let remaining = JobRunner(plan: plan.restricted(to: succeeded), communicator: communicator, console: console)
        var results: [Int: TrainedTask] = [:]
        for (position, index) in succeeded.enumerated() { results[position] = outcome.results[index] }
        return try remaining.mergeAndReport(
            base: base, results: results, assignment: succeeded.map { outcome.owners[$0]! }, backbone: backbone,
            failedTasks: failedTasks, started: started, blasCores: BLASAgreement.summary(kernels), clock: clock)
    }

    /// Steps 5–8 for the tasks that succeeded (`results` and `assignment` indexed like `plan.tasks`).
    private func mergeAndReport(base: FloatBuffer, results: [Int: TrainedTask], assignment: [Int], backbone: any Backbone,
                                failedTasks: [RunReport.FailedTask], started: Date, blasCores: String,
                                clock: RunReport.PhaseClock) throws -> RunReport? {
        let layout = plan.model.layout
        // 5. Gather task vectors (sharded: exchange their slices), heads and metrics.
        let sharded = plan.shardsMerging(worldSize: communicator.size)
        var gathered = try gather(results: results, assignment: assignment, layout: layout, includingTaskVectors: !sharded)
        if sharded {
            let partition = ShardPartition.forMerging(plan.merges.map(\.settings), layout: layout, ranks: communicator.size)
            gathered.shards = try TaskVectorShards.exchange(
                own: results.mapValues(\.taskVector), assignment: assignment, layout: layout, partition: partition,
                communicator: communicator)
            if isCoordinator {
                console.info("merging sharded: each rank holds its slice of every task vector "
                    + "(at most \(partition.ranges.map(\.count).max() ?? 0) of \(layout.totalCount) parameters)")
            }
        }

        clock.end("gather")

        // 6. Save base, task vectors, heads.
        try PhaseAgreement.run(communicator) {
            try saveTrainingOutputs(base: base)
        }
        clock.end("save")

        // 7. Merge and evaluate: every task's validation and test rows spread evenly over the
        // ranks, for every merge and for negation.
        let splits = try SharedSplits(results: results, entries: gathered.entries, assignment: assignment,
                                      backbone: backbone, communicator: communicator)
        let merges = try mergeAll(gathered, base: base, splits: splits, backbone: backbone)
        clock.end("merge and α search")

        // 7b. Analyse the task vectors; negation and disentanglement error (AnalysisStage.swift).
        // Sharded: the analyses gather one tensor at a time; negation and ξ evaluate models built
        // from whole task vectors, which a sharded run avoids holding: skipped there.
        var analyses = AnalysisResults()
        if let shards = gathered.shards {
            let started = Date()
            analyses.vectors = try PhaseAgreement.run(communicator) {
                try shards.analysis(tasks: plan.tasks.map(\.name), communicator: communicator)
            }
            if let vectors = analyses.vectors {
                console.info(String(format: "task vector analyses, one tensor at a time (cosine, sign conflicts, Gram deviation, spectra of %d matrices): %.1f s",
                                    vectors.matrices.count, Date().timeIntervalSince(started)))
            }
            if isCoordinator, plan.analysis.negation != nil || plan.analysis.disentanglement != nil {
                console.info("negation and disentanglement skipped: merging is sharded (merge.sharded: false runs them)")
            }
        } else {
            analyses = try AnalysisStage(
            plan: plan, communicator: communicator, console: console, assignment: assignment, base: base,
            taskVectors: gathered.taskVectors, heads: gathered.heads, results: results, entries: gathered.entries,
            splits: splits, backbone: backbone).run()
        }

        clock.end("analyses")

        // 8. Report.
        let report = try writeReport(entries: gathered.entries, merges: merges, analyses: analyses,
                                     failedTasks: failedTasks, started: started, blasCores: blasCores, phases: clock)
        try communicator.barrier()
        return report
    }

    /// The tasks that succeeded, in job order, and the report's entries for the others. Rank 0
    /// throws the job's error when it must stop (on_task_failure: abort, or nothing succeeded);
    /// the other ranks then throw PeerFailure.
    private func settleFailures(_ outcome: TrainingOutcome) throws -> (succeeded: [Int], failed: [RunReport.FailedTask]) {
        let succeeded = plan.tasks.indices.filter { outcome.owners[$0] != nil }
        var failedTasks: [RunReport.FailedTask] = []
        if succeeded.count < plan.tasks.count {
            let stops = plan.onTaskFailure == .abort || succeeded.isEmpty
            if !isCoordinator {
                if stops { throw PeerFailure() }
            } else {
                var reasons: [String] = []
                var notStarted: [String] = []
                for index in plan.tasks.indices where outcome.owners[index] == nil {
                    let name = plan.tasks[index].name
                    // Aborting stops the queue: the tasks it never handed out did not fail.
                    guard let failure = outcome.failures[index] else {
                        notStarted.append(name)
                        failedTasks.append(RunReport.FailedTask(name: name, reason: "not started (an earlier task failed)", rank: -1))
                        continue
                    }
                    failedTasks.append(RunReport.FailedTask(name: name, reason: failure.reason, rank: failure.rank))
                    reasons.append("task '\(name)' failed on rank \(failure.rank): \(failure.reason)")
                }
                if !notStarted.isEmpty {
                    reasons.append("not started: " + notStarted.map { "'\($0)'" }.joined(separator: ", "))
                }
                if succeeded.isEmpty { throw OrthofuseError("every task failed: " + reasons.joined(separator: "; ")) }
                if stops {
                    throw OrthofuseError(reasons.joined(separator: "; ")
                        + " (finished tasks are kept: fix the cause and rerun to resume, or set runtime.on_task_failure: skip)")
                }
                console.info("merging the \(succeeded.count) task(s) that succeeded; "
                    + failedTasks.map { "'\($0.name)'" }.joined(separator: ", ") + " left out (on_task_failure: skip)")
            }
        }
        return (succeeded, failedTasks)
    }

    /// Rank 0: checks memory and the folder, takes the run lock, removes stale temporaries and
    /// opens the manifest. Checked before the lock file is made, so a refused folder gets nothing.
    private func openOutput() throws -> (ManifestKeeper?, RunLock?) {
        try plan.checkMemory(worldSize: communicator.size)
        try RunLock.checkWritable(plan.output)
        let lock = try RunLock.acquire(plan.output)
        RunLock.removeStaleTemporaries(in: plan.output)
        return (try openManifest(), lock)
    }

    /// Step 7: each merge entry's Δ (held only while its α grid is evaluated), its α chosen on
    /// validation and its test accuracies.
    private func mergeAll(_ gathered: Gathered, base: FloatBuffer, splits: SharedSplits,
                          backbone: any Backbone) throws -> [RunReport.MergeEntry] {
        let layout = plan.model.layout
        var merges: [RunReport.MergeEntry] = []
        for merge in plan.merges {
            let mergedVector = try PhaseAgreement.run(communicator) {
                if let shards = gathered.shards {
                    return try shards.mergedTaskVector(merge.settings, communicator: communicator)
                }
                return try TaskVectorMerger.mergedTaskVector(gathered.taskVectors, layout: layout, settings: merge.settings)
            }
            merges.append(try mergeAndEvaluate(merge, base: base, mergedVector: mergedVector, heads: gathered.heads,
                                               splits: splits, entries: gathered.entries, backbone: backbone))
        }
        return merges
    }

    /// Step 8: rank 0 writes report.json and report.html and prints the table; nil elsewhere.
    private func writeReport(entries: [RunReport.TaskEntry], merges: [RunReport.MergeEntry], analyses: AnalysisResults,
                             failedTasks: [RunReport.FailedTask], started: Date, blasCores: String,
                             phases: RunReport.PhaseClock) throws -> RunReport? {
        var report: RunReport?
        if isCoordinator {
            let info = RunReport.RunInfo(
                job: plan.name, seed: plan.seed, ranks: communicator.size, finetuneMode: plan.mode.rawValue,
                orthoRegLambda: Double(plan.finetune.orthoReg.lambda), orthoRegForm: plan.finetune.orthoReg.form.rawValue,
                blasCore: blasCores, wallSeconds: Date().timeIntervalSince(started), version: Self.version,
                phases: phases.phases)
            var complete = RunReport(run: info, tasks: entries, merges: merges)
            complete.failedTasks = failedTasks.isEmpty ? nil : failedTasks
            analyses.fill(&complete)
            report = complete
        }
        try PhaseAgreement.run(communicator) {
            if let report {
                try AtomicFile.write(report.encoded(), to: plan.output.appendingPathComponent("report.json"))
                try ReportPage.write(report, jobText: plan.canonicalJob, to: plan.output.appendingPathComponent("report.html"))
            }
        }
        if let report {
            console.result("\n" + report.table())
            console.info(String(format: "outputs in %@ (%.1f s: %@)", plan.output.path, report.run.wallSeconds,
                                phases.summary))
        }
        return report
    }

    // MARK: θ0

    /// Fills `base` on rank 0 from the job's θ0 source; returns a one-line description.
    private func prepareBase(into base: FloatBuffer) throws -> String {
        let layout = plan.model.layout
        switch plan.base {
        case let .file(url):
            let file = try Safetensors.read(url)
            try layout.loadBackbone(file, into: base, origin: url.path)
            return "loaded from \(url.path)"
        case .initialization:
            let backbone = plan.model.makeBackbone(maxBatch: 1)
            var random = RandomStream(seed: plan.seed, label: "initialization")
            backbone.initialize(base, random: &random)
            return "seeded random initialisation (seed \(plan.seed))"
        case let .pretrain(pretrain):
            let pretrainer = Pretrainer(plan: plan, pretrain: pretrain, console: console)
            return try pretrainer.obtain(into: base)
        }
    }

    /// Identifies what a task's training depends on besides the task itself: the model, θ0's
    /// values, the fine-tuning and probe settings and the seed. A checkpoint from another job
    /// (or another θ0) in the same output directory is therefore never resumed.
    private func trainingFingerprint(base: FloatBuffer) -> String {
        var fingerprint = Fingerprint()
        fingerprint.add("\(plan.model)|\(plan.finetune)|\(plan.probe)|\(plan.seed)|\(JobRunner.version)")
        fingerprint.add(base)
        return fingerprint.hex
    }

    // MARK: Gather

    struct Gathered {
        /// Every task's τ; empty when merging is sharded.
        var taskVectors: [FloatBuffer]
        var heads: [ClassificationHead]
        var entries: [RunReport.TaskEntry]
        /// Sharded merging: this rank's slice of every task vector.
        var shards: TaskVectorShards? = nil
    }

    private func gather(results: [Int: TrainedTask], assignment: [Int], layout: ParameterLayout,
                        includingTaskVectors: Bool) throws -> Gathered {
        let parameterCount = includingTaskVectors ? layout.totalCount : 0
        let headCounts = plan.tasks.map { ClassificationHead(classes: $0.classes, featureCount: featureCount).layout.totalCount }
        // One buffer holds every rank's block in rank order; a block is, for each of the rank's
        // tasks in job order, τt then the head's parameters. Each rank fills its own block, MPI
        // fills the others in place, and the task vectors are views of it: no copy after MPI's.
        let ranks = communicator.size
        var starts = [Int](repeating: 0, count: plan.tasks.count)
        var counts = [Int](repeating: 0, count: ranks)
        for owner in 0..<ranks {
            for index in plan.tasks.indices where assignment[index] == owner {
                starts[index] = counts[owner]
                counts[owner] += parameterCount + headCounts[index]
            }
        }
        let blockStarts = BlockLayout.offsets(counts)
        for index in plan.tasks.indices { starts[index] += blockStarts[assignment[index]] }
        let gathered = FloatBuffer(uninitializedCount: counts.reduce(0, +), hugePages: true)
        for index in plan.tasks.indices where assignment[index] == rank {
            let result = results[index]!
            if includingTaskVectors { (gathered.pointer + starts[index]).update(from: result.taskVector.pointer, count: parameterCount) }
            (gathered.pointer + starts[index] + parameterCount).update(from: result.head.parameters.pointer, count: headCounts[index])
        }
        try communicator.allGather(into: gathered.buffer, counts: counts)
        var taskVectors: [FloatBuffer] = []
        var heads: [ClassificationHead] = []
        for (index, task) in plan.tasks.enumerated() {
            let head = plan.probe.makeHead(classes: task.classes, featureCount: featureCount)
            head.parameters.pointer.update(from: gathered.pointer + starts[index] + parameterCount, count: headCounts[index])
            if includingTaskVectors { taskVectors.append(FloatBuffer(viewing: gathered, offset: starts[index], count: parameterCount)) }
            heads.append(head)
        }

        // Metrics: a fixed slot layout per task, filled by the owner, summed over ranks.
        let slots = TaskMetricSlots.count
        var metrics = [Double](repeating: 0, count: plan.tasks.count * slots)
        for (index, result) in results {
            TaskMetricSlots.encode(result.entry, into: &metrics, at: index * slots)
        }
        metrics = try communicator.allReduce(metrics, .sum)
        let entries = plan.tasks.indices.map {
            TaskMetricSlots.decode(name: plan.tasks[$0].name, from: metrics, at: $0 * slots)
        }
        return Gathered(taskVectors: taskVectors, heads: heads, entries: entries)
    }

    private var featureCount: Int { plan.model.featureCount }

    // MARK: Save

    /// Rank 0 writes θ0 and job.yaml (each task's vector and head were written when it finished).
    private func saveTrainingOutputs(base: FloatBuffer) throws {
        guard isCoordinator else { return }
        let output = plan.output
        var metadata = commonMetadata()
        metadata["orthofuse.kind"] = "base"
        // Keep the pre-training cache key, so that a rerun reuses this θ0 instead of pre-training again.
        let baseURL = output.appendingPathComponent("base.safetensors")
        if case .pretrain = plan.base, let cached = try? Safetensors.readHeader(baseURL) {
            for (key, value) in cached.metadata where key.hasPrefix("orthofuse.pretrain_") { metadata[key] = value }
        }
        try Safetensors.write(plan.model.layout.records(from: base), metadata: metadata, to: baseURL)
        try AtomicFile.write(Data(plan.canonicalJob.utf8), to: output.appendingPathComponent("job.yaml"))
        console.info("saved θ0 and job.yaml in \(output.path); task vectors and heads in task_vectors/ and heads/")
    }

    // MARK: Manifest

    /// Rank 0: the output directory's manifest, created for this job or read back from an earlier
    /// run of it; another job's directory (other training settings, or a task of the same name
    /// with other data) is refused.
    private func openManifest() throws -> ManifestKeeper {
        let output = plan.output
        let definitions = plan.taskDefinitions
        var manifest: RunManifest
        if let existing = try RunManifest.read(in: output) {
            if let conflict = existing.conflict(training: plan.trainingSections, taskDefinitions: definitions) {
                throw OrthofuseError("\(output.path): \(conflict); this job would mix its results with them. Choose another output directory, or move this one aside")
            }
            manifest = existing
            manifest.job = plan.name
        } else {
            if plan.requiresResume {
                throw OrthofuseError("\(output.path): nothing to resume (no \(RunManifest.fileName)); run without --resume to start")
            }
            manifest = RunManifest(job: plan.name, training: plan.trainingSections)
        }
        try manifest.write(in: output)
        return ManifestKeeper(manifest: manifest, directory: output, definitions: definitions)
    }

    /// Rank 0: which tasks an earlier run of this job finished, after checking θ0 against the
    /// manifest and each recorded task's files against their SHA-256.
    private func finishedTasks(keeper: ManifestKeeper, base: FloatBuffer) throws -> [Int: TaskWorker.FinishedTask] {
        var finished: [Int: TaskWorker.FinishedTask] = [:]
        var fingerprint = Fingerprint()
        fingerprint.add(base)
        if let recorded = keeper.manifest.baseFingerprint, recorded != fingerprint.hex {
            throw OrthofuseError("\(plan.output.path): its task vectors were trained from another θ0 (the base weights changed); choose another output directory, or move this one aside")
        }
        if keeper.manifest.baseFingerprint == nil { try keeper.setBaseFingerprint(fingerprint.hex) }
        let directory = RunDirectory(plan.output)
        for (index, task) in plan.tasks.enumerated() {
            guard let record = keeper.manifest.tasks[task.name] else { continue }
            // The files are read from their usual places, so the record must name those.
            guard record.taskVector == RunDirectory.taskVectorPath(task.name), record.head == RunDirectory.headPath(task.name),
                  RunManifest.verify(record, in: plan.output) else {
                console.info("\(task.name): its files in \(plan.output.path) are missing or differ from the SHA-256 in \(RunManifest.fileName); training it again (from its checkpoint when there is one)")
                continue
            }
            finished[index] = TaskWorker.FinishedTask(
                taskVector: directory.taskVector(task.name), head: directory.head(task.name),
                taskVectorSHA256: record.taskVectorSHA256, headSHA256: record.headSHA256,
                finalLoss: record.finalLoss ?? .nan, trainSeconds: record.trainSeconds)
        }
        if !finished.isEmpty {
            let names = finished.keys.sorted().map { plan.tasks[$0].name }
            console.info("resuming in \(plan.output.path): \(names.count) of \(plan.tasks.count) task(s) already finished, checksums verified, not retrained: \(names.joined(separator: ", "))")
        }
        return finished
    }

    /// Rank 0's verified tasks, on every rank.
    private func broadcastFinishedTasks(_ finished: [Int: TaskWorker.FinishedTask]) throws -> [Int: TaskWorker.FinishedTask] {
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let bytes = try communicator.broadcast(isCoordinator ? [UInt8](encoder.encode(finished)) : [], root: 0)
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try decoder.decode([Int: TaskWorker.FinishedTask].self, from: Data(bytes))
    }

    private func commonMetadata() -> [String: String] {
        ["orthofuse.job": plan.name, "orthofuse.seed": "\(plan.seed)", "orthofuse.version": Self.version,
         Safetensors.formatKey: Safetensors.pytorchFormat]
    }

    // MARK: Merge

    /// Chooses α for θ0 + α·Δ on validation, evaluates the test splits there, writes the merged model.
    private func mergeAndEvaluate(
        _ merge: MergePlan, base: FloatBuffer, mergedVector: FloatBuffer, heads: [ClassificationHead],
        splits: SharedSplits, entries: [RunReport.TaskEntry], backbone: any Backbone
    ) throws -> RunReport.MergeEntry {
        let tasks = plan.tasks
        // Linearized task vectors merge in tangent space: f(x; θ0) + J(x; θ0)·αΔ.
        let linearization = plan.finetune.parametrization == .linearized ? base : nil
        let grid = merge.alphaGrid
        /// Accuracy of θ0 + α·Δ on every task's split, value-major (entry a·T + t), from every
        /// rank's share of the rows; `atBase` the tasks' accuracies at α = 0, when known, and
        /// `sharingFirstLayer` as in `Evaluation.correctAlongLine`.
        func accuracies(alphas: [Double], on split: SharedSplit, atBase: [Double]?, sharingFirstLayer: Bool) throws -> [Double] {
            let lines = tasks.indices.map {
                SharedSplit.Line(task: $0, direction: mergedVector, alphas: alphas, atBase: atBase?[$0])
            }
            let perTask = try split.accuracies(lines, base: base, heads: heads, backbone: backbone,
                                               linearizedAround: linearization, sharingFirstLayer: sharingFirstLayer,
                                               communicator: communicator)
            return alphas.indices.flatMap { a in tasks.indices.map { perTask[$0][a] } }
        }

        // Validation accuracy of every (α, task) pair (α = 0 is θ0, whose accuracy each task's
        // zero-shot evaluation measured); every rank picks the same α.
        let validationAll = try accuracies(alphas: grid, on: splits.validation,
                                           atBase: entries.map(\.zeroShotValidationAccuracy), sharingFirstLayer: true)
        var curve: [RunReport.AlphaPoint] = []
        var bestIndex = 0
        var bestScore = -Double.infinity
        for (a, alpha) in grid.enumerated() {
            var normalized = 0.0
            var absolute = 0.0
            for index in tasks.indices {
                let accuracy = validationAll[a * tasks.count + index]
                absolute += accuracy
                normalized += Self.normalized(accuracy, by: entries[index].finetunedValidationAccuracy)
            }
            normalized /= Double(tasks.count)
            absolute /= Double(tasks.count)
            curve.append(RunReport.AlphaPoint(alpha: alpha, validationNormalizedAccuracy: normalized,
                                              validationAbsoluteAccuracy: absolute))
            if normalized > bestScore {
                bestScore = normalized
                bestIndex = a
            }
        }
        let alpha = grid[bestIndex]

        // Test accuracy at the chosen α, of the merged model as it is (as its file evaluates).
        let test = try accuracies(alphas: [alpha], on: splits.test, atBase: nil, sharingFirstLayer: false)
        let merged = FloatBuffer(count: base.count)
        TaskArithmetic.merge(base: base, taskVectorSum: mergedVector, alpha: Float(alpha), into: merged)
        let perTask = tasks.indices.map { index in
            RunReport.PerTaskAccuracy(name: tasks[index].name, accuracy: test[index],
                                      normalizedAccuracy: Self.normalized(test[index], by: entries[index].finetunedAccuracy))
        }
        let method = merge.settings.method.rawValue
        let file = "merged/\(merge.label).safetensors"
        if isCoordinator {
            var metadata = commonMetadata()
            metadata.merge(merge.settings.metadata) { _, knob in knob }
            metadata["orthofuse.kind"] = "merged"
            metadata["orthofuse.label"] = merge.label
            metadata["orthofuse.alpha"] = "\(alpha)"
            metadata["orthofuse.tasks"] = tasks.map(\.name).joined(separator: ",")
            try PhaseAgreement.run(communicator) {
                try Safetensors.write(plan.model.layout.records(from: merged), metadata: metadata,
                                      to: plan.output.appendingPathComponent(file))
            }
            console.info(String(format: "%@: α = %.2f chosen on validation (normalised %.2f%%)", merge.label, alpha, 100 * bestScore))
        } else {
            try PhaseAgreement.run(communicator) {}
        }
        let count = Double(tasks.count)
        return RunReport.MergeEntry(
            method: method, label: merge.label, settings: merge.settings.reportKnobs, alpha: alpha,
            absoluteAccuracy: perTask.map(\.accuracy).reduce(0, +) / count,
            normalizedAccuracy: perTask.map(\.normalizedAccuracy).reduce(0, +) / count,
            perTask: perTask, alphaCurve: curve, file: file)
    }

    static func normalized(_ accuracy: Double, by reference: Double) -> Double {
        reference > 0 ? accuracy / reference : 0
    }
}

/// The per-task metrics as a fixed vector of doubles, for the allReduce of step 5.
enum TaskMetricSlots {
    static let count = 13

    static func encode(_ entry: RunReport.TaskEntry, into values: inout [Double], at offset: Int) {
        let fields: [Double] = [
            entry.zeroShotAccuracy, entry.finetunedAccuracy, entry.zeroShotValidationAccuracy,
            entry.finetunedValidationAccuracy, Double(entry.trainSamples), Double(entry.validationSamples),
            Double(entry.testSamples), entry.taskVectorNorm, entry.orthoRegPenalty, entry.finalLoss,
            entry.trainSeconds, Double(entry.rank), Double(entry.resumedFromStep),
        ]
        for (i, value) in fields.enumerated() { values[offset + i] = value }
    }

    static func decode(name: String, from values: [Double], at offset: Int) -> RunReport.TaskEntry {
        let v = Array(values[offset..<(offset + count)])
        return RunReport.TaskEntry(
            name: name, zeroShotAccuracy: v[0], finetunedAccuracy: v[1], zeroShotValidationAccuracy: v[2],
            finetunedValidationAccuracy: v[3], trainSamples: Int(v[4]), validationSamples: Int(v[5]),
            testSamples: Int(v[6]), taskVectorNorm: v[7], orthoRegPenalty: v[8], finalLoss: v[9],
            trainSeconds: v[10], rank: Int(v[11]), resumedFromStep: Int(v[12]))
    }
}
