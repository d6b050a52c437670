// Optimizer: AdamW and SGD with momentum over flat parameter buffers, and the learning-rate schedule.
import Foundation
import Kernels

public enum OptimizerKind: Sendable, Equatable {
    /// Decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.
    case adamw(beta1: Float, beta2: Float, epsilon: Float)
    /// Heavy-ball momentum with coupled L2 weight decay, as torch.optim.SGD.
    case sgd(momentum: Float)
}

public struct OptimizerSettings: Sendable, Equatable {
    public var kind: OptimizerKind
    public var learningRate: Float
    public var weightDecay: Float

    public init(kind: OptimizerKind, learningRate: Float, weightDecay: Float) {
        self.kind = kind
        self.learningRate = learningRate
        self.weightDecay = weightDecay
    }

    public static func adamw(learningRate: Float, weightDecay: Float = 0.1, beta1: Float = 0.9,
                             beta2: Float = 0.999, epsilon: Float = 1e-8) -> OptimizerSettings {
        OptimizerSettings(kind: .adamw(beta1: beta1, beta2: beta2, epsilon: epsilon),
                          learningRate: learningRate, weightDecay: weightDecay)
    }
}

/// Keeps the optimizer state (moments) in the parameters' flat layout and updates only the
/// trained ranges; the rest of the buffer (frozen parameters) is never touched.
public final class Optimizer {
    public let settings: OptimizerSettings
    public internal(set) var stepCount = 0
    let firstMoment: FloatBuffer
    let secondMoment: FloatBuffer

    public init(settings: OptimizerSettings, parameterCount: Int) {
        self.settings = settings
        firstMoment = FloatBuffer(count: parameterCount)
        if case .adamw = settings.kind {
            secondMoment = FloatBuffer(count: parameterCount)
        } else {
            secondMoment = FloatBuffer(count: 0)
        }
    }

    /// One update with learning rate `rate` (the schedule's value for this step).
    public func step(parameters: UnsafeMutablePointer<Float>, gradient: UnsafePointer<Float>,
                     rate: Float, ranges: [Range<Int>]) {
        stepCount += 1
        switch settings.kind {
        case let .adamw(beta1, beta2, epsilon):
            let t = Double(stepCount)
            let correction1 = Float(1 - pow(Double(beta1), t))
            let correction2Root = Float((1 - pow(Double(beta2), t)).squareRoot())
            let stepSize = rate / correction1
            let decay = 1 - rate * settings.weightDecay
            let m = firstMoment.pointer
            let v = secondMoment.pointer
            for range in ranges {
                Self.adamwKernel(parameters: parameters, gradient: gradient, m: m, v: v, range: range,
                                 decay: decay, beta1: beta1, beta2: beta2, stepSize: stepSize,
                                 correction2Root: correction2Root, epsilon: epsilon)
            }
        case let .sgd(momentum):
            let buffer = firstMoment.pointer
            let decay = settings.weightDecay
            let first = stepCount == 1
            for range in ranges {
                for i in range {
                    let g = gradient[i] + decay * parameters[i]
                    let velocity = momentum == 0 ? g : (first ? g : momentum * buffer[i] + g)
                    buffer[i] = velocity
                    parameters[i] -= rate * velocity
                }
            }
        }
    }
}

extension Optimizer {
    /// The AdamW update over one contiguous range, in the C kernels (vectorised for the CPU;
    /// the same operations in the same order as PyTorch's, lane by lane).
    @inline(__always)
    static func adamwKernel(
        parameters: UnsafeMutablePointer<Float>, gradient: UnsafePointer<Float>,
        m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, range: Range<Int>,
        decay: Float, beta1: Float, beta2: Float, stepSize: Float, correction2Root: Float, epsilon: Float
    ) {
        let start = range.lowerBound
        of_adamw(parameters + start, gradient + start, m + start, v + start, range.count, decay, beta1, beta2,
                 stepSize, correction2Root, epsilon)
    }
}

public enum LearningRateDecay: String, Sendable, Codable, CaseIterable {
    case constant, cosine, linear
}

/// Linear warm-up from 0 over `warmupSteps`, then the decay toward 0 at `totalSteps`
/// (as the released task-vector code's cosine_lr: lr·(step+1)/warmup, then ½(1 + cos(π·e/E))·lr).
public struct LearningRateSchedule: Sendable, Equatable {
    public var baseRate: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var decay: LearningRateDecay

    public init(baseRate: Float, warmupSteps: Int = 0, totalSteps: Int, decay: LearningRateDecay = .constant) {
        self.baseRate = baseRate
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.decay = decay
    }

    /// The rate for 0-based `step`.
    public func rate(at step: Int) -> Float {
        if step < warmupSteps {
            return baseRate * Float(step + 1) / Float(warmupSteps)
        }
        let decaySteps = totalSteps - warmupSteps
        guard decaySteps > 0 else { return baseRate }
        let progress = Double(step - warmupSteps) / Double(decaySteps)
        switch decay {
        case .constant: return baseRate
        case .cosine: return Float(0.5 * (1 + cos(Double.pi * progress))) * baseRate
        case .linear: return Float(1 - progress) * baseRate
        }
    }
}

public enum GradientClipping {
    /// Scales the gradient over `ranges` so its global L2 norm is at most `maxNorm`
    /// (torch.nn.utils.clip_grad_norm_: coefficient maxNorm / (norm + 1e-6), capped at 1).
    /// Returns the norm before clipping.
    @discardableResult
    public static func clip(_ gradient: UnsafeMutablePointer<Float>, ranges: [Range<Int>], maxNorm: Float) -> Double {
        var sum = 0.0
        for range in ranges {
            sum += ElementWise.sumOfSquares(gradient + range.lowerBound, count: range.count)
        }
        let norm = sum.squareRoot()
        guard maxNorm > 0 else { return norm }
        let coefficient = Double(maxNorm) / (norm + 1e-6)
        if coefficient < 1 {
            for range in ranges {
                ElementWise.scale(gradient + range.lowerBound, Float(coefficient), count: range.count)
            }
        }
        return norm
    }
}
