// Pretrainer: makes θ0 on rank 0 by training the backbone on a joint task over slices of the
// pre-training datasets, and caches it in the run directory.
import Core
import Reporting
import Foundation
import Worker
import Transport

struct Pretrainer {
    let plan: JobPlan
    let pretrain: PretrainPlan
    let console: Console

    static let fingerprintKey = "orthofuse.pretrain_fingerprint"

    /// A cache key over everything that determines θ0: model, pre-training settings, seed and
    /// the data files (path, size, modification time).
    var fingerprint: String {
        var fingerprint = Fingerprint()
        fingerprint.add("\(plan.model)|\(pretrain)|\(plan.seed)")
        for source in pretrain.sources {
            for url in source.train.urls {
                let attributes = try? FileManager.default.attributesOfItem(atPath: url.path)
                let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
                let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
                fingerprint.add("\(url.path):\(size):\(modified)")
            }
        }
        return fingerprint.hex
    }

    var cacheURL: URL { plan.output.appendingPathComponent("base.safetensors") }

    /// Reuses output/base.safetensors when its fingerprint matches, else pre-trains and saves it.
    func obtain(into base: FloatBuffer) throws -> String {
        let layout = plan.model.layout
        let key = fingerprint
        if FileManager.default.fileExists(atPath: cacheURL.path),
           let cached = try? Safetensors.read(cacheURL), cached.metadata[Self.fingerprintKey] == key,
           (try? layout.load(cached, into: base, origin: cacheURL.path)) != nil
        {
            return "pre-trained θ0 reused from \(cacheURL.path)"
        }
        let started = Date()
        let (data, classes) = try jointData()
        console.info("pre-training θ0 on \(data.count) samples, \(classes) joint classes, \(pretrain.training.steps) steps")
        let backbone = plan.model.makeBackbone(maxBatch: pretrain.training.batchSize)
        var random = RandomStream(seed: plan.seed, label: "initialization")
        backbone.initialize(base, random: &random)
        let initial = FloatBuffer(count: base.count)
        initial.copy(from: base)
        let head = ClassificationHead(classes: classes, featureCount: backbone.featureCount)
        var headRandom = RandomStream(seed: plan.seed, label: "pretrain-head")
        let bound = 1 / Double(backbone.featureCount).squareRoot()
        for i in 0..<head.parameters.count {
            head.parameters[i] = Float((2 * headRandom.nextDouble() - 1) * bound)
        }
        let trainer = Trainer(backbone: backbone, head: head, settings: pretrain.training)
        let reportEvery = max(1, pretrain.training.steps / 10)
        try trainer.run(parameters: base, base: initial, data: data, random: RandomStream(seed: plan.seed, label: "pretrain"),
                        label: "pre-training", reportEvery: reportEvery) { progress in
            console.info(String(format: "pretrain: step %d/%d loss %.4f %.0f samples/s", progress.step, progress.steps,
                                progress.loss, progress.samplesPerSecond))
        }
        let accuracy = Evaluation.accuracy(backbone: backbone, parameters: base, head: head, data: data)
        let metadata = [
            Self.fingerprintKey: key, "orthofuse.kind": "base", "orthofuse.job": plan.name,
            "orthofuse.pretrain_train_accuracy": String(format: "%.4f", accuracy),
        ]
        try Safetensors.write(layout.records(from: base), metadata: metadata, to: cacheURL)
        return String(format: "pre-trained in %.1f s (joint train accuracy %.2f%%), cached in %@",
                      Date().timeIntervalSince(started), 100 * accuracy, cacheURL.path)
    }

    /// `fraction` of each source's samples (seeded), labels offset into one joint label space.
    private func jointData() throws -> (Dataset, Int) {
        var inputs: [Float] = []
        var labels: [Int32] = []
        var offset = 0
        var sampleShape: [Int] = []
        for source in pretrain.sources {
            // As the tasks' fine-tuning reads them: channels first, a task's own normalisation.
            var data = try Dataset.load(source.train).arranged(for: plan.model.inputShape)
            if let normalize = plan.tasks.first(where: { $0.name == source.name && $0.train == source.train })?.normalize {
                data = data.normalized(normalize, for: plan.model.inputShape)
            }
            guard data.featureCount == plan.model.inputCount else {
                throw OrthofuseError("pretrain data '\(source.name)': samples have \(data.featureCount) features, the model input needs \(plan.model.inputCount)")
            }
            if let bad = data.labels.first(where: { $0 < 0 || Int($0) >= source.classes }) {
                throw OrthofuseError("pretrain data '\(source.name)': label \(bad) is outside 0..<\(source.classes)")
            }
            var random = RandomStream(seed: plan.seed, label: "pretrain-subset/\(source.name)")
            let take = max(1, Int((pretrain.fraction * Double(data.count)).rounded(.down)))
            let chosen = Array(random.permutation(data.count)[0..<take]).sorted()
            let subset = data.subset(chosen)
            inputs.append(contentsOf: subset.inputs)
            labels.append(contentsOf: subset.labels.map { $0 + Int32(offset) })
            offset += source.classes
            sampleShape = subset.sampleShape
        }
        return (Dataset(inputs: inputs, labels: labels, sampleShape: sampleShape), offset)
    }
}

/// `orthofuse pretrain`: makes a job's θ0 once, to be committed and named by other jobs' `base:`.
public enum BasePretraining {
    /// Rank 0 pre-trains (or reuses the cached) θ0 of `plan` and copies it to `destination`, which
    /// must not exist yet unless `replacing`; the other ranks wait. Returns rank 0's summary line.
    public static func run(plan: JobPlan, to destination: URL, replacing: Bool, communicator: any Communicator,
                           console: Console) throws -> String? {
        try PhaseAgreement.run(communicator) {
            communicator.rank == 0 ? try pretrainOnThisRank(plan: plan, to: destination, replacing: replacing, console: console) : nil
        }
    }

    private static func pretrainOnThisRank(plan: JobPlan, to destination: URL, replacing: Bool, console: Console) throws -> String {
        guard case let .pretrain(pretrain) = plan.base else {
            throw OrthofuseError("\(plan.name): the job has no pretrain: section, so there is no θ0 to pre-train")
        }
        let exists = FileManager.default.fileExists(atPath: destination.path)
        if exists, !replacing {
            throw OrthofuseError("\(destination.path) exists; pass --force to replace it")
        }
        // Both folders before the pre-training, which may take long, rather than after it.
        try FileSystemMessage.createDirectory(destination.deletingLastPathComponent())
        try RunLock.checkWritable(plan.output)  // the cache goes there: never into a user's folder
        try FileSystemMessage.createDirectory(plan.output)
        try plan.checkMemory(worldSize: 1)
        let pretrainer = Pretrainer(plan: plan, pretrain: pretrain, console: console)
        let base = FloatBuffer(count: plan.model.layout.totalCount)
        let description = try pretrainer.obtain(into: base)
        let bytes = try Data(contentsOf: pretrainer.cacheURL)
        try AtomicFile.write(bytes, to: destination)
        return "\(description); θ0 (\(base.count) parameters) written to \(destination.path)"
    }
}
