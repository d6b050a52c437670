// PrototypeHead: k-shot class prototypes read with cosine logits, a head that never saw a training set in bulk.
import Foundation

public struct PrototypeSettings: Sendable, Equatable {
    public var shots: Int
    public var temperature: Float

    public init(shots: Int, temperature: Float) {
        self.shots = shots
        self.temperature = temperature
    }
}

public enum PrototypeHead {
    /// Sets a cosine `head` to the zero-shot analog of CLIP's text heads: row c of the weight is
    /// temperature × the unit mean of the unit θ0 features of the first `shots` examples of class c
    /// in a seeded shuffle of `data`; the bias is 0. Every class needs at least one example.
    public static func fit(head: ClassificationHead, backbone: any Backbone, parameters: FloatBuffer, data: Dataset,
                           settings: PrototypeSettings, random: RandomStream, task: String,
                           betweenChunks: BetweenChunks = {}) throws {
        precondition(head.normalizesFeatures, "a prototype head reads normalised features")
        var random = random
        var chosen: [[Int]] = Array(repeating: [], count: head.classes)
        for index in random.permutation(data.count) {
            let label = Int(data.labels[index])
            if chosen[label].count < settings.shots { chosen[label].append(index) }
        }
        if let missing = chosen.firstIndex(where: \.isEmpty) {
            throw OrthofuseError("task '\(task)': no training example of class \(missing) for its prototype head")
        }
        let indices = chosen.flatMap { $0 }
        let features = try Evaluation.features(backbone: backbone, parameters: parameters, data: data.subset(indices),
                                               betweenChunks: betweenChunks)
        let width = head.featureCount
        var sums = [Double](repeating: 0, count: head.classes * width)
        for (row, index) in indices.enumerated() {
            let label = Int(data.labels[index])
            let feature = features[(row * width)..<((row + 1) * width)]
            let norm = feature.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            guard norm > 0 else { continue }
            for (i, value) in feature.enumerated() { sums[label * width + i] += Double(value) / norm }
        }
        head.setClassDirections(sums, scale: Double(settings.temperature))
    }
}
