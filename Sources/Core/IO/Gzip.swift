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

    /// Inflates `compressed`, which must produce exactly `expectedCount` bytes; returns the output and its CRC32.
    static func inflate(_ compressed: Data, expectedCount: Int) throws -> (output: Data, crc32: CRC32) {
        guard !compressed.isEmpty else { throw Failure(message: "the compressed data is empty") }
        guard isPlausible(compressedCount: compressed.count, expandedCount: expectedCount) else {
            throw Failure(message: "\(compressed.count) compressed bytes cannot expand to the recorded \(expectedCount) bytes")
        }
        let input = compressed.startIndex == 0 ? compressed : Data(compressed)
        // ZIPFoundation's Linux decoder tells zlib that every chunk is a full buffer, so the provider
        // always returns exactly the requested size (zero-padded at the end), and it loops until the
        // stream ends, so asking past the input must throw.
        let bufferSize = min(input.count, 4 << 20)
        var output = Data()
        output.reserveCapacity(expectedCount)
        var overflowed = false
        var ranOut = false
        let checksum: CRC32
        do {
            checksum = try Data.decompress(
                size: Int64(input.count), bufferSize: bufferSize, skipCRC32: false,
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
                    guard output.count + piece.count <= expectedCount else {
                        overflowed = true
                        throw Failure(message: "too long")
                    }
                    output.append(piece)
                })
        } catch {
            if ranOut { throw Failure(message: "the compressed data ends before the deflate stream does") }
            if overflowed {
                throw Failure(message: "the data inflates to more than the recorded \(expectedCount) bytes", isSizeMismatch: true)
            }
            throw Failure(message: "invalid deflate data")
        }
        guard output.count == expectedCount else {
            throw Failure(message: "the data inflates to \(output.count) bytes, not the recorded \(expectedCount)",
                          isSizeMismatch: true)
        }
        return (output, checksum)
    }
}

public enum Gzip {
    /// True when `data` starts with the gzip magic bytes 1f 8b.
    public static func hasMagic(_ data: Data) -> Bool {
        data.count >= 2 && data[data.startIndex] == 0x1F && data[data.startIndex + 1] == 0x8B
    }

    /// Decodes a single-member gzip file, checking the header CRC (if present), the CRC32 and the size.
    /// `source` prefixes every error message.
    public static func decompress(_ data: Data, source: String) throws -> Data {
        func fail(_ problem: String) -> OrthofuseError { OrthofuseError("\(source): \(problem)") }
        let bytes = data.startIndex == 0 ? data : Data(data)
        let trailerSize = 8
        guard hasMagic(bytes) else { throw fail("not a gzip file (missing the 1f 8b magic)") }
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
            let computed = UInt16(truncatingIfNeeded: bytes[0..<position].crc32(checksum: 0))
            guard stored == computed else { throw fail("gzip header CRC mismatch (file corrupt)") }
            position += 2
        }

        let (expectedCRC, expectedSize) = bytes.withUnsafeBytes { raw in
            (raw.littleEndianInteger(at: trailerStart, as: UInt32.self),
             Int(raw.littleEndianInteger(at: trailerStart + 4, as: UInt32.self)))
        }
        let output: Data
        let checksum: CRC32
        do {
            (output, checksum) = try RawDeflate.inflate(bytes[position..<trailerStart], expectedCount: expectedSize)
        } catch let failure as RawDeflate.Failure {
            let limits = failure.isSizeMismatch ? "; gzip members over 4 GiB and multi-member files are not supported" : ""
            throw fail("gzip data is damaged: \(failure.message) (file truncated or corrupt\(limits))")
        }
        guard checksum == expectedCRC else {
            throw fail("gzip CRC32 mismatch: trailer records \(hex(expectedCRC)), data has \(hex(checksum)) (file corrupt)")
        }
        return output
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}
