// FloatBuffer: a fixed-size, zero-initialised, heap-allocated Float array with pointer access,
// or a view of a slice of another one.
#if canImport(Glibc)
import Glibc
#endif

/// Owns `count` floats for the lifetime of the object. Training keeps parameters, gradients,
/// optimizer moments and activations in these so that a step never allocates.
public final class FloatBuffer: @unchecked Sendable {
    // Sendable only in the sense needed to hand a finished buffer to another thread:
    // a buffer is mutated by one thread at a time by construction of its users.
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>
    /// The buffer whose memory this one views (kept alive by this reference); nil when it owns its own.
    private let viewed: FloatBuffer?

    public init(count: Int) {
        precondition(count >= 0, "FloatBuffer count must be non-negative")
        self.count = count
        pointer = Self.allocateStorage(count)
        pointer.initialize(repeating: 0, count: max(count, 1))
        viewed = nil
    }

    /// `count` floats whose values are whatever the memory held: for buffers about to be
    /// overwritten entirely (a receive), where a zero fill would be a wasted pass. With
    /// `hugePages`, a buffer of `hugePageThreshold` bytes or more is backed by 2 MiB pages where
    /// the kernel allows (transparent huge pages in "madvise" mode): first touching 256 MB then
    /// costs 128 page faults instead of 65,536, which otherwise dominate receiving task vectors.
    /// Off by default: whole huge pages stay resident, which a buffer that is filled slowly or
    /// partly pays for in memory.
    public init(uninitializedCount count: Int, hugePages: Bool = false) {
        precondition(count >= 0, "FloatBuffer count must be non-negative")
        self.count = count
        pointer = Self.allocateStorage(count, hugePages: hugePages)
        viewed = nil
    }

    /// A view of `count` floats of `buffer` from `offset`: no copy; writes show in both.
    public init(viewing buffer: FloatBuffer, offset: Int, count: Int) {
        precondition(offset >= 0 && count >= 0 && offset + count <= buffer.count, "FloatBuffer view outside its buffer")
        self.count = count
        pointer = buffer.pointer + offset
        viewed = buffer
    }

    /// A copy of `values` (written once: no zero fill first, which for large buffers would be a
    /// second pass over fresh memory).
    public init(_ values: [Float]) {
        count = values.count
        let storage = Self.allocateStorage(count)
        values.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { storage.initialize(from: base, count: source.count) }
        }
        if values.isEmpty { storage.initialize(to: 0) }
        pointer = storage
        viewed = nil
    }

    deinit {
        if viewed == nil { free(pointer) }
    }

    static let hugePageThreshold = 8 << 20
    private static let hugePageSize = 2 << 20

    private static func allocateStorage(_ count: Int, hugePages: Bool = false) -> UnsafeMutablePointer<Float> {
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let huge = hugePages && bytes >= hugePageThreshold
        var memory: UnsafeMutableRawPointer?
        guard posix_memalign(&memory, huge ? hugePageSize : 64, bytes) == 0, let memory else {
            fatalError("FloatBuffer: cannot allocate \(bytes) bytes")
        }
        if huge { _ = madvise(memory, bytes, MADV_HUGEPAGE) }
        return memory.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    /// Asks for 2 MiB pages under the whole 2 MiB-aligned part of fresh, untouched memory of
    /// `bytes` bytes at `start` (memory another allocator made, such as an array about to be
    /// filled in one go); below `hugePageThreshold` it does nothing.
    static func adviseHugePages(_ start: UnsafeMutableRawPointer, bytes: Int) {
        guard bytes >= hugePageThreshold else { return }
        let first = (Int(bitPattern: start) + hugePageSize - 1) / hugePageSize * hugePageSize
        let end = (Int(bitPattern: start) + bytes) / hugePageSize * hugePageSize
        guard end > first, let aligned = UnsafeMutableRawPointer(bitPattern: first) else { return }
        _ = madvise(aligned, end - first, MADV_HUGEPAGE)
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
