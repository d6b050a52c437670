// SyntheticTasks: small classification tasks written as real IDX files, and a job file using them.
import Core
import Foundation

public enum SyntheticTasks {
    /// Writes `taskCount` tasks (IDX, uint8 4×4 images, `classes` classes each) under `directory`:
    /// each class is a random prototype plus noise, so the tasks are learnable but not trivial.
    public static func write(to directory: URL, taskCount: Int = 3, classes: Int = 4,
                             trainCount: Int = 240, testCount: Int = 80, seed: UInt64 = 7) throws -> [String] {
        var names: [String] = []
        for task in 0..<taskCount {
            let name = "task\(task)"
            var random = RandomStream(seed: seed, label: name)
            let prototypes = (0..<classes).map { _ in (0..<16).map { _ in random.nextDouble() * 255 } }
            for (split, count) in [("train", trainCount), ("test", testCount)] {
                var images: [UInt8] = []
                var labels: [UInt8] = []
                for i in 0..<count {
                    let label = i % classes
                    labels.append(UInt8(label))
                    for pixel in prototypes[label] {
                        let value = pixel + 60 * random.nextGaussian()
                        images.append(UInt8(max(0, min(255, value.rounded()))))
                    }
                }
                let folder = directory.appendingPathComponent(name)
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                try idx(magic: 0x0803, dimensions: [count, 4, 4], bytes: images)
                    .write(to: folder.appendingPathComponent("\(split)-images.idx"))
                try idx(magic: 0x0801, dimensions: [count], bytes: labels)
                    .write(to: folder.appendingPathComponent("\(split)-labels.idx"))
            }
            names.append(name)
        }
        return names
    }

    /// The IDX format: big-endian magic (0x0000 08 NDIM), big-endian UInt32 dimensions, data.
    public static func idx(magic: UInt32, dimensions: [Int], bytes: [UInt8]) -> Data {
        var data = Data()
        func bigEndian(_ value: UInt32) {
            data.append(contentsOf: [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)])
        }
        bigEndian(magic)
        for dimension in dimensions { bigEndian(UInt32(dimension)) }
        data.append(contentsOf: bytes)
        return data
    }

    /// A job over the synthetic tasks (paths relative to `directory`, where the job is saved).
    /// The disentanglement error is off unless asked for: it costs more evaluations than these
    /// tiny jobs spend on training.
    public static func jobYAML(taskNames: [String], steps: Int = 40, extra: String = "",
                               orthoRegLambda: Double = 0.5, disentanglement: Bool = false) -> String {
        let tasks = taskNames.map { name in
            """
              - name: \(name)
                classes: 4
                train: {images: \(name)/train-images.idx, labels: \(name)/train-labels.idx}
                test: {images: \(name)/test-images.idx, labels: \(name)/test-labels.idx}
            """
        }.joined(separator: "\n")
        return """
            name: synthetic
            seed: 11
            model: {arch: mlp, input: [16], hidden: [12, 8], activation: gelu}
            pretrain: {fraction: 0.5, steps: 30, batch_size: 16, optimizer: {name: adamw, lr: 1.0e-2, weight_decay: 0.0}}
            tasks:
            \(tasks)
            finetune:
              mode: full
              steps: \(steps)
              batch_size: 16
              optimizer: {name: adamw, lr: 5.0e-3, weight_decay: 0.1}
              schedule: {warmup_steps: 5, decay: cosine}
              grad_clip: 1.0
              orthoreg: {lambda: \(orthoRegLambda), form: frobenius}
            head: {steps: 60, batch_size: 32, optimizer: {name: adamw, lr: 1.0e-2, weight_decay: 0.0}}
            merge:
              methods: [task_arithmetic]
              alpha: {from: 0.2, to: 1.0, count: 9}
            output: out
            \(disentanglement ? "" : "evaluate: {disentanglement: false}")
            \(extra)
            """
    }
}
