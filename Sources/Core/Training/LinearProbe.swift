// LinearProbe: the head fitted on frozen θ0 features (the default "zero-shot" head).
import Foundation

public enum LinearProbe {
    /// Fits `head` on frozen backbone features of `data` (softmax regression, minibatch, seeded).
    /// Features are computed once; only the head's parameters change.
    public static func fit(
        head: ClassificationHead, backbone: any Backbone, parameters: FloatBuffer, data: Dataset,
        steps: Int, batchSize: Int, optimizer settings: OptimizerSettings, random: RandomStream,
        betweenChunks: BetweenChunks
    ) rethrows {
        let features = try Evaluation.features(backbone: backbone, parameters: parameters, data: data,
                                               betweenChunks: betweenChunks)
        let featureData = Dataset(inputs: features, labels: data.labels, sampleShape: [backbone.featureCount])
        let sampler = MinibatchSampler(data: featureData, batchSize: batchSize, random: random)
        let batch = sampler.batchSize
        let logits = FloatBuffer(count: batch * head.classes)
        let logitGradient = FloatBuffer(count: batch * head.classes)
        let gradient = FloatBuffer(count: head.layout.totalCount)
        let optimizer = Optimizer(settings: settings, parameterCount: gradient.count)
        for _ in 0..<steps {
            sampler.next()
            head.forward(logits: logits.pointer, features: sampler.inputs.pointer, batch: batch)
            sampler.labels.withUnsafeBufferPointer {
                _ = CrossEntropy.forwardBackward(logitGradient: logitGradient.pointer, logits: logits.pointer,
                                                 labels: $0.baseAddress!, batch: batch, classes: head.classes)
            }
            gradient.zero()
            head.backward(featureGradient: nil, parameterGradient: gradient.pointer,
                          logitGradient: logitGradient.pointer, features: sampler.inputs.pointer, batch: batch)
            optimizer.step(parameters: head.parameters.pointer, gradient: gradient.pointer,
                           rate: settings.learningRate, ranges: [0..<gradient.count])
        }
    }
}

extension LinearProbe {
    /// `fit` with nothing to do between the feature chunks.
    public static func fit(
        head: ClassificationHead, backbone: any Backbone, parameters: FloatBuffer, data: Dataset,
        steps: Int, batchSize: Int, optimizer settings: OptimizerSettings, random: RandomStream
    ) {
        fit(head: head, backbone: backbone, parameters: parameters, data: data, steps: steps, batchSize: batchSize,
            optimizer: settings, random: random, betweenChunks: {})
    }
}
