// JobConfigTests: the job file's decoding, defaults, canonical text, path resolution and messages.
import Foundation
import XCTest
@testable import Core
@testable import JobSchema
@testable import Reporting
import TestSupport

final class JobConfigTests: XCTestCase {
    private let jobDirectory = URL(fileURLWithPath: "/srv/jobs", isDirectory: true)

    /// The smallest valid job: every other key takes its default.
    private let minimalJob = """
        name: quickstart
        model: {arch: mlp, input: [784], hidden: [64]}
        tasks:
          - {name: mnist, classes: 10, train: data/mnist/train.npz, test: data/mnist/test.npz}
        finetune: {steps: 10}
        output: runs/quickstart
        """

    /// A job that sets every key, most of them away from their defaults.
    private let fullJob = """
        name: full-job_1.0
        seed: 7
        model:
          arch: mlp
          input: [1, 28, 28]
          hidden: [256, 128]
          activation: gelu
        pretrain:
          fraction: 0.1
          steps: 500
          batch_size: 32
          optimizer: {name: sgd, lr: 0.1, weight_decay: 0.0005, momentum: 0.8}
          schedule: {warmup_steps: 10, decay: linear}
          data:
            - {name: extra, classes: 5, train: ../shared/extra.npz}
        tasks:
          - name: mnist
            classes: 10
            train: data/mnist/train.npz
            test: {images: data/mnist/t10k-images.gz, labels: /data/mnist/t10k-labels.gz}
            validation_fraction: 0.2
          - name: fashion
            classes: 10
            train: ~/fashion/train.npz
            test: data/fashion/test.npz
        validation_fraction: 0.05
        validation_max: 0
        finetune:
          mode: lora
          steps: 2000
          batch_size: 64
          optimizer: {name: adamw, lr: 1, weight_decay: 0.05, betas: [0.9, 0.98], eps: 1.0e-6}
          schedule: {warmup_steps: 500, decay: cosine}
          grad_clip: 1.0
          label_smoothing: 0.1
          lora: {rank: 8, alpha: 16}
          orthoreg: {lambda: 10, form: squared}
          checkpoint_every: 100
        head:
          steps: 100
          batch_size: 512
          optimizer: {lr: 0.02, weight_decay: 0}
        merge:
          methods:
            - task_arithmetic
            - {name: ties, density: 0.1, trim: per-tensor, alpha: {from: 0.8, to: 2.5, count: 18}}
            - {name: ties, label: ties-paper}
            - {name: dare_ties, density: 0.3, seed: 5}
            - {name: breadcrumbs, density: 0.8, gamma: 0.05}
            - {name: consensus, lambda: 0.4, k: 2}
            - tsv
          alpha: {from: 0.2, to: 0.8, count: 4}
        evaluate: {batch_size: 2048}
        runtime: {coordinator_trains: false, blas_threads: 2}
        output: /runs/full
        """

    private func parse(_ yaml: String) throws -> JobConfig {
        try JobConfig.parse(yaml, origin: "job.yaml", baseDirectory: jobDirectory)
    }

    /// The one-line message `yaml` is refused with (fails the test if it is accepted).
    private func refusal(_ yaml: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try parse(yaml)
            XCTFail("accepted:\n\(yaml)", file: file, line: line)
            return ""
        } catch let error as OrthofuseError {
            XCTAssertFalse(error.message.contains("\n"), "one line: \(error.message)", file: file, line: line)
            return error.message
        } catch {
            XCTFail("not an OrthofuseError: \(error)", file: file, line: line)
            return ""
        }
    }

    /// `minimalJob` with `original` replaced by `replacement`.
    private func minimal(replacing original: String, with replacement: String) -> String {
        precondition(minimalJob.contains(original), "test edit does not apply: \(original)")
        return minimalJob.replacingOccurrences(of: original, with: replacement)
    }

    // MARK: - Valid jobs

    /// A split may be a list of .npz shards; the canonical text keeps the list.
    func testASplitMayBeAListOfShards() throws {
        let job = try parse(minimal(replacing: "train: data/mnist/train.npz", with: "train: [data/a.npz, data/b.npz]"))
        XCTAssertEqual(job.tasks[0].train.files.map(\.written), ["data/a.npz", "data/b.npz"])
        guard case .npzShards = job.tasks[0].train.source else { return XCTFail("\(job.tasks[0].train)") }
        let reread = try JobConfig.parse(job.canonicalYAML, origin: "copy.yaml", baseDirectory: jobDirectory)
        XCTAssertEqual(reread.tasks[0].train, job.tasks[0].train)
        let one = try parse(minimal(replacing: "train: data/mnist/train.npz", with: "train: [data/a.npz]"))
        guard case .npz = one.tasks[0].train else { return XCTFail("one shard is a single file") }
        let message = refusal(minimal(replacing: "train: data/mnist/train.npz", with: "train: []"))
        XCTAssertTrue(message.contains("tasks[0].train") && message.contains("1 to 4096 paths"), message)
    }

    /// `tasks[].normalize` and `tasks[].head` decode and survive the canonical text; bad ones are one line.
    func testTaskNormalizeAndHeadFile() throws {
        let task = "{name: mnist, classes: 10, train: data/mnist/train.npz, test: data/mnist/test.npz"
        let job = try parse(minimal(replacing: task + "}", with: task + ", normalize: {mean: [0.5], std: [0.25]}, head: heads/mnist.safetensors}"))
        XCTAssertEqual(job.tasks[0].normalize?.normalization, ChannelNormalization(mean: [0.5], std: [0.25]))
        XCTAssertEqual(job.tasks[0].head?.written, "heads/mnist.safetensors")
        let reread = try JobConfig.parse(job.canonicalYAML, origin: "copy.yaml", baseDirectory: jobDirectory)
        XCTAssertEqual(reread.tasks[0].normalize, job.tasks[0].normalize)
        for (normalize, fragment) in [("{mean: [0.5, 0.4], std: [0.2]}", "must list as many values as mean (2)"),
                                      ("{mean: [0.5], std: [0]}", "must be positive numbers"),
                                      ("{mean: [], std: []}", "must list 1 to 64 values"),
                                      ("{mean: [0.5]}", "std")] {
            let message = refusal(minimal(replacing: task + "}", with: task + ", normalize: \(normalize)}"))
            XCTAssertTrue(message.contains("tasks[0].normalize") && message.contains(fragment), message)
        }
    }

    func testFullJobDecodesEveryKey() throws {
        let job = try parse(fullJob)
        XCTAssertEqual(job.name, "full-job_1.0")
        XCTAssertEqual(job.seed, 7)
        XCTAssertEqual(job.model.input, [1, 28, 28])
        XCTAssertEqual(job.inputFeatureCount, 784)
        guard case .mlp(let shape) = job.model.architecture else { return XCTFail("expected an MLP") }
        XCTAssertEqual(shape.hidden, [256, 128])
        XCTAssertEqual(shape.activation, .gelu)
        XCTAssertEqual(job.model.featureWidth, 128)

        let pretrain = try XCTUnwrap(job.pretrain)
        XCTAssertEqual(pretrain.fraction, 0.1)
        XCTAssertEqual(pretrain.optimizer, .sgd(SGDConfig(learningRate: 0.1, weightDecay: 0.0005, momentum: 0.8)))
        XCTAssertEqual(pretrain.schedule.decay, .linear)
        XCTAssertEqual(pretrain.data?.map(\.name), ["extra"])

        XCTAssertEqual(job.tasks.map(\.name), ["mnist", "fashion"])
        XCTAssertEqual(job.validationFraction(of: job.tasks[0]), 0.2)
        XCTAssertEqual(job.validationFraction(of: job.tasks[1]), 0.05)
        XCTAssertEqual(job.validationMax, 0)

        XCTAssertEqual(job.finetune.mode, .lora)
        XCTAssertEqual(job.finetune.optimizer, .adamw(AdamWConfig(
            learningRate: 1, weightDecay: 0.05, beta1: 0.9, beta2: 0.98, epsilon: 1e-6)))
        XCTAssertEqual(job.finetune.schedule.warmupSteps, 500)
        XCTAssertEqual(job.finetune.lora?.rank, 8)
        XCTAssertEqual(job.finetune.lora?.scale, 2)
        XCTAssertEqual(job.finetune.orthoreg.lambda, 10)
        XCTAssertEqual(job.finetune.orthoreg.form, .squared)
        XCTAssertEqual(job.finetune.checkpointEvery, 100)
        XCTAssertEqual(job.head.optimizer, .adamw(AdamWConfig(learningRate: 0.02, weightDecay: 0)))
        XCTAssertEqual(job.evaluate.batchSize, 2048)
        XCTAssertEqual(job.runtime.coordinatorTrains, false)
        XCTAssertEqual(job.runtime.blasThreads, 2)

        let methods = job.merge.methods
        XCTAssertEqual(methods.map(\.label),
                       ["task_arithmetic", "ties", "ties-paper", "dare_ties", "breadcrumbs", "consensus", "tsv"])
        XCTAssertEqual(methods[1].settings, MergeSettings(method: .ties, density: 0.1, trim: .perTensor))
        XCTAssertEqual(methods[1].alpha, AlphaRange(from: 0.8, to: 2.5, count: 18))
        XCTAssertEqual(methods[2].settings, MergeSettings(method: .ties))
        XCTAssertEqual(methods[3].settings, MergeSettings(method: .dareTies, density: 0.3, seed: 5))
        XCTAssertEqual(methods[4].settings, MergeSettings(method: .breadcrumbs, density: 0.8, gamma: 0.05))
        XCTAssertEqual(methods[5].settings, MergeSettings(method: .consensus, consensusLambda: 0.4, consensusK: 2))
        XCTAssertEqual(methods[6].settings, MergeSettings(method: .tsv))
        XCTAssertEqual(job.merge.alphaGrid(for: methods[1]).count, 18)
        XCTAssertEqual(job.merge.alphaGrid(for: methods[1]).last, 2.5)
        XCTAssertEqual(job.merge.alphaGrid(for: methods[2]), job.merge.alpha.values)
    }

    func testCanonicalYAMLRoundTripsFromAnyDirectory() throws {
        let job = try parse(fullJob)
        let text = job.canonicalYAML
        let reread = try JobConfig.parse(text, origin: "copy.yaml", baseDirectory: URL(fileURLWithPath: "/elsewhere"))
        XCTAssertEqual(reread, job)
        XCTAssertEqual(reread.canonicalYAML, text)
        XCTAssertTrue(text.contains("lr: 1.0\n"), "numbers in their shortest exact form:\n\(text)")
        XCTAssertTrue(text.contains("eps: 1e-06\n"))
        XCTAssertTrue(text.contains("train: /srv/jobs/data/mnist/train.npz\n"), "paths resolved:\n\(text)")
    }

    func testDefaultsAreApplied() throws {
        let job = try parse(minimalJob)
        XCTAssertEqual(job.seed, 1993)
        XCTAssertNil(job.base)
        XCTAssertNil(job.pretrain)
        XCTAssertEqual(job.validationFraction, 0.1)
        XCTAssertEqual(job.validationMax, 5000)
        XCTAssertNil(job.tasks[0].validationFraction)
        guard case .mlp(let shape) = job.model.architecture else { return XCTFail("expected an MLP") }
        XCTAssertEqual(shape.activation, .relu)

        let finetune = job.finetune
        XCTAssertEqual(finetune.mode, .full)
        XCTAssertEqual(finetune.batchSize, 128)
        XCTAssertEqual(finetune.optimizer, .adamw(AdamWConfig(
            learningRate: 1e-3, weightDecay: 0.1, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)))
        XCTAssertEqual(finetune.schedule, ScheduleConfig(warmupSteps: 0, decay: .constant))
        XCTAssertEqual(finetune.gradClip, 0)
        XCTAssertEqual(finetune.labelSmoothing, 0)
        XCTAssertNil(finetune.lora)
        XCTAssertEqual(finetune.orthoreg, OrthoRegConfig(lambda: 0, form: .frobenius))
        XCTAssertFalse(finetune.orthoreg.isEnabled)
        XCTAssertEqual(finetune.checkpointEvery, 0)

        XCTAssertEqual(job.head.steps, 300)
        XCTAssertEqual(job.head.batchSize, 256)
        XCTAssertEqual(job.head.optimizer, .adamw(AdamWConfig(learningRate: 1e-2, weightDecay: 0)))
        XCTAssertEqual(job.merge.methods, [MergeMethodConfig(settings: MergeSettings(method: .taskArithmetic))])
        XCTAssertEqual(job.merge.alpha, AlphaRange(from: 0, to: 1, count: 21))
        XCTAssertEqual(job.evaluate.batchSize, 1024)
        XCTAssertEqual(job.runtime.coordinatorTrains, true)
        XCTAssertEqual(job.runtime.blasThreads, 1)
    }

    func testSectionDefaults() throws {
        let sgd = try parse(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {steps: 10, optimizer: {name: sgd, lr: 1}}"))
        XCTAssertEqual(sgd.finetune.optimizer, .sgd(SGDConfig(learningRate: 1, weightDecay: 0, momentum: 0.9)))
        let lora = try parse(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {steps: 10, mode: lora, lora: {rank: 4}}"))
        XCTAssertEqual(lora.finetune.lora?.alpha, 4)
        let pretrain = try XCTUnwrap(try parse(minimal(replacing: "name: quickstart", with: "name: q\npretrain: {steps: 5}")).pretrain)
        XCTAssertEqual(pretrain.fraction, 0.05)
        XCTAssertEqual(pretrain.batchSize, 128)
        XCTAssertEqual(pretrain.optimizer, .finetuneDefault)
        XCTAssertNil(pretrain.data)
    }

    func testDefaultsWrittenOutGiveTheSameCanonicalText() throws {
        let explicit = minimal(replacing: "finetune: {steps: 10}", with: """
            seed: 1993
            validation_fraction: 0.1
            finetune:
              steps: 10
              mode: full
              optimizer: {name: adamw, lr: 0.001}
            merge: {alpha: {count: 21}}
            runtime: {blas_threads: 1}
            """)
        XCTAssertEqual(try parse(explicit).canonicalYAML, try parse(minimalJob).canonicalYAML)
    }

    func testVisionTransformerShape() throws {
        let job = try parse(minimal(
            replacing: "{arch: mlp, input: [784], hidden: [64]}",
            with: "{arch: vit, input: [3, 32, 32], patch: 4, width: 192, depth: 6, heads: 3}"
        ))
        guard case .vit(let shape) = job.model.architecture else { return XCTFail("expected a ViT") }
        XCTAssertEqual([shape.patch, shape.width, shape.depth, shape.heads, shape.mlpRatio], [4, 192, 6, 3, 4])
        XCTAssertEqual(job.inputFeatureCount, 3 * 32 * 32)
        XCTAssertEqual(job.model.featureWidth, 192)
        XCTAssertEqual(try parse(job.canonicalYAML), job)
    }

    func testCLIPImageTowerShape() throws {
        let tower = "{arch: clip_vit, input: [3, 224, 224], patch: 32, width: 768, depth: 12, heads: 12, output_dim: 512"
        let job = try parse(minimal(replacing: "{arch: mlp, input: [784], hidden: [64]}", with: tower + ", activation: quick_gelu}"))
        guard case .clipViT(let shape) = job.model.architecture else { return XCTFail("expected clip_vit") }
        XCTAssertEqual([shape.tower.patch, shape.tower.width, shape.tower.depth, shape.tower.heads, shape.tower.mlpRatio, shape.outputDim],
                       [32, 768, 12, 12, 4, 512])
        XCTAssertEqual(shape.activation, .quickGELU)
        XCTAssertEqual(job.model.featureWidth, 512, "the heads read proj's output")
        XCTAssertEqual(try parse(job.canonicalYAML), job)
        let plain = try parse(minimal(replacing: "{arch: mlp, input: [784], hidden: [64]}", with: tower + "}"))
        guard case .clipViT(let defaults) = plain.model.architecture else { return XCTFail("expected clip_vit") }
        XCTAssertEqual(defaults.activation, .gelu, "open_clip's own default")

        for (model, message) in [
            ("{arch: clip_vit, input: [3, 32, 32], patch: 8, width: 64, depth: 2, heads: 2}", "model.output_dim: required"),
            ("{arch: vit, input: [3, 32, 32], patch: 8, width: 64, depth: 2, heads: 2, output_dim: 8}",
             "model.output_dim: only allowed with arch: clip_vit"),
            ("{arch: vit, input: [3, 32, 32], patch: 8, width: 64, depth: 2, heads: 2, activation: gelu}",
             "model.activation: only allowed with arch: mlp or clip_vit"),
            ("{arch: clip_vit, input: [3, 32, 32], patch: 8, width: 64, depth: 2, heads: 2, output_dim: 8, activation: relu}",
             "model.activation: expected one of gelu, quick_gelu"),
            ("{arch: clip_vit, input: [32, 32], patch: 8, width: 64, depth: 2, heads: 2, output_dim: 8}",
             "model.input: must be [channels, height, width] with arch: clip_vit"),
            ("{arch: clip_vit, input: [3, 32, 32], patch: 8, width: 64, depth: 2, heads: 2, output_dim: 8, hidden: [4]}",
             "model.hidden: only allowed with arch: mlp"),
        ] {
            let refused = refusal(minimal(replacing: "{arch: mlp, input: [784], hidden: [64]}", with: model))
            XCTAssertTrue(refused.hasPrefix("job.yaml: " + message), refused)
        }
    }

    // MARK: - Paths

    func testRelativePathsResolveAgainstTheJobDirectory() throws {
        let job = try parse(fullJob)
        let home = NSString(string: "~").expandingTildeInPath
        XCTAssertEqual(job.tasks[0].train, .npz(JobPath("data/mnist/train.npz", relativeTo: jobDirectory, label: "")))
        XCTAssertEqual(job.tasks[0].train.source, .npz(URL(fileURLWithPath: "/srv/jobs/data/mnist/train.npz")))
        XCTAssertEqual(job.tasks[0].test.source, .idx(
            images: URL(fileURLWithPath: "/srv/jobs/data/mnist/t10k-images.gz"),
            labels: URL(fileURLWithPath: "/data/mnist/t10k-labels.gz")
        ))
        XCTAssertEqual(job.tasks[1].train.files[0].url.path, home + "/fashion/train.npz")
        XCTAssertEqual(job.pretrain?.data?[0].train.files[0].url.path, "/srv/shared/extra.npz")
        XCTAssertEqual(job.output.url.path, "/runs/full")

        let written = job.tasks[0].train.files[0]
        XCTAssertEqual(written.written, "data/mnist/train.npz")
        XCTAssertEqual(written.label, "job.yaml: tasks[0].train")
        XCTAssertEqual(job.tasks[1].train.files[0].written, "~/fashion/train.npz")
    }

    func testLoadResolvesAgainstTheFilesDirectoryNotTheWorkingDirectory() throws {
        let directory = try temporaryFolder("job")
        let jobFile = directory.appendingPathComponent("jobs/job.yaml")
        try FileManager.default.createDirectory(at: jobFile.deletingLastPathComponent(), withIntermediateDirectories: true)
        try minimalJob.write(to: jobFile, atomically: true, encoding: .utf8)
        let job = try JobConfig.load(jobFile)
        XCTAssertEqual(job.tasks[0].train.files[0].url.path, directory.path + "/jobs/data/mnist/train.npz")
        XCTAssertEqual(job.output.url.path, directory.path + "/jobs/runs/quickstart")
        XCTAssertTrue(job.tasks[0].train.files[0].label.hasSuffix("job.yaml: tasks[0].train"))
    }

    func testLoadReportsAMissingJobFile() {
        XCTAssertThrowsError(try JobConfig.load(URL(fileURLWithPath: "/nonexistent/job.yaml"))) { error in
            XCTAssertEqual((error as? OrthofuseError)?.message, "/nonexistent/job.yaml: no such file")
        }
    }

    // MARK: - Derived values

    func testAlphaGridHitsTheDecimalPoints() throws {
        let grid = try parse(minimalJob).alphaGrid
        XCTAssertEqual(grid, [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                              0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0])
        XCTAssertEqual(AlphaRange(from: 0.3, to: 0.9, count: 1).values, [0.3])
        XCTAssertEqual(AlphaRange(from: -1, to: 1, count: 5).values, [-1, -0.5, 0, 0.5, 1])
        XCTAssertEqual(AlphaRange(from: 0.2, to: 0.8, count: 4).values.last, 0.8)
        XCTAssertEqual(AlphaRange(from: 0, to: 1, count: 10_001).values[1234], 0.1234)
    }

    // MARK: - Errors

    func testUnknownKeysAreNamedWithTheAllowedKeys() {
        XCTAssertEqual(
            refusal(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {steps: 10, optimzer: {lr: 1}}")),
            "job.yaml: finetune.optimzer: unknown key (allowed: mode, steps, batch_size, micro_batches, optimizer, schedule, "
                + "grad_clip, label_smoothing, lora, orthoreg, checkpoint_every)"
        )
        XCTAssertEqual(
            refusal(minimal(replacing: "name: quickstart", with: "name: q\nepochs: 3")),
            "job.yaml: epochs: unknown key (allowed: name, seed, model, base, pretrain, tasks, validation_fraction, "
                + "validation_max, finetune, head, merge, evaluate, runtime, output)"
        )
        XCTAssertEqual(
            refusal(minimal(replacing: "train: data/mnist/train.npz", with: "train: {images: a, labels: b, extra: c}")),
            "job.yaml: tasks[0].train.extra: unknown key (allowed: images, labels)"
        )
        XCTAssertEqual(
            refusal(minimal(replacing: "hidden: [64]", with: "hidden: [64], patch: 4")),
            "job.yaml: model.patch: only allowed with arch: vit or clip_vit"
        )
        XCTAssertEqual(
            refusal(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {steps: 10, optimizer: {name: sgd, lr: 1, eps: 1}}")),
            "job.yaml: finetune.optimizer.eps: only allowed with name: adamw"
        )
        XCTAssertEqual(
            refusal(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {steps: 10, lora: {rank: 2}}")),
            "job.yaml: finetune.lora: only allowed with mode: lora"
        )
    }

    func testWrongTypesNameTheKeyAndTheWrittenValue() {
        let cases: [(String, String, String)] = [
            ("classes: 10", "classes: ten", "job.yaml: tasks[0].classes: expected an integer, got \"ten\""),
            ("classes: 10", "classes: 10.0", "job.yaml: tasks[0].classes: expected an integer, got 10.0"),
            ("classes: 10", "classes: \"10\"", "job.yaml: tasks[0].classes: expected an integer, got \"10\""),
            ("classes: 10", "classes: 99999999999999999999",
             "job.yaml: tasks[0].classes: integer out of range, got 99999999999999999999"),
            ("hidden: [64]", "hidden: 64", "job.yaml: model.hidden: expected a list, got 64"),
            ("hidden: [64]", "hidden: [64, [1]]", "job.yaml: model.hidden[1]: expected a single value, got a list"),
            ("finetune: {steps: 10}", "finetune: {steps: 10, optimizer: {lr: fast}}",
             "job.yaml: finetune.optimizer.lr: expected a number, got \"fast\""),
            ("finetune: {steps: 10}", "finetune: {steps: 10, mode: partial}",
             "job.yaml: finetune.mode: expected one of full, attention, lora, linearized, got \"partial\""),
            ("finetune: {steps: 10}", "finetune: [10]", "job.yaml: finetune: expected a mapping, got a list"),
            ("train: data/mnist/train.npz", "train: [[a.npz]]",
             "job.yaml: tasks[0].train[0]: expected a single value, got a list"),
            ("name: quickstart", "name: q\nseed: -1", "job.yaml: seed: must be >= 0"),
            ("name: quickstart", "name: q\nruntime: {coordinator_trains: maybe}",
             "job.yaml: runtime.coordinator_trains: expected true or false, got \"maybe\""),
            ("name: quickstart", "name: q\nmerge: {methods: [task_arithmetic, tie]}",
             "job.yaml: merge.methods[1]: expected one of average, task_arithmetic, ties, dare, dare_ties, breadcrumbs, "
                + "tsv, consensus, iso_c, iso_cts, magmax, got \"tie\""),
            ("name: quickstart", "name: q\nmerge: {methods: [[ties]]}",
             "job.yaml: merge.methods[0]: expected a method name or {name: method, ...}, got a list"),
            ("name: quickstart", "name: q\nmerge: {methods: [{name: ties, trim: local}]}",
             "job.yaml: merge.methods[0].trim: expected one of global, per-tensor, got \"local\""),
            ("name: quickstart", "name: q\nmerge: {methods: [{name: ties, density: high}]}",
             "job.yaml: merge.methods[0].density: expected a number, got \"high\""),
        ]
        for (original, replacement, expected) in cases {
            XCTAssertEqual(refusal(minimal(replacing: original, with: replacement)), expected)
        }
        XCTAssertEqual(
            refusal("- name: q\n"), "job.yaml: expected a mapping of job settings, got a list"
        )
    }

    func testIntegersAreAcceptedWhereNumbersAreExpected() throws {
        let job = try parse(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {steps: 10, optimizer: {lr: 1}}"))
        XCTAssertEqual(job.finetune.optimizer.learningRate, 1)
    }

    func testMissingRequiredKeys() {
        XCTAssertEqual(refusal(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {batch_size: 8}")),
                       "job.yaml: finetune.steps: required")
        XCTAssertEqual(refusal(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {steps: }")),
                       "job.yaml: finetune.steps: required")
        XCTAssertEqual(refusal(minimal(replacing: "finetune: {steps: 10}", with: "")),
                       "job.yaml: finetune: required")
        XCTAssertEqual(refusal(minimal(replacing: "output: runs/quickstart", with: "")),
                       "job.yaml: output: required")
        XCTAssertEqual(refusal(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {steps: 10, mode: lora}")),
                       "job.yaml: finetune.lora: required")
        XCTAssertEqual(refusal(minimal(replacing: "test: data/mnist/test.npz", with: "test: {images: a.gz}")),
                       "job.yaml: tasks[0].test.labels: required")
        XCTAssertEqual(refusal(minimal(replacing: "{arch: mlp, input: [784], hidden: [64]}", with: "{arch: mlp, input: [784]}")),
                       "job.yaml: model.hidden: required")
    }

    func testInvalidValuesNameTheRule() {
        let cases: [(String, String, String)] = [
            ("finetune: {steps: 10}", "finetune: {steps: 10, optimizer: {lr: -1}}",
             "job.yaml: finetune.optimizer.lr: must be > 0"),
            ("finetune: {steps: 10}", "finetune: {steps: 0}", "job.yaml: finetune.steps: must be > 0"),
            ("finetune: {steps: 10}", "finetune: {steps: 10, schedule: {warmup_steps: 11}}",
             "job.yaml: finetune.schedule.warmup_steps: must be <= finetune.steps (10)"),
            ("finetune: {steps: 10}", "finetune: {steps: 10, label_smoothing: 1}",
             "job.yaml: finetune.label_smoothing: must be in [0, 1)"),
            ("finetune: {steps: 10}", "finetune: {steps: 10, optimizer: {lr: 1, betas: [0.9, 1.5]}}",
             "job.yaml: finetune.optimizer.betas[1]: must be in [0, 1)"),
            ("finetune: {steps: 10}", "finetune: {steps: 10, orthoreg: {lambda: -1}}",
             "job.yaml: finetune.orthoreg.lambda: must be >= 0"),
            ("finetune: {steps: 10}", "finetune: {steps: 10, mode: attention}",
             "job.yaml: finetune.mode: attention needs arch: vit or clip_vit (an MLP has no attention)"),
            ("classes: 10", "classes: 1", "job.yaml: tasks[0].classes: must be >= 2"),
            ("hidden: [64]", "hidden: []", "job.yaml: model.hidden: must not be empty"),
            ("hidden: [64]", "hidden: [64, 0]", "job.yaml: model.hidden[1]: must be > 0"),
            ("name: quickstart", "name: my run", "job.yaml: name: must match [A-Za-z0-9_.-]+"),
            ("name: quickstart", "name: q\nvalidation_fraction: 0.6", "job.yaml: validation_fraction: must be in [0, 0.5]"),
            ("name: quickstart", "name: q\nvalidation_fraction: .nan", "job.yaml: validation_fraction: must be a finite number"),
            ("name: quickstart", "name: q\nbase: b.safetensors\npretrain: {steps: 3}",
             "job.yaml: pretrain: not allowed together with base (the starting weights come from one or the other)"),
            ("name: quickstart", "name: q\nmerge: {alpha: {from: 1, to: 0}}", "job.yaml: merge.alpha.to: must be >= from (1.0)"),
            ("name: quickstart", "name: q\nmerge: {methods: []}", "job.yaml: merge.methods: must not be empty"),
            ("name: quickstart", "name: q\nmerge: {methods: [task_arithmetic, task_arithmetic]}",
             "job.yaml: merge.methods[1]: duplicate method task_arithmetic"),
            ("tasks:\n", "tasks:\n  - {name: mnist, classes: 3, train: a, test: b}\n",
             "job.yaml: tasks[1].name: duplicate task name \"mnist\""),
            ("train: data/mnist/train.npz", "train: \"\"", "job.yaml: tasks[0].train: must not be empty"),
        ]
        for (original, replacement, expected) in cases {
            XCTAssertEqual(refusal(minimal(replacing: original, with: replacement)), expected)
        }
        let noTasks = minimal(
            replacing: "  - {name: mnist, classes: 10, train: data/mnist/train.npz, test: data/mnist/test.npz}", with: "  []"
        )
        XCTAssertEqual(refusal(noTasks), "job.yaml: tasks: must not be empty")
    }

    func testAbsurdSizesAreRefusedWithTheLimit() {
        let cases: [(String, String, String)] = [
            ("finetune: {steps: 10}", "finetune: {steps: 2000000000}", "job.yaml: finetune.steps: must be <= 1000000000"),
            ("finetune: {steps: 10}", "finetune: {steps: 10, batch_size: 2000000}",
             "job.yaml: finetune.batch_size: must be <= 1048576"),
            ("classes: 10", "classes: 2000000", "job.yaml: tasks[0].classes: must be <= 1048576"),
            ("hidden: [64]", "hidden: [100000]", "job.yaml: model.hidden[0]: must be <= 65536"),
            ("hidden: [64]", "hidden: [65536, 65536]",
             "job.yaml: model.hidden[1]: a 65536 x 65536 weight matrix exceeds 268435456 entries"),
            ("input: [784]", "input: [65536, 65536]", "job.yaml: model.input: must have at most 67108864 values in total"),
            ("name: quickstart", "name: q\nmerge: {alpha: {count: 20000}}", "job.yaml: merge.alpha.count: must be <= 10001"),
        ]
        for (original, replacement, expected) in cases {
            XCTAssertEqual(refusal(minimal(replacing: original, with: replacement)), expected)
        }
    }

    func testSyntaxErrorsGiveTheLine() {
        XCTAssertEqual(refusal(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {steps: [10}")),
                       "job.yaml:5:22: did not find expected ',' or ']' (while parsing a flow sequence at line 5, column 19)")
        XCTAssertEqual(refusal(minimal(replacing: "finetune: {steps: 10}", with: "finetune:\n steps: 10\n  mode: full")),
                       "job.yaml:7:7: mapping values are not allowed in this context")
        XCTAssertEqual(refusal(minimal(replacing: "finetune: {steps: 10}", with: "finetune: {steps: 10}\nfinetune: {steps: 3}")),
                       "job.yaml:5:1: duplicate key 'finetune' in one mapping")
        XCTAssertEqual(refusal(""), "job.yaml: empty job file")
    }

    // MARK: - Merge methods

    private func mergeJob(_ merge: String) -> String {
        minimal(replacing: "name: quickstart", with: "name: q\nmerge: \(merge)")
    }

    func testRepeatedMethodsAreNumberedUnlessLabelled() throws {
        let job = try parse(mergeJob("{methods: [{name: ties, density: 0.1}, ties, {name: ties, density: 0.3}, {name: ties, label: wide, alpha: {to: 2.5}}]}"))
        XCTAssertEqual(job.merge.methods.map(\.label), ["ties", "ties-2", "ties-3", "wide"])
        XCTAssertEqual(job.merge.methods.map(\.settings.density), [0.1, MergeSettings(method: .ties).density, 0.3,
                                                                  MergeSettings(method: .ties).density])
        XCTAssertEqual(job.merge.alphaGrid(for: job.merge.methods[0]), job.alphaGrid)
        XCTAssertEqual(job.merge.alphaGrid(for: job.merge.methods[3]).last, 2.5)
        let reread = try JobConfig.parse(job.canonicalYAML, origin: "copy.yaml", baseDirectory: jobDirectory)
        XCTAssertEqual(reread, job)
        XCTAssertEqual(reread.canonicalYAML, job.canonicalYAML)
    }

    func testMethodDefaultsWrittenOutGiveTheSameCanonicalText() throws {
        let defaults = MergeSettings(method: .ties)
        let plain = try parse(mergeJob("{methods: [task_arithmetic, ties]}"))
        let explicit = try parse(mergeJob(
            "{methods: [{name: task_arithmetic}, {name: ties, density: \(defaults.density), trim: \(defaults.trim.rawValue)}]}"
        ))
        XCTAssertEqual(plain, explicit)
        XCTAssertEqual(plain.canonicalYAML, explicit.canonicalYAML)
        XCTAssertTrue(plain.canonicalYAML.contains("- task_arithmetic\n"), "a method without knobs stays a name:\n\(plain.canonicalYAML)")
        XCTAssertTrue(plain.canonicalYAML.contains("density: \(defaults.density)\n"), "knobs written out:\n\(plain.canonicalYAML)")
    }

    func testEveryMethodReadsOnlyItsKnobs() {
        XCTAssertEqual(MergeMethodName.taskArithmetic.knobs, [])
        XCTAssertEqual(MergeMethodName.ties.knobs, [.density, .trim])
        XCTAssertEqual(MergeMethodName.dare.knobs, [.density, .seed])
        XCTAssertEqual(MergeMethodName.breadcrumbs.knobs, [.density, .gamma])
        XCTAssertEqual(MergeMethodName.consensus.knobs, [.lambda, .k])
        let settings = MergeSettings(method: .ties, density: 0.25, trim: .perTensor)
        XCTAssertEqual(settings.metadata, ["orthofuse.method": "ties", "orthofuse.density": "0.25", "orthofuse.trim": "per-tensor"])
        XCTAssertEqual(settings.reportKnobs, RunReport.MergeKnobs(density: 0.25, trim: "per-tensor"))
        XCTAssertEqual(settings.knobSummary, "density 0.25, trim per-tensor")
    }

    func testMergeMethodErrorsNameTheKey() {
        let cases: [(String, String)] = [
            ("{methods: [{name: ties, densty: 0.2}]}",
             "job.yaml: merge.methods[0].densty: unknown key (allowed: name, label, density, trim, gamma, lambda, k, seed, common_fraction, alpha)"),
            ("{methods: [{density: 0.2}]}", "job.yaml: merge.methods[0].name: required"),
            ("{methods: [{name: tsv, density: 0.2}]}",
             "job.yaml: merge.methods[0].density: only allowed with name: ties, dare, dare_ties, breadcrumbs"),
            ("{methods: [{name: dare, trim: global}]}", "job.yaml: merge.methods[0].trim: only allowed with name: ties"),
            ("{methods: [{name: ties, seed: 3}]}", "job.yaml: merge.methods[0].seed: only allowed with name: dare, dare_ties"),
            ("{methods: [{name: ties, density: 0}]}", "job.yaml: merge.methods[0].density: must be in (0, 1]"),
            ("{methods: [{name: dare, density: 1.5}]}", "job.yaml: merge.methods[0].density: must be in (0, 1]"),
            ("{methods: [{name: breadcrumbs, gamma: 1}]}", "job.yaml: merge.methods[0].gamma: must be in [0, 1)"),
            ("{methods: [{name: breadcrumbs, density: 0.9, gamma: 0.2}]}",
             "job.yaml: merge.methods[0].density: must be <= 1 - gamma (0.8) for breadcrumbs"),
            ("{methods: [{name: consensus, lambda: -1}]}", "job.yaml: merge.methods[0].lambda: must be >= 0"),
            ("{methods: [{name: consensus, k: 0}]}", "job.yaml: merge.methods[0].k: must be > 0"),
            ("{methods: [{name: consensus, k: 2}]}", "job.yaml: merge.methods[0].k: must be <= the number of tasks (1)"),
            ("{methods: [{name: dare, seed: -3}]}", "job.yaml: merge.methods[0].seed: must be >= 0"),
            ("{methods: [{name: ties, alpha: {from: 2, to: 1}}]}", "job.yaml: merge.methods[0].alpha.to: must be >= from (2.0)"),
            ("{methods: [{name: ties, alpha: {count: 0}}]}", "job.yaml: merge.methods[0].alpha.count: must be > 0"),
            ("{methods: [{name: ties, label: \"my ties\"}]}", "job.yaml: merge.methods[0].label: must match [A-Za-z0-9_.-]+"),
            ("{methods: [ties, {name: ties, density: \(MergeSettings(method: .ties).density)}]}",
             "job.yaml: merge.methods[1]: duplicate method ties"),
            ("{methods: [{name: dare, label: ties}, ties]}",
             "job.yaml: merge.methods[1]: label ties is used twice (outputs are named after it; set label: to tell them apart)"),
            ("{methods: [{name: ties, density: 0.3}, {name: dare, label: ties-2}, {name: ties, density: 0.4}]}",
             "job.yaml: merge.methods[2]: label ties-2 is used twice (outputs are named after it; set label: to tell them apart)"),
        ]
        for (merge, expected) in cases {
            XCTAssertEqual(refusal(mergeJob(merge)), expected)
        }
    }

    // MARK: - Files

    func testCheckFilesNamesTheMissingFile() throws {
        let directory = try temporaryFolder("job")
        let job = try JobConfig.parse(minimalJob, origin: "job.yaml", baseDirectory: directory)
        XCTAssertThrowsError(try job.checkFiles()) { error in
            XCTAssertEqual((error as? OrthofuseError)?.message, "job.yaml: tasks[0].train: data/mnist/train.npz: no such file")
        }
        try FileManager.default.createDirectory(
            at: directory.appendingPathComponent("data/mnist/train.npz"), withIntermediateDirectories: true)
        XCTAssertThrowsError(try job.checkFiles()) { error in
            XCTAssertEqual((error as? OrthofuseError)?.message,
                           "job.yaml: tasks[0].train: data/mnist/train.npz: is a directory, expected a file")
        }
        try FileManager.default.removeItem(at: directory.appendingPathComponent("data/mnist/train.npz"))
        try Data([1]).write(to: directory.appendingPathComponent("data/mnist/train.npz"))
        XCTAssertThrowsError(try job.checkFiles()) { error in
            XCTAssertEqual((error as? OrthofuseError)?.message, "job.yaml: tasks[0].test: data/mnist/test.npz: no such file")
        }
        try Data([1]).write(to: directory.appendingPathComponent("data/mnist/test.npz"))
        XCTAssertNoThrow(try job.checkFiles())
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("runs"), withIntermediateDirectories: true)
        try Data([1]).write(to: directory.appendingPathComponent("runs/quickstart"))
        XCTAssertThrowsError(try job.checkFiles()) { error in
            XCTAssertEqual((error as? OrthofuseError)?.message,
                           "job.yaml: output: runs/quickstart: exists and is not a directory")
        }
    }

    func testCheckFilesCoversIDXPairsAndTheBase() throws {
        let directory = try temporaryFolder("job")
        try Data([1]).write(to: directory.appendingPathComponent("images.gz"))
        try Data([1]).write(to: directory.appendingPathComponent("test.npz"))
        let yaml = minimal(replacing: "train: data/mnist/train.npz", with: "train: {images: images.gz, labels: labels.gz}")
            .replacingOccurrences(of: "test: data/mnist/test.npz", with: "test: test.npz")
        let job = try JobConfig.parse(yaml, origin: "job.yaml", baseDirectory: directory)
        XCTAssertThrowsError(try job.checkFiles()) { error in
            XCTAssertEqual((error as? OrthofuseError)?.message, "job.yaml: tasks[0].train.labels: labels.gz: no such file")
        }
        let withBase = try JobConfig.parse("base: base.safetensors\n" + yaml, origin: "job.yaml", baseDirectory: directory)
        XCTAssertThrowsError(try withBase.checkFiles()) { error in
            XCTAssertEqual((error as? OrthofuseError)?.message, "job.yaml: base: base.safetensors: no such file")
        }
    }
}
