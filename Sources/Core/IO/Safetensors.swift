// Safetensors: reading and writing the safetensors tensor format, with every header field checked.
import Foundation
import Kernels

/// One named tensor with its values as Float, row-major.
public struct TensorRecord: Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    public var values: [Float]
    /// The dtype `Safetensors.write` stores it as: F32, or F16 / BF16 (rounded to nearest even),
    /// or F64; any dtype with `rawBytes`. Reading always gives F32 values.
    public var outputDType: String
    /// Little-endian bytes written as they are (a tensor copied exactly, e.g. integers); `values`
    /// is then unused.
    public var rawBytes: [UInt8]?

    public init(name: String, shape: [Int], values: [Float], outputDType: String = "F32", rawBytes: [UInt8]? = nil) {
        self.name = name
        self.shape = shape
        self.values = values
        self.outputDType = outputDType
        self.rawBytes = rawBytes
    }
}

/// The contents of a safetensors file: tensors in data-offset order, and the string metadata.
public struct SafetensorsFile: Sendable, Equatable {
    public let tensors: [TensorRecord]
    public let metadata: [String: String]
    private let indexByName: [String: Int]

    public init(tensors: [TensorRecord], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
        // Names are unique in anything read from disk; for hand-built values the first one wins.
        self.indexByName = Dictionary(tensors.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    public var names: [String] { tensors.map(\.name) }

    public subscript(name: String) -> TensorRecord? {
        indexByName[name].map { tensors[$0] }
    }
}

/// What the header says about one tensor, without its data.
public struct SafetensorsTensorInfo: Sendable, Equatable {
    public let name: String
    /// The dtype as written in the file, e.g. "F32" or "BF16".
    public let dtype: String
    public let shape: [Int]
    /// Byte range relative to the start of the data buffer.
    public let dataOffsets: Range<Int>
}

/// A validated safetensors header: tensors in data-offset order, and the string metadata.
public struct SafetensorsHeader: Sendable, Equatable {
    public let tensors: [SafetensorsTensorInfo]
    public let metadata: [String: String]
    /// Size of the data buffer that follows the header; the tensors cover it exactly.
    public let dataBufferSize: Int

    public var names: [String] { tensors.map(\.name) }
}

/// Element types this reader understands. Everything is converted to Float when read.
enum SafetensorsDType: String, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"

    var byteWidth: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool: return 1
        }
    }
}

public enum Safetensors {
    /// The reference implementation refuses headers above this size; so do we, before allocating.
    public static let maximumHeaderLength = 100_000_000
    static let metadataKey = "__metadata__"
    /// The metadata key naming the framework whose layout the tensors are in; Hugging Face's
    /// loaders refuse a file whose metadata lacks it. orthofuse's models are PyTorch's ("pt").
    public static let formatKey = "format"
    public static let pytorchFormat = "pt"

    // MARK: Reading

    /// Reads every tensor of `url`, converting all supported dtypes to Float.
    public static func read(_ url: URL) throws -> SafetensorsFile {
        let path = FileBytes.displayPath(url)
        let data = try FileBytes.load(url)
        return try data.withUnsafeBytes { raw -> SafetensorsFile in
            let headerLength = try validatedHeaderLength(
                firstBytes: raw.count >= 8 ? raw.littleEndianInteger(at: 0, as: UInt64.self) : nil,
                fileSize: raw.count, path: path)
            let headerBytes = Array(raw[8..<(8 + headerLength)])
            let dataStart = 8 + headerLength
            let header = try parseHeader(headerBytes, dataBufferSize: raw.count - dataStart, path: path)
            let tensors = header.tensors.map { info -> TensorRecord in
                // The header check guarantees the dtype is known and the range lies inside the file.
                let dtype = SafetensorsDType(rawValue: info.dtype)!
                let bytes = UnsafeRawBufferPointer(rebasing: raw[(dataStart + info.dataOffsets.lowerBound)..<(dataStart + info.dataOffsets.upperBound)])
                return TensorRecord(name: info.name, shape: info.shape,
                                    values: decode(bytes, as: dtype, count: info.dataOffsets.count / dtype.byteWidth))
            }
            return SafetensorsFile(tensors: tensors, metadata: header.metadata)
        }
    }

    /// Reads and validates only the header of `url` (names, dtypes, shapes, metadata), not the data.
    public static func readHeader(_ url: URL) throws -> SafetensorsHeader {
        let path = FileBytes.displayPath(url)
        let fileSize = try FileBytes.size(url)
        let handle: FileHandle
        do {
            handle = try FileHandle(forReadingFrom: url)
        } catch {
            throw OrthofuseError("\(path): cannot open (\(FileSystemMessage.reason(error)))")
        }
        defer { try? handle.close() }
        do {
            let prefix = try handle.read(upToCount: 8) ?? Data()
            let lengthField: UInt64? = prefix.count == 8
                ? prefix.withUnsafeBytes { $0.littleEndianInteger(at: 0, as: UInt64.self) } : nil
            let headerLength = try validatedHeaderLength(firstBytes: lengthField, fileSize: fileSize, path: path)
            let headerData = headerLength == 0 ? Data() : (try handle.read(upToCount: headerLength) ?? Data())
            guard headerData.count == headerLength else {
                throw OrthofuseError("\(path): file is truncated inside the header")
            }
            return try parseHeader([UInt8](headerData), dataBufferSize: fileSize - 8 - headerLength, path: path)
        } catch let error as OrthofuseError {
            throw error
        } catch {
            throw OrthofuseError("\(path): cannot read (\(FileSystemMessage.reason(error)))")
        }
    }

    /// Checks the 8-byte header length against the file size and the size limit.
    static func validatedHeaderLength(firstBytes: UInt64?, fileSize: Int, path: String) throws -> Int {
        guard fileSize > 0 else {
            throw OrthofuseError("\(path): file is empty, not a safetensors file")
        }
        guard let length = firstBytes else {
            throw OrthofuseError("\(path): file is \(fileSize) bytes, too short for the 8-byte header length of a safetensors file")
        }
        guard length <= UInt64(maximumHeaderLength) else {
            throw OrthofuseError("\(path): header length \(length) exceeds the \(maximumHeaderLength)-byte limit (not a safetensors file?)")
        }
        guard length <= UInt64(fileSize - 8) else {
            throw OrthofuseError("\(path): header length \(length) exceeds the \(fileSize - 8) bytes after the length field (file truncated, or not a safetensors file)")
        }
        return Int(length)
    }

    /// Parses and validates the JSON header: fields, dtypes, shapes, offsets, contiguity, metadata.
    static func parseHeader(_ headerBytes: [UInt8], dataBufferSize: Int, path: String) throws -> SafetensorsHeader {
        func fail(_ problem: String) -> OrthofuseError { OrthofuseError("\(path): \(problem)") }

        guard String(validating: headerBytes, as: UTF8.self) != nil else {
            throw fail("header is not valid UTF-8")
        }
        let root: JSONValue
        do {
            root = try HeaderJSONParser.parse(headerBytes)
        } catch let error as JSONSyntaxError {
            throw fail("header is not valid JSON (\(error.message) at byte \(error.offset))")
        }
        guard case .object(let members) = root else {
            throw fail("header is \(root.kindName), expected a JSON object")
        }

        var metadata: [String: String] = [:]
        var sawMetadata = false
        var seenNames = Set<String>()
        var unordered: [SafetensorsTensorInfo] = []
        for member in members {
            if member.key == metadataKey {
                guard !sawMetadata else { throw fail("\(metadataKey) appears twice in the header") }
                sawMetadata = true
                metadata = try parseMetadata(member.value, fail: fail)
                continue
            }
            guard !member.key.isEmpty else { throw fail("header has a tensor with an empty name") }
            guard seenNames.insert(member.key).inserted else {
                throw fail("tensor \(MessageText.quoted(member.key)) appears twice in the header")
            }
            unordered.append(try parseTensorInfo(name: member.key, value: member.value,
                                                 dataBufferSize: dataBufferSize, fail: fail))
        }

        // Data must be contiguous, as the reference library requires: sorted by offset, each tensor
        // starts where the previous one ends, and together they cover the whole data buffer.
        let tensors = unordered.enumerated().sorted { left, right in
            (left.element.dataOffsets.lowerBound, left.element.dataOffsets.upperBound, left.offset)
                < (right.element.dataOffsets.lowerBound, right.element.dataOffsets.upperBound, right.offset)
        }.map(\.element)
        var expectedStart = 0
        var previous: SafetensorsTensorInfo?
        for info in tensors {
            let begin = info.dataOffsets.lowerBound
            if begin < expectedStart, let previous {
                throw fail("tensor \(MessageText.quoted(info.name)): data_offsets \(describe(info.dataOffsets)) overlap tensor \(MessageText.quoted(previous.name)) at \(describe(previous.dataOffsets))")
            }
            if begin > expectedStart {
                let after = previous.map { "tensor \(MessageText.quoted($0.name))" } ?? "the start of the data buffer"
                throw fail("tensor \(MessageText.quoted(info.name)): data_offsets \(describe(info.dataOffsets)) leave a gap of \(begin - expectedStart) bytes after \(after) (data must be contiguous)")
            }
            expectedStart = info.dataOffsets.upperBound
            previous = info
        }
        if expectedStart != dataBufferSize {
            throw fail("data buffer is \(dataBufferSize) bytes but the tensors cover only \(expectedStart) (trailing bytes, or a tensor missing from the header)")
        }
        return SafetensorsHeader(tensors: tensors, metadata: metadata, dataBufferSize: dataBufferSize)
    }

    private static func parseMetadata(_ value: JSONValue, fail: (String) -> OrthofuseError) throws -> [String: String] {
        guard case .object(let entries) = value else {
            throw fail("\(metadataKey) is \(value.kindName), expected an object of strings")
        }
        var metadata: [String: String] = [:]
        for entry in entries {
            guard case .string(let text) = entry.value else {
                throw fail("\(metadataKey) value for key \(MessageText.quoted(entry.key)) is \(entry.value.kindName), expected a string")
            }
            guard metadata.updateValue(text, forKey: entry.key) == nil else {
                throw fail("\(metadataKey) key \(MessageText.quoted(entry.key)) appears twice")
            }
        }
        return metadata
    }

    private static func parseTensorInfo(name: String, value: JSONValue, dataBufferSize: Int,
                                        fail: (String) -> OrthofuseError) throws -> SafetensorsTensorInfo {
        let prefix = "tensor \(MessageText.quoted(name))"
        guard case .object(let fields) = value else {
            throw fail("\(prefix): entry is \(value.kindName), expected an object with dtype, shape and data_offsets")
        }
        var fieldValues: [String: JSONValue] = [:]
        for field in fields {
            guard ["dtype", "shape", "data_offsets"].contains(field.key) else {
                throw fail("\(prefix): unexpected field \(MessageText.quoted(field.key))")
            }
            guard fieldValues.updateValue(field.value, forKey: field.key) == nil else {
                throw fail("\(prefix): field \(MessageText.quoted(field.key)) appears twice")
            }
        }
        for required in ["dtype", "shape", "data_offsets"] where fieldValues[required] == nil {
            throw fail("\(prefix): missing field '\(required)'")
        }

        guard case .string(let dtypeName) = fieldValues["dtype"]! else {
            throw fail("\(prefix): dtype is \(fieldValues["dtype"]!.kindName), expected a string")
        }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            let supported = SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", ")
            throw fail("\(prefix): unsupported dtype \(MessageText.quoted(dtypeName)) (supported: \(supported))")
        }

        let shape = try nonNegativeIntegers(fieldValues["shape"]!, field: "shape", prefix: prefix, fail: fail)
        let offsets = try nonNegativeIntegers(fieldValues["data_offsets"]!, field: "data_offsets", prefix: prefix, fail: fail)
        guard offsets.count == 2 else {
            throw fail("\(prefix): data_offsets has \(offsets.count) entries, expected [begin, end]")
        }
        let (begin, end) = (offsets[0], offsets[1])

        guard let elementCount = elementCount(of: shape) else {
            throw fail("\(prefix): shape \(describe(shape)) has too many elements (integer overflow)")
        }
        let (byteCount, overflow) = elementCount.multipliedReportingOverflow(by: dtype.byteWidth)
        guard !overflow else {
            throw fail("\(prefix): shape \(describe(shape)) of \(dtypeName) is too large (integer overflow)")
        }
        guard begin <= end else {
            throw fail("\(prefix): data_offsets [\(begin), \(end)] end before they begin")
        }
        guard end - begin == byteCount else {
            throw fail("\(prefix): data_offsets [\(begin), \(end)] span \(end - begin) bytes but \(dtypeName) with shape \(describe(shape)) needs \(byteCount)")
        }
        guard end <= dataBufferSize else {
            throw fail("\(prefix): data_offsets [\(begin), \(end)] exceed the data buffer (\(dataBufferSize) bytes)")
        }
        return SafetensorsTensorInfo(name: name, dtype: dtypeName, shape: shape, dataOffsets: begin..<end)
    }

    private static func nonNegativeIntegers(_ value: JSONValue, field: String, prefix: String,
                                            fail: (String) -> OrthofuseError) throws -> [Int] {
        guard case .array(let elements) = value else {
            throw fail("\(prefix): \(field) is \(value.kindName), expected an array of non-negative integers")
        }
        return try elements.map { element in
            guard case .number(let text) = element else {
                throw fail("\(prefix): \(field) contains \(element.kindName), expected non-negative integers")
            }
            guard text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
                let kind = text.hasPrefix("-") && !text.contains(".") && !text.lowercased().contains("e")
                    ? "negative" : "not an integer"
                throw fail("\(prefix): \(field) entry \(MessageText.excerpt(text)) is \(kind)")
            }
            guard let integer = Int(text) else {
                throw fail("\(prefix): \(field) entry \(MessageText.excerpt(text)) is too large")
            }
            return integer
        }
    }

    /// The product of the dimensions, or nil on overflow. A 0-dim shape holds one element.
    static func elementCount(of shape: [Int]) -> Int? {
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            if overflow || dimension < 0 { return nil }
            count = product
        }
        return count
    }

    static func describe(_ values: [Int]) -> String {
        "[" + values.map(String.init).joined(separator: ", ") + "]"
    }

    private static func describe(_ range: Range<Int>) -> String {
        "[\(range.lowerBound), \(range.upperBound)]"
    }

    /// Converts little-endian elements to Float with unaligned loads (the data buffer has no alignment).
    static func decode(_ bytes: UnsafeRawBufferPointer, as dtype: SafetensorsDType, count: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { output, initialized in
            if let base = output.baseAddress, count > 0 { decode(bytes, as: dtype, count: count, into: base) }
            initialized = count
        }
    }

    /// The same into `output` (room for `count` floats), for callers that own the destination.
    static func decode(_ bytes: UnsafeRawBufferPointer, as dtype: SafetensorsDType, count: Int,
                       into output: UnsafeMutablePointer<Float>) {
        switch dtype {
        case .f32:
            #if _endian(little)
            if count > 0 { UnsafeMutableRawPointer(output).copyMemory(from: bytes.baseAddress!, byteCount: 4 * count) }
            #else
            for i in 0..<count { output[i] = Float(bitPattern: bytes.littleEndianInteger(at: 4 * i, as: UInt32.self)) }
            #endif
        case .f16:
            for i in 0..<count { output[i] = Float(Float16(bitPattern: bytes.littleEndianInteger(at: 2 * i, as: UInt16.self))) }
        case .bf16:
            #if _endian(little)
            if count > 0 { of_bf16_to_f32(output, bytes.baseAddress!, count) }
            #else
            for i in 0..<count { output[i] = Float(bitPattern: UInt32(bytes.littleEndianInteger(at: 2 * i, as: UInt16.self)) << 16) }
            #endif
        case .f64:
            for i in 0..<count { output[i] = Float(Double(bitPattern: bytes.littleEndianInteger(at: 8 * i, as: UInt64.self))) }
        case .i64:
            for i in 0..<count { output[i] = Float(bytes.littleEndianInteger(at: 8 * i, as: Int64.self)) }
        case .i32:
            for i in 0..<count { output[i] = Float(bytes.littleEndianInteger(at: 4 * i, as: Int32.self)) }
        case .i16:
            for i in 0..<count { output[i] = Float(bytes.littleEndianInteger(at: 2 * i, as: Int16.self)) }
        case .i8:
            for i in 0..<count { output[i] = Float(Int8(bitPattern: bytes[i])) }
        case .u64:
            for i in 0..<count { output[i] = Float(bytes.littleEndianInteger(at: 8 * i, as: UInt64.self)) }
        case .u32:
            for i in 0..<count { output[i] = Float(bytes.littleEndianInteger(at: 4 * i, as: UInt32.self)) }
        case .u16:
            for i in 0..<count { output[i] = Float(bytes.littleEndianInteger(at: 2 * i, as: UInt16.self)) }
        case .u8:
            for i in 0..<count { output[i] = Float(bytes[i]) }
        case .bool:
            for i in 0..<count { output[i] = bytes[i] == 0 ? 0 : 1 }
        }
    }

    // MARK: Writing

    /// Encodes `tensors` as F32 in the given order, with contiguous offsets and the header padded
    /// with spaces to a multiple of 8 bytes, as the reference writer does.
    public static func encode(_ tensors: [TensorRecord], metadata: [String: String] = [:]) throws -> Data {
        do {
            return try encodeChecked(tensors, metadata: metadata)
        } catch let problem as EncodingProblem {
            throw OrthofuseError("cannot encode safetensors: \(problem.message)")
        }
    }

    /// Encodes and writes atomically: readers see the old file or the complete new one.
    public static func write(_ tensors: [TensorRecord], metadata: [String: String] = [:], to url: URL) throws {
        let data: Data
        do {
            data = try encodeChecked(tensors, metadata: metadata)
        } catch let problem as EncodingProblem {
            throw OrthofuseError("\(FileBytes.displayPath(url)): cannot write safetensors: \(problem.message)")
        }
        try AtomicFile.write(data, to: url)
    }

    struct EncodingProblem: Error {
        let message: String
    }

    private static func encodeChecked(_ tensors: [TensorRecord], metadata: [String: String]) throws -> Data {
        let entries = try tensors.map { tensor -> HeaderEntry in
            guard let count = elementCount(of: tensor.shape) else {
                throw EncodingProblem(message: "tensor \(MessageText.quoted(tensor.name)): shape \(describe(tensor.shape)) has a negative dimension or too many elements")
            }
            return HeaderEntry(name: tensor.name, dtype: tensor.outputDType, shape: tensor.shape,
                               byteCount: try storedByteCount(tensor, elements: count))
        }
        let prefix = try filePrefix(entries, metadata: metadata)
        var data = Data(capacity: prefix.count + entries.reduce(0) { $0 + $1.byteCount })
        data.append(contentsOf: prefix)
        for tensor in tensors { appendStored(tensor, to: &data) }
        return data
    }

    /// One tensor as the header lists it.
    struct HeaderEntry {
        var name: String
        var dtype: String
        var shape: [Int]
        var byteCount: Int
    }

    /// The 8-byte length and the JSON header for `entries` stored contiguously in order, padded
    /// with spaces to a multiple of 8 bytes as the reference writer does; names checked.
    static func filePrefix(_ entries: [HeaderEntry], metadata: [String: String]) throws -> [UInt8] {
        var seenNames = Set<String>()
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(JSONText.quoted($0)):\(JSONText.quoted(metadata[$0]!))" }
            fields.append("\(JSONText.quoted(metadataKey)):{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for entry in entries {
            guard !entry.name.isEmpty else { throw EncodingProblem(message: "a tensor has an empty name") }
            guard entry.name != metadataKey else {
                throw EncodingProblem(message: "'\(metadataKey)' is reserved and cannot name a tensor")
            }
            guard seenNames.insert(entry.name).inserted else {
                throw EncodingProblem(message: "tensor name \(MessageText.quoted(entry.name)) is used twice")
            }
            let shapeText = entry.shape.map(String.init).joined(separator: ",")
            fields.append("\(JSONText.quoted(entry.name)):{\"dtype\":\"\(entry.dtype)\",\"shape\":[\(shapeText)],\"data_offsets\":[\(offset),\(offset + entry.byteCount)]}")
            offset += entry.byteCount
        }
        var header = Array("{\(fields.joined(separator: ","))}".utf8)
        header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - header.count % 8) % 8))
        guard header.count <= maximumHeaderLength else {
            throw EncodingProblem(message: "header would be \(header.count) bytes, above the \(maximumHeaderLength)-byte limit")
        }
        return withUnsafeBytes(of: UInt64(header.count).littleEndian, Array.init) + header
    }

    /// The bytes `tensor` takes in the file, after checking its values or raw bytes against its
    /// shape and its output dtype.
    static func storedByteCount(_ tensor: TensorRecord, elements count: Int) throws -> Int {
        let name = MessageText.quoted(tensor.name)
        guard let dtype = SafetensorsDType(rawValue: tensor.outputDType) else {
            throw EncodingProblem(message: "tensor \(name): unknown dtype \(MessageText.quoted(tensor.outputDType))")
        }
        if let raw = tensor.rawBytes {
            guard raw.count == count * dtype.byteWidth else {
                throw EncodingProblem(message: "tensor \(name): shape \(describe(tensor.shape)) of \(dtype.rawValue) takes \(count * dtype.byteWidth) bytes but \(raw.count) were given")
            }
            return raw.count
        }
        guard [.f32, .f16, .bf16, .f64].contains(dtype) else {
            throw EncodingProblem(message: "tensor \(name): float values cannot be stored as \(dtype.rawValue) (give its raw bytes)")
        }
        guard count == tensor.values.count else {
            throw EncodingProblem(message: "tensor \(name): shape \(describe(tensor.shape)) holds \(count) values but \(tensor.values.count) were given")
        }
        return count * dtype.byteWidth
    }

    /// Appends `tensor`'s data, little-endian, in its output dtype (checked by storedByteCount).
    static func appendStored(_ tensor: TensorRecord, to data: inout Data) {
        if let raw = tensor.rawBytes {
            data.append(contentsOf: raw)
            return
        }
        let dtype = SafetensorsDType(rawValue: tensor.outputDType)!
        let start = data.count
        data.count += dtype.byteWidth * tensor.values.count
        data.withUnsafeMutableBytes { target in
            tensor.values.withUnsafeBufferPointer { values in
                if let source = values.baseAddress { encode(source, count: values.count, as: dtype, into: target.baseAddress! + start) }
            }
        }
    }

    /// `count` floats stored little-endian as `dtype` (F32, F16, BF16 or F64; F16 and BF16 rounded
    /// to nearest even) at `target`, which has room for count × the dtype's width (any alignment).
    static func encode(_ values: UnsafePointer<Float>, count: Int, as dtype: SafetensorsDType,
                       into target: UnsafeMutableRawPointer) {
        switch dtype {
        case .f16:
            for i in 0..<count { target.storeBytes(of: Float16(values[i]).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .bf16:
            #if _endian(little)
            if count > 0 { of_f32_to_bf16(target, values, count) }
            #else
            for i in 0..<count { target.storeBytes(of: bfloat16Bits(values[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            #endif
        case .f64:
            for i in 0..<count { target.storeBytes(of: Double(values[i]).bitPattern.littleEndian, toByteOffset: 8 * i, as: UInt64.self) }
        case .f32:
            #if _endian(little)
            if count > 0 { target.copyMemory(from: values, byteCount: 4 * count) }
            #else
            for i in 0..<count { target.storeBytes(of: values[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            #endif
        default:
            preconditionFailure("floats cannot be stored as \(dtype.rawValue)")
        }
    }

    /// `value` as bfloat16, rounded to nearest even (as PyTorch's conversion does); NaN stays a
    /// quiet NaN of the same sign; values beyond bfloat16's range become ±infinity.
    public static func bfloat16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }
}
