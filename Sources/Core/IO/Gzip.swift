// Gzip: RFC 1952 gzip decoding, and the bounded raw-deflate inflation it shares with .npz reading.
import Foundation
import ZIPFoundation

/// Inflates raw deflate streams with ZIPFoundation's decoder, bounded so that bad input ends in an
/// error rather than a hang, an over-read or an unbounded allocation.
enum RawDeflate {
    struct Failure: Error {
        let message: String
        /// The stream decoded but its length disagrees with the recorded size.
        var isSizeMismatch = false
    }

    /// Deflate cannot expand more than 1032:1 (258 bytes from two bits); larger claims are corrupt.
    static func isPlausible(compressedCount: Int, expandedCount: Int) -> Bool {
        let (bound, overflow) = compressedCount.multipliedReportingOverflow(by: 1032)
        return overflow || expandedCount <= bound + 1024
    }

    /// The first `count` bytes `compressed` inflates to (fewer when the stream is shorter), without
    /// inflating the rest: enough to read a file's own header before trusting its sizes.
    static func inflatePrefix(_ compressed: Data, count: Int) throws -> Data {
        var prefix = Data()
        do {
            _ = try inflate(compressed, expectedCount: count, stopAfter: count) { prefix = $0 }
        } catch let failure as Failure where failure.isSizeMismatch {
            // A stream shorter than `count`: its whole output is the prefix.
        }
        return prefix
    }

    /// Inflates `compressed`, which must produce exactly `expectedCount` bytes; returns the output and its CRC32.
    static func inflate(_ compressed: Data, expectedCount: Int) throws -> (output: Data, crc32: CRC32) {
        var output = Data()
        let checksum = try inflate(compressed, expectedCount: expectedCount, stopAfter: nil) { output = $0 }
        return (output, checksum)
    }

    private struct PrefixReached: Error {}

    /// The shared loop; with `stopAfter`, inflation ends once that many bytes are out (`deliver`
    /// gets them, the CRC is not meaningful).
    private static func inflate(_ compressed: Data, expectedCount: Int, stopAfter: Int?,
                                deliver: (Data) -> Void) throws -> CRC32 {
        guard !compressed.isEmpty else { throw Failure(message: "the compressed data is empty") }
        guard stopAfter != nil || isPlausible(compressedCount: compressed.count, expandedCount: expectedCount) else {
            throw Failure(message: "\(compressed.count) compressed bytes cannot expand to the recorded \(expectedCount) bytes")
        }
        let input = compressed.startIndex == 0 ? compressed : Data(compressed)
        // ZIPFoundation's Linux decoder tells zlib that every chunk is a full buffer, so the provider
        // always returns exactly the requested size (zero-padded at the end), and it loops until the
        // stream ends, so asking past the input must throw.
        // A header prefix needs only a small first chunk.
        let bufferSize = min(input.count, stopAfter == nil ? 4 << 20 : 1 << 16)
        var output = Data()
        output.reserveCapacity(stopAfter ?? expectedCount)
        var overflowed = false
        var ranOut = false
        do {
            // The CRC is zlib's, over the whole output below: ZIPFoundation's own is bytewise.
            _ = try Data.decompress(
                size: Int64(input.count), bufferSize: bufferSize, skipCRC32: true,
                provider: { position, size in
                    let start = Int(position)
                    if size == 0 { return Data() }
                    guard start < input.count else {
                        ranOut = true
                        throw Failure(message: "truncated")
                    }
                    var chunk = input.subdata(in: start..<min(start + size, input.count))
                    if chunk.count < size { chunk.append(Data(count: size - chunk.count)) }
                    return chunk
                },
                consumer: { piece in
                    if let stopAfter {
                        output.append(piece.prefix(stopAfter - output.count))
                        if output.count >= stopAfter { throw PrefixReached() }
                        return
                    }
                    guard output.count + piece.count <= expectedCount else {
                        overflowed = true
                        throw Failure(message: "too long")
                    }
                    output.append(piece)
                })
        } catch is PrefixReached {
            deliver(output)
            return 0
        } catch {
            if ranOut { throw Failure(message: "the compressed data ends before the deflate stream does") }
            if overflowed {
                throw Failure(message: "the data inflates to more than the recorded \(expectedCount) bytes", isSizeMismatch: true)
            }
            throw Failure(message: "invalid deflate data")
        }
        guard output.count == expectedCount else {
            if stopAfter != nil { deliver(output) }
            throw Failure(message: "the data inflates to \(output.count) bytes, not the recorded \(expectedCount)",
                          isSizeMismatch: true)
        }
        let checksum = Checksum.crc32(output)
        deliver(output)
        return checksum
    }
}

public enum Gzip {
    /// True when `data` starts with the gzip magic bytes 1f 8b.
    public static func hasMagic(_ data: Data) -> Bool {
        data.count >= 2 && data[data.startIndex] == 0x1F && data[data.startIndex + 1] == 0x8B
    }

    /// A single-member gzip file's parts: the deflate stream and the trailer's CRC32 and size.
    struct Member {
        let deflate: Data
        let expectedCRC: UInt32
        /// The uncompressed size modulo 2^32, as the trailer records it.
        let expandedSize: Int
        let source: String

        /// Parses the header (checking its CRC when present) and the trailer of `data`.
        init(_ data: Data, source: String) throws {
            func fail(_ problem: String) -> OrthofuseError { OrthofuseError("\(source): \(problem)") }
            let bytes = data.startIndex == 0 ? data : Data(data)
            let trailerSize = 8
            guard Gzip.hasMagic(bytes) else { throw fail("not a gzip file (missing the 1f 8b magic)") }
            guard bytes.count >= 10 + trailerSize else {
                throw fail("gzip file is truncated (\(bytes.count) bytes)")
            }
            let trailerStart = bytes.count - trailerSize
            let method = bytes[2]
            let flags = bytes[3]
            guard method == 8 else { throw fail("unsupported gzip compression method \(method) (only deflate, 8)") }
            guard flags & 0xE0 == 0 else { throw fail("gzip header has reserved flag bits set (file corrupt)") }

            // Optional header fields, in RFC 1952 order; all must end before the 8-byte trailer.
            let hasHeaderCRC = flags & 0x02 != 0, hasExtra = flags & 0x04 != 0
            let hasName = flags & 0x08 != 0, hasComment = flags & 0x10 != 0
            var position = 10
            let truncatedHeader = fail("gzip header is truncated (file truncated or corrupt)")
            if hasExtra {
                guard position + 2 <= trailerStart else { throw truncatedHeader }
                let extraLength = Int(bytes[position]) | Int(bytes[position + 1]) << 8
                position += 2
                guard extraLength <= trailerStart - position else { throw truncatedHeader }
                position += extraLength
            }
            for present in [hasName, hasComment] where present {
                guard let terminator = bytes[position..<trailerStart].firstIndex(of: 0) else { throw truncatedHeader }
                position = terminator + 1
            }
            if hasHeaderCRC {
                guard position + 2 <= trailerStart else { throw truncatedHeader }
                let stored = UInt16(bytes[position]) | UInt16(bytes[position + 1]) << 8
                let computed = UInt16(truncatingIfNeeded: bytes.withUnsafeBytes { Checksum.crc32(UnsafeRawBufferPointer(rebasing: $0[0..<position])) })
                guard stored == computed else { throw fail("gzip header CRC mismatch (file corrupt)") }
                position += 2
            }
            (expectedCRC, expandedSize) = bytes.withUnsafeBytes { raw in
                (raw.littleEndianInteger(at: trailerStart, as: UInt32.self),
                 Int(raw.littleEndianInteger(at: trailerStart + 4, as: UInt32.self)))
            }
            deflate = bytes[position..<trailerStart]
            self.source = source
        }

        /// The first `count` uncompressed bytes (fewer if the data is shorter).
        func inflatePrefix(count: Int) throws -> Data {
            do {
                return try RawDeflate.inflatePrefix(deflate, count: count)
            } catch let failure as RawDeflate.Failure {
                throw OrthofuseError("\(source): gzip data is damaged: \(failure.message) (file truncated or corrupt)")
            }
        }
    }

    /// Decodes a single-member gzip file, checking the header CRC (if present), the CRC32 and the size.
    /// `source` prefixes every error message.
    public static func decompress(_ data: Data, source: String) throws -> Data {
        func fail(_ problem: String) -> OrthofuseError { OrthofuseError("\(source): \(problem)") }
        let member = try Member(data, source: source)
        let output: Data
        let checksum: CRC32
        do {
            (output, checksum) = try RawDeflate.inflate(member.deflate, expectedCount: member.expandedSize)
        } catch let failure as RawDeflate.Failure {
            let limits = failure.isSizeMismatch ? "; gzip members over 4 GiB and multi-member files are not supported" : ""
            throw fail("gzip data is damaged: \(failure.message) (file truncated or corrupt\(limits))")
        }
        guard checksum == member.expectedCRC else {
            throw fail("gzip CRC32 mismatch: trailer records \(hex(member.expectedCRC)), data has \(hex(checksum)) (file corrupt)")
        }
        return output
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}
