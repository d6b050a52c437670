// Evaluation: features, predictions and accuracy of a backbone and head over a dataset, in chunks.
import Foundation

/// Called between the chunks of an evaluation: rank 0 serves its workers' messages there while it
/// evaluates a task of its own (a throw ends the evaluation).
public typealias BetweenChunks = () throws -> Void

public enum Evaluation {
    /// Backbone features of every sample [count, featureCount], in chunks of the cache block.
    /// With `linearizedAround` θ0 the model is the linearized f(x; θ0) + J(x; θ0)(θ − θ0).
    public static func features(backbone: any Backbone, parameters: FloatBuffer, data: Dataset,
                                linearizedAround base: FloatBuffer? = nil,
                                betweenChunks: BetweenChunks) rethrows -> [Float] {
        let width = backbone.featureCount
        var result = [Float](repeating: 0, count: data.count * width)
        try forEachChunk(backbone: backbone, parameters: parameters, data: data, linearizedAround: base,
                         betweenChunks: betweenChunks) { start, rows, features in
            result.withUnsafeMutableBufferPointer {
                ($0.baseAddress! + start * width).update(from: features, count: rows * width)
            }
        }
        return result
    }

    /// Predicted class of every sample.
    public static func predictions(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                   data: Dataset, linearizedAround base: FloatBuffer? = nil,
                                   betweenChunks: BetweenChunks) rethrows -> [Int32] {
        var result = [Int32](repeating: 0, count: data.count)
        let logits = FloatBuffer(count: backbone.maxBatch * head.classes)
        try forEachChunk(backbone: backbone, parameters: parameters, data: data, linearizedAround: base,
                         betweenChunks: betweenChunks) { start, rows, features in
            head.forward(logits: logits.pointer, features: features, batch: rows)
            for row in 0..<rows {
                result[start + row] = Int32(CrossEntropy.argmax(logits.pointer, row: row, classes: head.classes))
            }
        }
        return result
    }

    /// Top-1 accuracy in [0, 1] (0 for an empty dataset).
    public static func accuracy(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                data: Dataset, linearizedAround base: FloatBuffer? = nil,
                                betweenChunks: BetweenChunks) rethrows -> Double {
        guard data.count > 0 else { return 0 }
        let correct = try correctCount(backbone: backbone, parameters: parameters, head: head, data: data,
                                       rows: 0..<data.count, linearizedAround: base,
                                       logits: FloatBuffer(count: backbone.maxBatch * head.classes),
                                       betweenChunks: betweenChunks)
        return Double(correct) / Double(data.count)
    }

    /// Samples among `rows` of `data` whose predicted class is their label.
    static func correctCount(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead, data: Dataset,
                             rows: Range<Int>, linearizedAround base: FloatBuffer?, logits: FloatBuffer,
                             betweenChunks: BetweenChunks) rethrows -> Int {
        var correct = 0
        try forEachChunk(backbone: backbone, parameters: parameters, data: data, rows: rows, linearizedAround: base,
                         betweenChunks: betweenChunks) { start, count, features in
            correct += correctInChunk(head: head, features: features, labels: data.labels, start: start, count: count,
                                      logits: logits)
        }
        return correct
    }

    /// The chunk's samples (`count` rows from row `start`, their `features`) that `head` classifies as labelled.
    static func correctInChunk(head: ClassificationHead, features: UnsafePointer<Float>, labels: [Int32], start: Int,
                               count: Int, logits: FloatBuffer) -> Int {
        head.forward(logits: logits.pointer, features: features, batch: count)
        var correct = 0
        for row in 0..<count
        where Int32(CrossEntropy.argmax(logits.pointer, row: row, classes: head.classes)) == labels[start + row] {
            correct += 1
        }
        return correct
    }

    // The same with nothing to do between chunks (a rethrows function's default closure would
    // make every call a `try`).

    public static func features(backbone: any Backbone, parameters: FloatBuffer, data: Dataset,
                                linearizedAround base: FloatBuffer? = nil) -> [Float] {
        features(backbone: backbone, parameters: parameters, data: data, linearizedAround: base, betweenChunks: {})
    }

    public static func predictions(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                   data: Dataset, linearizedAround base: FloatBuffer? = nil) -> [Int32] {
        predictions(backbone: backbone, parameters: parameters, head: head, data: data, linearizedAround: base,
                    betweenChunks: {})
    }

    public static func accuracy(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                data: Dataset, linearizedAround base: FloatBuffer? = nil) -> Double {
        accuracy(backbone: backbone, parameters: parameters, head: head, data: data, linearizedAround: base,
                 betweenChunks: {})
    }

    /// Runs the model over `data` in chunks of the backbone's cache block, handing each chunk's
    /// features (start row, rows, pointer valid during the call) to `body`; `betweenChunks` after each.
    /// `rows` (default all) are run from their first in chunks: a chunk's rows, and so its bits, are
    /// the same wherever a split's rows are cut as long as the cuts fall on multiples of the block.
    static func forEachChunk(
        backbone: any Backbone, parameters: FloatBuffer, data: Dataset, rows range: Range<Int>? = nil,
        linearizedAround base: FloatBuffer?, betweenChunks: BetweenChunks, _ body: (Int, Int, UnsafePointer<Float>) -> Void
    ) rethrows {
        let range = range ?? 0..<data.count
        precondition(range.lowerBound >= 0 && range.upperBound <= data.count, "rows \(range) of \(data.count) samples")
        let width = backbone.featureCount
        var tangent: FloatBuffer?
        var featureTangent: FloatBuffer?
        if let base {
            tangent = TaskVector.difference(finetuned: parameters, base: base)
            featureTangent = FloatBuffer(count: backbone.maxBatch * width)
        }
        try data.inputs.withUnsafeBufferPointer { inputs in
            var start = range.lowerBound
            while start < range.upperBound {
                let rows = min(backbone.cacheBlock, range.upperBound - start)
                let chunk = inputs.baseAddress! + start * data.featureCount
                if let base, let tangent, let featureTangent {
                    let primal = backbone.forwardWithTangent(parameters: base.pointer, tangent: tangent.pointer,
                                                             inputs: chunk, batch: rows,
                                                             featureTangent: featureTangent.pointer)
                    ElementWise.add(featureTangent.pointer, primal, count: rows * width)
                    body(start, rows, UnsafePointer(featureTangent.pointer))
                } else {
                    body(start, rows, backbone.forward(parameters: parameters.pointer, inputs: chunk, batch: rows))
                }
                start += rows
                try betweenChunks()
            }
        }
    }
}
