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

    /// Reads an IDX file; gzip compression is recognised by its magic bytes, whatever the file name.
    public static func read(_ url: URL) throws -> IDXArray {
        let path = FileBytes.displayPath(url)
        let data = try FileBytes.load(url)
        return try parse(Gzip.hasMagic(data) ? Gzip.decompress(data, source: path) : data, source: path)
    }

    /// Parses an uncompressed IDX image. `source` prefixes every error message.
    public static func parse(_ data: Data, source: String) throws -> IDXArray {
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
        guard !overflow else { throw fail("IDX dimensions \(Safetensors.describe(dimensions)) are too large (integer overflow)") }
        let available = bytes.count - headerSize
        guard byteCount <= available else {
            throw fail("IDX data is truncated: dimensions \(Safetensors.describe(dimensions)) of \(elementType.name) need \(byteCount) bytes, file has \(available)")
        }
        guard byteCount == available else {
            throw fail("\(available - byteCount) unexpected bytes after the IDX data")
        }
        return IDXArray(elementType: elementType, dimensions: dimensions, elementCount: elementCount,
                        payload: bytes.subdata(in: headerSize..<bytes.count), source: source)
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
