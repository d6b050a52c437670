// TaskArithmetic: task vectors τt = θt − θ0 and the addition merge θ0 + α Σt τt.

public enum TaskVector {
    /// τ = θ − θ0, element-wise over the whole backbone layout.
    public static func difference(finetuned: FloatBuffer, base: FloatBuffer) -> FloatBuffer {
        precondition(finetuned.count == base.count)
        let result = FloatBuffer(uninitializedCount: base.count)
        ElementWise.subtract(result.pointer, finetuned.pointer, base.pointer, count: base.count)
        return result
    }

    /// finetuned −= base, turning fine-tuned values into their task vector in place.
    public static func subtract(base: FloatBuffer, from finetuned: FloatBuffer) {
        precondition(finetuned.count == base.count)
        ElementWise.subtract(finetuned.pointer, finetuned.pointer, base.pointer, count: base.count)
    }

    /// Σt τt, accumulated in the order given (the job's task order), so that the sum is
    /// bitwise the same whichever ranks produced the vectors.
    public static func sum(_ taskVectors: [FloatBuffer], count: Int) -> FloatBuffer {
        let total = FloatBuffer(count: count)
        for vector in taskVectors {
            precondition(vector.count == count)
            ElementWise.add(total.pointer, vector.pointer, count: count)
        }
        return total
    }
}

public enum TaskArithmetic {
    /// merged = θ0 + α · Στ, where `taskVectorSum` is Στ (see TaskVector.sum).
    public static func merge(base: FloatBuffer, taskVectorSum: FloatBuffer, alpha: Float, into merged: FloatBuffer) {
        precondition(base.count == merged.count && taskVectorSum.count == merged.count)
        merge(base: base.pointer, taskVectorSum: taskVectorSum.pointer, alpha: alpha, into: merged.pointer, count: merged.count)
    }

    /// The same over `count` values at pointers (`merged` may be uninitialised memory).
    public static func merge(base: UnsafePointer<Float>, taskVectorSum: UnsafePointer<Float>, alpha: Float,
                             into merged: UnsafeMutablePointer<Float>, count: Int) {
        merged.update(from: base, count: count)
        ElementWise.axpy(merged, alpha, taskVectorSum, count: count)
    }
}
