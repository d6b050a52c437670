// IDX: reading IDX arrays (the MNIST file format), raw or gzip-compressed.
import Foundation

/// An array read from an IDX file: big-endian dimensions and elements, row-major.
public struct IDXArray: Sendable {
    public enum ElementType: UInt8, Sendable, Equatable {
        case uint8 = 0x08, int8 = 0x09, int16 = 0x0B, int32 = 0x0C, float32 = 0x0D, float64 = 0x0E

        public var byteWidth: Int {
            switch self {
            case .uint8, .int8: return 1
            case .int16: return 2
            case .int32, .float32: return 4
            case .float64: return 8
            }
        }

        var name: String {
            switch self {
            case .uint8: return "unsigned byte"
            case .int8: return "signed byte"
            case .int16: return "int16"
            case .int32: return "int32"
            case .float32: return "float32"
            case .float64: return "float64"
            }
        }
    }

    public let elementType: ElementType
    public let dimensions: [Int]
    public let elementCount: Int
    /// Exactly `elementCount * elementType.byteWidth` big-endian bytes.
    let payload: Data
    let source: String

    /// What an IDX header declares.
    public struct Declared: Sendable {
        public let elementType: ElementType
        public let dimensions: [Int]
        public let elementCount: Int
        public let headerSize: Int
        public let byteCount: Int
        public var fileSize: Int { headerSize + byteCount }
    }

    /// The longest IDX header: 4 bytes of magic and 255 dimensions of 4 bytes.
    static let maximumHeaderSize = 4 + 4 * 255

    /// Reads an IDX file; gzip compression is recognised by its magic bytes, whatever the file name.
    /// A compressed file's header is read first, so that its sizes are checked (against the gzip
    /// trailer and the memory budget) before anything is inflated.
    public static func read(_ url: URL) throws -> IDXArray {
        let path = FileBytes.displayPath(url)
        let data = try FileBytes.load(url)
        guard Gzip.hasMagic(data) else { return try parse(data, source: path) }
        let declared = try compressedHeader(data, source: path)
        try MemoryBudget.check(declared.fileSize, for: "\(path): inflating")
        return try parse(Gzip.decompress(data, source: path), source: path)
    }

    /// The header of an IDX file, raw or gzip-compressed, without reading or inflating the data.
    public static func readHeader(_ url: URL) throws -> Declared {
        let path = FileBytes.displayPath(url)
        let data = try FileBytes.load(url)
        guard Gzip.hasMagic(data) else { return try parseHeader(data, source: path) }
        return try compressedHeader(data, source: path)
    }

    /// The header of a gzip-compressed IDX file, from the first inflated bytes, checked against the trailer.
    private static func compressedHeader(_ data: Data, source: String) throws -> Declared {
        let member = try Gzip.Member(data, source: source)
        let declared = try parseHeader(try member.inflatePrefix(count: maximumHeaderSize), source: source)
        // The trailer records the size modulo 2^32.
        guard UInt32(truncatingIfNeeded: declared.fileSize) == UInt32(truncatingIfNeeded: member.expandedSize) else {
            throw OrthofuseError("\(source): the IDX header declares \(declared.fileSize) bytes (dimensions \(Safetensors.describe(declared.dimensions))) but the gzip trailer records \(member.expandedSize) (file truncated or corrupt)")
        }
        return declared
    }

    /// Parses the header of an IDX image (`data` may be just its start). `source` prefixes errors.
    static func parseHeader(_ data: Data, source: String) throws -> Declared {
        func fail(_ problem: String) -> OrthofuseError { OrthofuseError("\(source): \(problem)") }
        let bytes = data.startIndex == 0 ? data : Data(data)
        guard !bytes.isEmpty else { throw fail("file is empty, not an IDX file") }
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else {
            throw fail("not an IDX file (the magic number must start with two zero bytes)")
        }
        guard let elementType = ElementType(rawValue: bytes[2]) else {
            throw fail("unknown IDX element type 0x\(String(bytes[2], radix: 16))")
        }
        let dimensionCount = Int(bytes[3])
        guard dimensionCount >= 1 else { throw fail("IDX file declares zero dimensions") }
        let headerSize = 4 + 4 * dimensionCount
        guard bytes.count >= headerSize else {
            throw fail("IDX header is truncated: \(dimensionCount) dimensions need \(headerSize) bytes, file has \(bytes.count)")
        }
        let dimensions = bytes.withUnsafeBytes { raw in
            (0..<dimensionCount).map { Int(raw.bigEndianInteger(at: 4 + 4 * $0, as: UInt32.self)) }
        }
        guard let elementCount = Safetensors.elementCount(of: dimensions) else {
            throw fail("IDX dimensions \(Safetensors.describe(dimensions)) are too large (integer overflow)")
        }
        let (byteCount, overflow) = elementCount.multipliedReportingOverflow(by: elementType.byteWidth)
        guard !overflow, byteCount <= Int.max - headerSize else {
            throw fail("IDX dimensions \(Safetensors.describe(dimensions)) are too large (integer overflow)")
        }
        return Declared(elementType: elementType, dimensions: dimensions, elementCount: elementCount,
                        headerSize: headerSize, byteCount: byteCount)
    }

    /// Parses an uncompressed IDX image. `source` prefixes every error message.
    public static func parse(_ data: Data, source: String) throws -> IDXArray {
        func fail(_ problem: String) -> OrthofuseError { OrthofuseError("\(source): \(problem)") }
        let bytes = data.startIndex == 0 ? data : Data(data)
        let declared = try parseHeader(bytes, source: source)
        let available = bytes.count - declared.headerSize
        guard declared.byteCount <= available else {
            throw fail("IDX data is truncated: dimensions \(Safetensors.describe(declared.dimensions)) of \(declared.elementType.name) need \(declared.byteCount) bytes, file has \(available)")
        }
        guard declared.byteCount == available else {
            throw fail("\(available - declared.byteCount) unexpected bytes after the IDX data")
        }
        return IDXArray(elementType: declared.elementType, dimensions: declared.dimensions, elementCount: declared.elementCount,
                        payload: bytes.subdata(in: declared.headerSize..<bytes.count), source: source)
    }

    /// Elements as Float; unsigned bytes (pixel intensities) are scaled to [0, 1] when `scaleBytes` is set.
    public func floatValues(scaleBytes: Bool) -> [Float] {
        payload.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [Float] in
            [Float](unsafeUninitializedCapacity: elementCount) { output, initialized in
                switch elementType {
                case .uint8:
                    let divisor: Float = scaleBytes ? 255 : 1
                    for i in 0..<elementCount { output[i] = Float(raw[i]) / divisor }
                case .int8: for i in 0..<elementCount { output[i] = Float(Int8(bitPattern: raw[i])) }
                case .int16: for i in 0..<elementCount { output[i] = Float(raw.bigEndianInteger(at: 2 * i, as: Int16.self)) }
                case .int32: for i in 0..<elementCount { output[i] = Float(raw.bigEndianInteger(at: 4 * i, as: Int32.self)) }
                case .float32:
                    for i in 0..<elementCount { output[i] = Float(bitPattern: raw.bigEndianInteger(at: 4 * i, as: UInt32.self)) }
                case .float64:
                    for i in 0..<elementCount { output[i] = Float(Double(bitPattern: raw.bigEndianInteger(at: 8 * i, as: UInt64.self))) }
                }
                initialized = elementCount
            }
        }
    }

    /// Elements as Int32; fails for floating-point element types.
    public func int32Values() throws -> [Int32] {
        guard elementType != .float32 && elementType != .float64 else {
            throw OrthofuseError("\(source): IDX element type \(elementType.name) is not an integer type")
        }
        return payload.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [Int32] in
            [Int32](unsafeUninitializedCapacity: elementCount) { output, initialized in
                switch elementType {
                case .uint8: for i in 0..<elementCount { output[i] = Int32(raw[i]) }
                case .int8: for i in 0..<elementCount { output[i] = Int32(Int8(bitPattern: raw[i])) }
                case .int16: for i in 0..<elementCount { output[i] = Int32(raw.bigEndianInteger(at: 2 * i, as: Int16.self)) }
                case .int32: for i in 0..<elementCount { output[i] = raw.bigEndianInteger(at: 4 * i, as: Int32.self) }
                case .float32, .float64: for i in 0..<elementCount { output[i] = 0 }  // excluded by the guard above
                }
                initialized = elementCount
            }
        }
    }
}
