// Backbone: the interface every feature extractor implements (the MLP and the ViT).

/// A feature extractor with manual forward and backward over a flat parameter buffer.
/// An instance owns its activation workspace, sized for `maxBatch` rows, so a training step
/// allocates nothing; it is therefore used by one thread at a time.
public protocol Backbone: AnyObject {
    var layout: ParameterLayout { get }
    /// Features of one input sample (its flattened size).
    var inputCount: Int { get }
    /// The shape of one input sample: [features] for the MLP, [channels, height, width] for the ViT.
    var inputShape: [Int] { get }
    /// Width of the features handed to a task's classification head.
    var featureCount: Int { get }
    var maxBatch: Int { get }
    /// The most samples a training step or an evaluation runs through the network at once when it
    /// may choose (`cacheBlockSamples` of a ViT; the whole workspace for an MLP). Rows beyond it
    /// go in further blocks whose parameter gradients add up.
    var cacheBlock: Int { get }

    /// Runs the network on `batch` rows of `inputs` [batch, inputCount]; returns a pointer to the
    /// features [batch, featureCount], valid until the next call. Saves what backward needs.
    func forward(parameters: UnsafePointer<Float>, inputs: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float>

    /// Back-propagates `featureGradient` [batch, featureCount] through the last forward call;
    /// *adds* into `parameterGradient` (layout order) and into `inputGradient` when given.
    func backward(
        featureGradient: UnsafePointer<Float>, parameters: UnsafePointer<Float>, inputs: UnsafePointer<Float>,
        batch: Int, parameterGradient: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?)

    /// Forward-mode derivative (JVP) for linearized fine-tuning: runs the forward pass at
    /// `parameters` exactly as `forward` does (saving what `backward` needs, and returning the
    /// same features), and also writes J(x; θ)·`tangent` [batch, featureCount] into
    /// `featureTangent`, where `tangent` is a direction in parameter space (layout order).
    func forwardWithTangent(
        parameters: UnsafePointer<Float>, tangent: UnsafePointer<Float>, inputs: UnsafePointer<Float>, batch: Int,
        featureTangent: UnsafeMutablePointer<Float>) -> UnsafePointer<Float>

    /// Seeded initialisation of all parameters.
    func initialize(_ parameters: FloatBuffer, random: inout RandomStream)
}

extension Backbone {
    public var cacheBlock: Int { maxBatch }
}
