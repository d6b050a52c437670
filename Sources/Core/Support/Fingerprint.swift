// Fingerprint: short, stable identifiers of settings and weights (FNV-1a 64), for cache keys.

/// FNV-1a over bytes: not cryptographic, but stable across runs, platforms and Swift versions
/// (unlike `Hasher`), which is what a cache key needs.
public struct Fingerprint: Sendable {
    private var hash: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    public mutating func add(_ text: String) {
        for byte in text.utf8 { add(byte: byte) }
        add(byte: 0)  // separator: "ab"+"c" differs from "a"+"bc"
    }

    public mutating func add(_ values: FloatBuffer) {
        for i in 0..<values.count {
            var bits = values[i].bitPattern
            for _ in 0..<4 {
                add(byte: UInt8(bits & 0xff))
                bits >>= 8
            }
        }
    }

    @inline(__always) private mutating func add(byte: UInt8) {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }

    public var hex: String {
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
