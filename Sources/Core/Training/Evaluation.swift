// Evaluation: features, predictions and accuracy of a backbone and head over a dataset, in chunks.
import Foundation

public enum Evaluation {
    /// Backbone features of every sample [count, featureCount], in chunks of the workspace size.
    /// With `linearizedAround` θ0 the model is the linearized f(x; θ0) + J(x; θ0)(θ − θ0).
    public static func features(backbone: any Backbone, parameters: FloatBuffer, data: Dataset,
                                linearizedAround base: FloatBuffer? = nil) -> [Float] {
        let width = backbone.featureCount
        var result = [Float](repeating: 0, count: data.count * width)
        forEachChunk(backbone: backbone, parameters: parameters, data: data, linearizedAround: base) { start, rows, features in
            result.withUnsafeMutableBufferPointer {
                ($0.baseAddress! + start * width).update(from: features, count: rows * width)
            }
        }
        return result
    }

    /// Predicted class of every sample.
    public static func predictions(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                   data: Dataset, linearizedAround base: FloatBuffer? = nil) -> [Int32] {
        var result = [Int32](repeating: 0, count: data.count)
        let logits = FloatBuffer(count: backbone.maxBatch * head.classes)
        forEachChunk(backbone: backbone, parameters: parameters, data: data, linearizedAround: base) { start, rows, features in
            head.forward(logits: logits.pointer, features: features, batch: rows)
            for row in 0..<rows {
                result[start + row] = Int32(CrossEntropy.argmax(logits.pointer, row: row, classes: head.classes))
            }
        }
        return result
    }

    /// Top-1 accuracy in [0, 1] (0 for an empty dataset).
    public static func accuracy(backbone: any Backbone, parameters: FloatBuffer, head: ClassificationHead,
                                data: Dataset, linearizedAround base: FloatBuffer? = nil) -> Double {
        guard data.count > 0 else { return 0 }
        let predicted = predictions(backbone: backbone, parameters: parameters, head: head, data: data,
                                    linearizedAround: base)
        var correct = 0
        for i in 0..<data.count where predicted[i] == data.labels[i] { correct += 1 }
        return Double(correct) / Double(data.count)
    }

    /// Runs the model over `data` in chunks of the backbone's cache block, handing each chunk's
    /// features (start row, rows, pointer valid during the call) to `body`.
    private static func forEachChunk(
        backbone: any Backbone, parameters: FloatBuffer, data: Dataset, linearizedAround base: FloatBuffer?,
        _ body: (Int, Int, UnsafePointer<Float>) -> Void
    ) {
        let width = backbone.featureCount
        var tangent: FloatBuffer?
        var featureTangent: FloatBuffer?
        if let base {
            tangent = TaskVector.difference(finetuned: parameters, base: base)
            featureTangent = FloatBuffer(count: backbone.maxBatch * width)
        }
        data.inputs.withUnsafeBufferPointer { inputs in
            var start = 0
            while start < data.count {
                let rows = min(backbone.cacheBlock, data.count - start)
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
            }
        }
    }
}
