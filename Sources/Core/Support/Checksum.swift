// Checksum: SHA-256 (swift-crypto) of bytes, float buffers and job texts, as lowercase hex.
import Crypto
import Foundation

public enum Checksum {
    public static func sha256(_ bytes: some Sequence<UInt8>) -> String {
        SHA256.hash(data: Array(bytes)).map { String(format: "%02x", $0) }.joined()
    }

    /// Of a file's bytes as read, without copying them.
    public static func sha256(_ data: Data) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    public static func sha256(_ text: String) -> String {
        sha256(Array(text.utf8))
    }

    /// Of the float32 little-endian bytes, as a safetensors file stores them.
    public static func sha256(_ values: FloatBuffer) -> String {
        var hasher = SHA256()
        let chunk = 1 << 20
        var start = 0
        while start < values.count {
            let count = min(chunk, values.count - start)
            hasher.update(bufferPointer: UnsafeRawBufferPointer(start: values.pointer + start, count: count * 4))
            start += count
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
