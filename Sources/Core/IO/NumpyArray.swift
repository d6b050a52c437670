// NumpyArray: parsing NumPy .npy arrays (format versions 1.0, 2.0 and 3.0) with every header field checked.
import Foundation

/// A numeric array read from a .npy payload, kept as raw bytes until converted.
public struct NumpyArray: Sendable {
    public enum ElementType: String, Sendable, Equatable, CaseIterable {
        case float16 = "f2", float32 = "f4", float64 = "f8"
        case int8 = "i1", int16 = "i2", int32 = "i4", int64 = "i8"
        case uint8 = "u1", uint16 = "u2", uint32 = "u4", uint64 = "u8"
        case bool = "b1"

        public var byteWidth: Int { Int(rawValue.dropFirst())! }
        public var isFloatingPoint: Bool { self == .float16 || self == .float32 || self == .float64 }
        public var isInteger: Bool { !isFloatingPoint && self != .bool }
    }

    public let elementType: ElementType
    public let isBigEndian: Bool
    public let shape: [Int]
    public let elementCount: Int
    /// Exactly `elementCount * elementType.byteWidth` bytes, row-major; may be a slice (read it with withUnsafeBytes).
    let payload: Data
    /// Names the array in error messages, e.g. "train.npz: array 'x'".
    let source: String

    /// The dtype string as NumPy writes it, e.g. "<f4" or "|u1".
    public var descr: String {
        (elementType.byteWidth == 1 ? "|" : (isBigEndian ? ">" : "<")) + elementType.rawValue
    }

    /// Reads a standalone .npy file.
    public static func read(_ url: URL) throws -> NumpyArray {
        try parse(FileBytes.load(url), source: FileBytes.displayPath(url))
    }

    /// The largest header accepted; NumPy itself refuses headers above 10000 bytes by default.
    static let maximumHeaderLength = 1 << 20

    /// What a .npy header declares, and where the data starts.
    public struct Declared: Sendable {
        public let elementType: ElementType
        public let isBigEndian: Bool
        public let shape: [Int]
        public let elementCount: Int
        /// Offset of the array data: preamble plus header.
        public let dataStart: Int
        public let byteCount: Int
        /// The whole .npy image: header and data.
        public var fileSize: Int { dataStart + byteCount }
        public var descr: String {
            (elementType.byteWidth == 1 ? "|" : (isBigEndian ? ">" : "<")) + elementType.rawValue
        }
    }

    /// Parses the preamble and header of a .npy image; `data` may be only a prefix of the file, but
    /// must hold the whole header. `source` prefixes every error message.
    public static func parseHeader(_ data: Data, source: String) throws -> Declared {
        func fail(_ problem: String) -> OrthofuseError { OrthofuseError("\(source): \(problem)") }

        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // "\x93NUMPY"
        guard !data.isEmpty else { throw fail("file is empty, not a .npy array") }
        guard data.count >= 10, data.prefix(6).elementsEqual(magic) else {
            throw fail("not a .npy array (missing the \\x93NUMPY magic)")
        }
        let bytes = [UInt8](data.prefix(12))
        let (major, minor) = (bytes[6], bytes[7])
        let headerStart: Int
        let headerLength: Int
        switch major {
        case 1:
            headerStart = 10
            headerLength = Int(UInt16(bytes[8]) | UInt16(bytes[9]) << 8)
        case 2, 3:
            guard data.count >= 12 else { throw fail("file is truncated inside the .npy preamble") }
            headerStart = 12
            headerLength = Int(UInt32(bytes[8]) | UInt32(bytes[9]) << 8 | UInt32(bytes[10]) << 16 | UInt32(bytes[11]) << 24)
        default:
            throw fail("unsupported .npy format version \(major).\(minor) (supported: 1.0, 2.0, 3.0)")
        }
        guard minor == 0 else {
            throw fail("unsupported .npy format version \(major).\(minor) (supported: 1.0, 2.0, 3.0)")
        }
        guard headerLength <= maximumHeaderLength else {
            throw fail(".npy header length \(headerLength) exceeds the \(maximumHeaderLength)-byte limit")
        }
        guard headerLength <= data.count - headerStart else {
            throw fail(".npy header length \(headerLength) exceeds the \(data.count - headerStart) bytes left in the file (truncated?)")
        }
        let headerData = data.dropFirst(headerStart).prefix(headerLength)
        // Versions 1 and 2 store the header in Latin-1, version 3 in UTF-8.
        guard let headerText = String(data: headerData, encoding: major == 3 ? .utf8 : .isoLatin1) else {
            throw fail(".npy header is not valid \(major == 3 ? "UTF-8" : "Latin-1") text")
        }
        let header = try NumpyHeader.parse(headerText, fail: fail)

        guard let elementCount = Safetensors.elementCount(of: header.shape) else {
            throw fail("shape \(describeShape(header.shape)) has too many elements (integer overflow)")
        }
        let (byteCount, overflow) = elementCount.multipliedReportingOverflow(by: header.elementType.byteWidth)
        guard !overflow, byteCount <= Int.max - headerStart - headerLength else {
            throw fail("shape \(describeShape(header.shape)) is too large (integer overflow)")
        }
        return Declared(elementType: header.elementType, isBigEndian: header.isBigEndian, shape: header.shape,
                        elementCount: elementCount, dataStart: headerStart + headerLength, byteCount: byteCount)
    }

    /// Parses a complete .npy file image. `source` prefixes every error message.
    public static func parse(_ data: Data, source: String) throws -> NumpyArray {
        func fail(_ problem: String) -> OrthofuseError { OrthofuseError("\(source): \(problem)") }
        let declared = try parseHeader(data, source: source)
        let available = data.count - declared.dataStart
        guard declared.byteCount <= available else {
            throw fail("array data is truncated: shape \(describeShape(declared.shape)) of \(declared.descr) needs \(declared.byteCount) bytes, file has \(available)")
        }
        guard declared.byteCount == available else {
            throw fail("\(available - declared.byteCount) unexpected bytes after the array data")
        }
        let payload = data.dropFirst(declared.dataStart)  // a slice: no copy of the array data
        return NumpyArray(elementType: declared.elementType, isBigEndian: declared.isBigEndian, shape: declared.shape,
                          elementCount: declared.elementCount, payload: payload, source: source)
    }

    static func describeShape(_ shape: [Int]) -> String {
        "(" + shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? ",)" : ")")
    }

    /// All elements as Float. Integers and booleans are converted exactly where Float can hold them;
    /// with `scaleBytes`, uint8 elements (pixel intensities) are divided by 255.
    public func floatValues(scaleBytes: Bool = false) -> [Float] {
        payload.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [Float] in
            [Float](unsafeUninitializedCapacity: elementCount) { output, initialized in
                // A whole split is written here at once: 2 MiB pages take 1/512 of the page faults.
                if let base = output.baseAddress {
                    FloatBuffer.adviseHugePages(UnsafeMutableRawPointer(base), bytes: elementCount * MemoryLayout<Float>.stride)
                }
                let big = isBigEndian
                func load<T: FixedWidthInteger>(_ index: Int, _ type: T.Type) -> T {
                    let value = raw.loadUnaligned(fromByteOffset: index * MemoryLayout<T>.size, as: T.self)
                    return big ? T(bigEndian: value) : T(littleEndian: value)
                }
                switch elementType {
                case .float16: for i in 0..<elementCount { output[i] = Float(Float16(bitPattern: load(i, UInt16.self))) }
                case .float32:
                    #if _endian(little)
                    if !big {
                        if elementCount > 0 { UnsafeMutableRawBufferPointer(output).copyMemory(from: raw) }
                        break
                    }
                    #endif
                    for i in 0..<elementCount { output[i] = Float(bitPattern: load(i, UInt32.self)) }
                case .float64: for i in 0..<elementCount { output[i] = Float(Double(bitPattern: load(i, UInt64.self))) }
                case .int8: for i in 0..<elementCount { output[i] = Float(Int8(bitPattern: raw[i])) }
                case .int16: for i in 0..<elementCount { output[i] = Float(load(i, Int16.self)) }
                case .int32: for i in 0..<elementCount { output[i] = Float(load(i, Int32.self)) }
                case .int64: for i in 0..<elementCount { output[i] = Float(load(i, Int64.self)) }
                case .uint8:
                    let divisor: Float = scaleBytes ? 255 : 1
                    for i in 0..<elementCount { output[i] = Float(raw[i]) / divisor }
                case .uint16: for i in 0..<elementCount { output[i] = Float(load(i, UInt16.self)) }
                case .uint32: for i in 0..<elementCount { output[i] = Float(load(i, UInt32.self)) }
                case .uint64: for i in 0..<elementCount { output[i] = Float(load(i, UInt64.self)) }
                case .bool: for i in 0..<elementCount { output[i] = raw[i] == 0 ? 0 : 1 }
                }
                initialized = elementCount
            }
        }
    }

    /// All elements as Int32; fails for non-integer dtypes and for values outside the Int32 range.
    public func int32Values() throws -> [Int32] {
        guard elementType.isInteger else {
            throw OrthofuseError("\(source): dtype \(descr) is not an integer type")
        }
        var outOfRange: (index: Int, value: String)?
        let values = payload.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [Int32] in
            [Int32](unsafeUninitializedCapacity: elementCount) { output, initialized in
                let big = isBigEndian
                func load<T: FixedWidthInteger>(_ index: Int, _ type: T.Type) -> T {
                    let value = raw.loadUnaligned(fromByteOffset: index * MemoryLayout<T>.size, as: T.self)
                    return big ? T(bigEndian: value) : T(littleEndian: value)
                }
                func store<T: FixedWidthInteger>(_ index: Int, _ value: T) {
                    if let exact = Int32(exactly: value) {
                        output[index] = exact
                    } else {
                        output[index] = 0
                        if outOfRange == nil { outOfRange = (index, String(value)) }
                    }
                }
                switch elementType {
                case .int8: for i in 0..<elementCount { output[i] = Int32(Int8(bitPattern: raw[i])) }
                case .uint8: for i in 0..<elementCount { output[i] = Int32(raw[i]) }
                case .int16: for i in 0..<elementCount { output[i] = Int32(load(i, Int16.self)) }
                case .uint16: for i in 0..<elementCount { output[i] = Int32(load(i, UInt16.self)) }
                case .int32: for i in 0..<elementCount { output[i] = load(i, Int32.self) }
                case .uint32: for i in 0..<elementCount { store(i, load(i, UInt32.self)) }
                case .int64: for i in 0..<elementCount { store(i, load(i, Int64.self)) }
                case .uint64: for i in 0..<elementCount { store(i, load(i, UInt64.self)) }
                case .float16, .float32, .float64, .bool:
                    for i in 0..<elementCount { output[i] = 0 }  // excluded by the guard above
                }
                initialized = elementCount
            }
        }
        if let outOfRange {
            throw OrthofuseError("\(source): value \(outOfRange.value) at index \(outOfRange.index) does not fit in Int32")
        }
        return values
    }
}

/// The dictionary in a .npy header, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }.
struct NumpyHeader {
    let elementType: NumpyArray.ElementType
    let isBigEndian: Bool
    let shape: [Int]

    var descr: String {
        (elementType.byteWidth == 1 ? "|" : (isBigEndian ? ">" : "<")) + elementType.rawValue
    }

    static func parse(_ text: String, fail: (String) -> OrthofuseError) throws -> NumpyHeader {
        let root: PythonLiteral
        do {
            root = try PythonLiteralParser.parse(text)
        } catch let error as PythonLiteralParser.SyntaxError {
            throw fail(".npy header is not a valid Python literal (\(error.message))")
        }
        guard case .dict(let entries) = root else {
            throw fail(".npy header is not a dictionary")
        }
        var fields: [String: PythonLiteral] = [:]
        for (key, value) in entries {
            guard ["descr", "fortran_order", "shape"].contains(key) else {
                throw fail(".npy header has an unexpected key \(MessageText.quoted(key))")
            }
            guard fields.updateValue(value, forKey: key) == nil else {
                throw fail(".npy header key \(MessageText.quoted(key)) appears twice")
            }
        }
        for required in ["descr", "fortran_order", "shape"] where fields[required] == nil {
            throw fail(".npy header is missing the key '\(required)'")
        }

        guard case .string(let descr) = fields["descr"]! else {
            throw fail("structured dtypes are not supported (descr must be a simple type string such as '<f4')")
        }
        let (elementType, isBigEndian) = try parseDescr(descr, fail: fail)

        guard case .tuple(let dimensions) = fields["shape"]! else {
            throw fail(".npy header 'shape' is not a tuple")
        }
        let shape = try dimensions.map { dimension -> Int in
            guard case .integer(let text) = dimension else {
                throw fail(".npy header 'shape' contains a non-integer entry")
            }
            guard !text.hasPrefix("-") else { throw fail(".npy header 'shape' has a negative dimension \(MessageText.excerpt(text))") }
            guard let value = Int(text) else { throw fail(".npy header 'shape' dimension \(MessageText.excerpt(text)) is too large") }
            return value
        }

        guard case .bool(let fortranOrder) = fields["fortran_order"]! else {
            throw fail(".npy header 'fortran_order' is not True or False")
        }
        // For fewer than two dimensions Fortran and C order are the same layout.
        if fortranOrder && shape.count >= 2 {
            throw fail("arrays in Fortran order (fortran_order: True) are not supported; save a C-ordered copy (np.ascontiguousarray)")
        }
        return NumpyHeader(elementType: elementType, isBigEndian: isBigEndian, shape: shape)
    }

    private static func parseDescr(_ descr: String, fail: (String) -> OrthofuseError) throws -> (NumpyArray.ElementType, Bool) {
        let supported = "supported: <f4 <f8 <f2 |u1 |i1 |b1 <i2 <i4 <i8 <u2 <u4 <u8, and their big-endian '>' forms"
        guard let order = descr.first, let elementType = NumpyArray.ElementType(rawValue: String(descr.dropFirst())) else {
            if descr.contains("O") {
                throw fail("dtype \(MessageText.quoted(descr)) holds Python objects (pickled data), which are not supported")
            }
            throw fail("unsupported dtype \(MessageText.quoted(descr)) (\(supported))")
        }
        switch order {
        case "<": return (elementType, false)
        case ">": return (elementType, true)
        case "|" where elementType.byteWidth == 1: return (elementType, false)
        default: throw fail("unsupported dtype \(MessageText.quoted(descr)) (\(supported))")
        }
    }
}

/// The subset of Python literal syntax that NumPy writes in .npy headers.
enum PythonLiteral {
    case dict([(String, PythonLiteral)])
    case tuple([PythonLiteral])
    case list([PythonLiteral])
    case string(String)
    case integer(String)
    case bool(Bool)
    case none
}

struct PythonLiteralParser {
    struct SyntaxError: Error {
        let message: String
    }

    static let maximumDepth = 32
    private let characters: [Character]
    private var position = 0

    static func parse(_ text: String) throws -> PythonLiteral {
        var parser = PythonLiteralParser(characters: Array(text))
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.position == parser.characters.count else {
            throw SyntaxError(message: "unexpected text after the dictionary")
        }
        return value
    }

    private init(characters: [Character]) {
        self.characters = characters
    }

    private mutating func skipWhitespace() {
        while position < characters.count, characters[position].isWhitespace { position += 1 }
    }

    private mutating func parseValue(depth: Int) throws -> PythonLiteral {
        guard depth < Self.maximumDepth else { throw SyntaxError(message: "nesting too deep") }
        guard position < characters.count else { throw SyntaxError(message: "unexpected end of header") }
        let character = characters[position]
        switch character {
        case "{":
            position += 1
            var entries: [(String, PythonLiteral)] = []
            for element in try parseSequence(closing: "}", depth: depth, keyed: true) {
                guard case .tuple(let pair) = element, case .string(let key) = pair[0] else {
                    throw SyntaxError(message: "dictionary keys must be strings")
                }
                entries.append((key, pair[1]))
            }
            return .dict(entries)
        case "(":
            position += 1
            let elements = try parseSequence(closing: ")", depth: depth, keyed: false)
            return .tuple(elements)
        case "[":
            position += 1
            return .list(try parseSequence(closing: "]", depth: depth, keyed: false))
        case "'", "\"":
            return .string(try parseString())
        case "-", "0"..."9":
            return .integer(try parseInteger())
        default:
            let word = parseWord()
            switch word {
            case "True": return .bool(true)
            case "False": return .bool(false)
            case "None": return .none
            default: throw SyntaxError(message: "unexpected \(MessageText.quoted(word.isEmpty ? String(character) : word))")
            }
        }
    }

    /// Comma-separated values up to `closing`, with an optional trailing comma. For dictionaries
    /// each element is returned as a (key, value) tuple.
    private mutating func parseSequence(closing: Character, depth: Int, keyed: Bool) throws -> [PythonLiteral] {
        var elements: [PythonLiteral] = []
        while true {
            skipWhitespace()
            guard position < characters.count else { throw SyntaxError(message: "missing '\(closing)'") }
            if characters[position] == closing {
                position += 1
                return elements
            }
            let value = try parseValue(depth: depth + 1)
            skipWhitespace()
            if keyed {
                guard position < characters.count, characters[position] == ":" else {
                    throw SyntaxError(message: "expected ':' after a dictionary key")
                }
                position += 1
                skipWhitespace()
                elements.append(.tuple([value, try parseValue(depth: depth + 1)]))
                skipWhitespace()
            } else {
                elements.append(value)
            }
            guard position < characters.count else { throw SyntaxError(message: "missing '\(closing)'") }
            if characters[position] == "," {
                position += 1
            } else if characters[position] != closing {
                throw SyntaxError(message: "expected ',' or '\(closing)'")
            }
        }
    }

    private mutating func parseString() throws -> String {
        let quote = characters[position]
        position += 1
        var result = ""
        while position < characters.count {
            let character = characters[position]
            position += 1
            if character == quote { return result }
            if character == "\\" {
                guard position < characters.count else { break }
                result.append(characters[position])
                position += 1
            } else {
                result.append(character)
            }
        }
        throw SyntaxError(message: "unterminated string")
    }

    private mutating func parseInteger() throws -> String {
        var text = ""
        if characters[position] == "-" {
            text.append("-")
            position += 1
        }
        while position < characters.count, let ascii = characters[position].asciiValue,
              ascii >= UInt8(ascii: "0"), ascii <= UInt8(ascii: "9") {
            text.append(characters[position])
            position += 1
        }
        guard text.last?.isNumber == true else { throw SyntaxError(message: "invalid integer") }
        // Files written by Python 2 mark long integers with an L suffix.
        if position < characters.count, characters[position] == "L" { position += 1 }
        return text
    }

    private mutating func parseWord() -> String {
        var word = ""
        while position < characters.count, characters[position].isLetter {
            word.append(characters[position])
            position += 1
        }
        return word
    }
}
