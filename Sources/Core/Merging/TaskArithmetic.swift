// TaskArithmetic: task vectors τt = θt − θ0 and the addition merge θ0 + α Σt τt.

public enum TaskVector {
    /// τ = θ − θ0, element-wise over the whole backbone layout.
    public static func difference(finetuned: FloatBuffer, base: FloatBuffer) -> FloatBuffer {
        precondition(finetuned.count == base.count)
        let result = FloatBuffer(count: base.count)
        ElementWise.subtract(result.pointer, finetuned.pointer, base.pointer, count: base.count)
        return result
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
        merged.copy(from: base)
        ElementWise.axpy(merged.pointer, alpha, taskVectorSum.pointer, count: merged.count)
    }
}
