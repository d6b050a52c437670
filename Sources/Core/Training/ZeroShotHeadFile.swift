// ZeroShotHeadFile: a task's frozen head given as a file — CLIP's zero-shot classifier, the class
// names' text embeddings — read as cosine similarity × exp(logit_scale).
import Foundation

public enum ZeroShotHeadFile {
    /// The tensor names of the file.
    public static let weightName = "weight"
    public static let logitScaleName = "logit_scale"
    /// exp(logit_scale) without a `logit_scale` tensor: CLIP's trained scale (its clamp).
    public static let defaultScale: Float = 100

    /// The head of `url`: a safetensors file with `weight` [classes, featureCount] (one text
    /// embedding per class, in the task's label order) and optionally `logit_scale` (a scalar, as
    /// CLIP stores it: the log of the scale). Logits are exp(logit_scale) · cos(f, t_c): the
    /// features and each row are normalised to unit length, the bias is 0. Any other tensor, a
    /// wrong shape, a non-finite value, a zero row or a scale beyond 10^4 is one error line naming
    /// the file (`origin`).
    public static func load(_ url: URL, classes: Int, featureCount: Int, origin: String) throws -> ClassificationHead {
        let file = try Safetensors.read(url)
        if let other = file.names.first(where: { $0 != weightName && $0 != logitScaleName }) {
            throw OrthofuseError("\(origin): unexpected tensor '\(other)' (a head file holds '\(weightName)' [classes, features] and optionally '\(logitScaleName)')")
        }
        guard let weight = file[weightName] else {
            throw OrthofuseError("\(origin): no '\(weightName)' tensor (the class embeddings, [classes, features])")
        }
        guard weight.shape == [classes, featureCount] else {
            throw OrthofuseError("\(origin): '\(weightName)' has shape \(weight.shape), expected [\(classes), \(featureCount)] (the task's classes, the backbone's feature width)")
        }
        try ParameterLayout.checkFinite(weight.values, tensor: weightName, origin: origin)
        let scale = try self.scale(file, origin: origin)
        if let row = (0..<classes).first(where: { row in
            weight.values[(row * featureCount)..<((row + 1) * featureCount)].allSatisfy { $0 == 0 }
        }) {
            throw OrthofuseError("\(origin): row \(row) of '\(weightName)' is zero")
        }
        let head = ClassificationHead(classes: classes, featureCount: featureCount, normalizesFeatures: true)
        head.setClassDirections(weight.values.map(Double.init), scale: Double(scale))
        return head
    }

    /// exp(logit_scale), or the default without one.
    private static func scale(_ file: SafetensorsFile, origin: String) throws -> Float {
        guard let logitScale = file[logitScaleName] else { return defaultScale }
        guard logitScale.values.count == 1, logitScale.shape.count <= 1 else {
            throw OrthofuseError("\(origin): '\(logitScaleName)' has shape \(logitScale.shape), expected a scalar")
        }
        let scale = exp(Double(logitScale.values[0]))
        guard scale.isFinite, scale > 0, scale <= 1e4 else {
            throw OrthofuseError("\(origin): '\(logitScaleName)' is \(logitScale.values[0]); exp of it must be in (0, 10000]")
        }
        return Float(scale)
    }
}
