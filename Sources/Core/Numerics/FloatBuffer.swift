// FloatBuffer: a fixed-size, zero-initialised, heap-allocated Float array with pointer access.

/// Owns `count` floats for the lifetime of the object. Training keeps parameters, gradients,
/// optimizer moments and activations in these so that a step never allocates.
public final class FloatBuffer: @unchecked Sendable {
    // Sendable only in the sense needed to hand a finished buffer to another thread:
    // a buffer is mutated by one thread at a time by construction of its users.
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int) {
        precondition(count >= 0, "FloatBuffer count must be non-negative")
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    /// A copy of `values` (written once: no zero fill first, which for large buffers would be a
    /// second pass over fresh memory).
    public init(_ values: [Float]) {
        count = values.count
        pointer = .allocate(capacity: max(count, 1))
        values.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { pointer.initialize(from: base, count: count) }
        }
        if count == 0 { pointer.initialize(to: 0) }
    }

    deinit {
        pointer.deallocate()
    }

    public var buffer: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: pointer, count: count)
    }

    public var array: [Float] { Array(buffer) }

    public subscript(index: Int) -> Float {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }

    public func zero() {
        pointer.update(repeating: 0, count: count)
    }

    public func copy(from other: FloatBuffer) {
        precondition(other.count == count, "FloatBuffer size mismatch")
        pointer.update(from: other.pointer, count: count)
    }

    public func copy(from values: [Float]) {
        precondition(values.count == count, "FloatBuffer size mismatch")
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: count) }
    }
}
