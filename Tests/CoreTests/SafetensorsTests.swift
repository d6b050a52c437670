// SafetensorsTests: round trips, reference-library fixtures and one test per class of malformed file.
import Foundation
import Kernels
import XCTest
@testable import Core
import TestSupport

final class SafetensorsTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = try temporaryFolder("safetensors")
    }

    // MARK: Helpers

    private func fixture(_ name: String) throws -> URL {
        try XCTUnwrap(Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures"), "missing fixture \(name)")
    }

    /// A file with the given header text (length field computed unless overridden) and data bytes.
    private func rawFile(_ name: String = "x.safetensors", header: String, data: [UInt8] = [],
                         headerLength: UInt64? = nil) throws -> URL {
        let headerBytes = Array(header.utf8)
        var bytes: [UInt8] = []
        withUnsafeBytes(of: (headerLength ?? UInt64(headerBytes.count)).littleEndian) { bytes.append(contentsOf: $0) }
        bytes += headerBytes + data
        let url = directory.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    private func bytes<T>(of values: [T]) -> [UInt8] {
        values.withUnsafeBytes { Array($0) }
    }

    /// Both entry points must reject a malformed header the same way.
    private func assertHeaderFails(_ url: URL, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        assertFails(url, fragments, file: file, line: line) { try Safetensors.read(url) }
        assertFails(url, fragments, file: file, line: line) { try Safetensors.readHeader(url) }
    }

    /// The vector kernels that read and write BF16 (Kernels.c) against the scalar definition, on
    /// a spread of bit patterns: every exponent, ties, subnormals, infinities and NaNs.
    func testBFloat16KernelsMatchTheScalarConversion() {
        var patterns: [UInt32] = [0, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0x7F80_0001, 0xFFFF_FFFF, 0x0000_8000,
                                  0x3F80_8000, 0x3F81_8000, 0x0000_0001, 0x7F7F_FFFF]
        var state: UInt32 = 12345
        for _ in 0..<20_000 {
            state = state &* 1_664_525 &+ 1_013_904_223
            patterns.append(state)
        }
        let values = patterns.map { Float(bitPattern: $0) }
        var halves = [UInt16](repeating: 0, count: values.count)
        of_f32_to_bf16(&halves, values, values.count)
        for (value, half) in zip(values, halves) {
            if value.isNaN {
                XCTAssertTrue(Float(bitPattern: UInt32(half) << 16).isNaN, "\(value.bitPattern)")
                XCTAssertEqual(half & 0x8000, UInt16(truncatingIfNeeded: value.bitPattern >> 16) & 0x8000, "sign of NaN")
            } else {
                XCTAssertEqual(half, Safetensors.bfloat16Bits(value), "\(value.bitPattern)")
            }
        }
        var back = [Float](repeating: 1, count: halves.count)
        of_bf16_to_f32(&back, halves, halves.count)
        for (half, value) in zip(halves, back) { XCTAssertEqual(value.bitPattern, UInt32(half) << 16) }
    }

    /// bfloat16 bits by round to nearest even, against hand-worked values: ties go to the even
    /// mantissa, overflow to infinity, NaN stays NaN; F16 and BF16 files read back as those values.
    func testReducedPrecisionOutputRoundsToNearestEven() throws {
        let cases: [(Float, UInt16)] = [
            (1, 0x3F80), (1 + 1.0 / 256, 0x3F80), (1 + 3.0 / 256, 0x3F82), (1 + 1.0 / 256 + 1.0 / 65536, 0x3F81),
            (-0.0, 0x8000), (.infinity, 0x7F80), (3.4e38, 0x7F80), (-1.5, 0xBFC0),
        ]
        for (value, bits) in cases { XCTAssertEqual(Safetensors.bfloat16Bits(value), bits, "\(value)") }
        XCTAssertTrue(Float(bitPattern: UInt32(Safetensors.bfloat16Bits(.nan)) << 16).isNaN)

        let values: [Float] = [1 + 3.0 / 256, -2.5, 0.1]
        let url = directory.appendingPathComponent("reduced.safetensors")
        try Safetensors.write([TensorRecord(name: "b", shape: [3], values: values, outputDType: "BF16"),
                               TensorRecord(name: "h", shape: [3], values: values, outputDType: "F16"),
                               TensorRecord(name: "i", shape: [2], values: [], outputDType: "I32", rawBytes: [1, 0, 0, 0, 255, 255, 255, 255])],
                              to: url)
        let file = try Safetensors.read(url)
        XCTAssertEqual(try Safetensors.readHeader(url).tensors.map(\.dtype), ["BF16", "F16", "I32"])
        XCTAssertEqual(file["b"]?.values, values.map { Float(bitPattern: UInt32(Safetensors.bfloat16Bits($0)) << 16) })
        XCTAssertEqual(file["h"]?.values, values.map { Float(Float16($0)) })
        XCTAssertEqual(file["i"]?.values, [1, -1])
        XCTAssertThrowsError(try Safetensors.write([TensorRecord(name: "x", shape: [2], values: [], outputDType: "I32", rawBytes: [1])], to: url)) {
            XCTAssertTrue("\($0)".contains("takes 8 bytes but 1 were given"), "\($0)")
        }
        XCTAssertThrowsError(try Safetensors.write([TensorRecord(name: "x", shape: [1], values: [1], outputDType: "I8")], to: url)) {
            XCTAssertTrue("\($0)".contains("cannot be stored as I8"), "\($0)")
        }
    }

    // MARK: Round trips

    func testRoundTripKeepsOrderValuesMetadataScalarsAndEmptyTensors() throws {
        let tensors = [
            TensorRecord(name: "layer.weight", shape: [2, 3], values: [1, -2, 3.5, .infinity, -0.0, 1e-30]),
            TensorRecord(name: "scale", shape: [], values: [0.25]),
            TensorRecord(name: "nothing", shape: [0, 5], values: []),
            TensorRecord(name: "b", shape: [4], values: [9, 8, 7, 6]),
        ]
        let metadata = ["task": "mnist", "quote\"and\\slash": "line\nbreak é ∑", "empty": ""]
        let url = directory.appendingPathComponent("nested/dir/model.safetensors")
        try Safetensors.write(tensors, metadata: metadata, to: url)

        let file = try Safetensors.read(url)
        XCTAssertEqual(file.tensors, tensors)
        XCTAssertEqual(file.metadata, metadata)
        XCTAssertEqual(file.names, ["layer.weight", "scale", "nothing", "b"])
        XCTAssertEqual(file["scale"]?.values, [0.25])
        XCTAssertNil(file["missing"])

        let header = try Safetensors.readHeader(url)
        XCTAssertEqual(header.names, file.names)
        XCTAssertEqual(header.tensors.map(\.dtype), ["F32", "F32", "F32", "F32"])
        XCTAssertEqual(header.tensors.map(\.shape), [[2, 3], [], [0, 5], [4]])
        XCTAssertEqual(header.tensors.map(\.dataOffsets), [0..<24, 24..<28, 28..<28, 28..<44])
        XCTAssertEqual(header.metadata, metadata)
        XCTAssertEqual(header.dataBufferSize, 44)
    }

    func testEncodingPadsHeaderWithSpacesToMultipleOfEight() throws {
        for nameLength in 1...9 {
            let data = try Safetensors.encode([TensorRecord(name: String(repeating: "n", count: nameLength), shape: [1], values: [1])])
            let length = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
            XCTAssertEqual(length % 8, 0)
            XCTAssertEqual(data.count, 8 + length + 4)
            let header = String(decoding: data.dropFirst(8).prefix(length), as: UTF8.self)
            XCTAssertTrue(header.hasPrefix("{"))
            XCTAssertTrue(header.trimmingCharacters(in: .init(charactersIn: " ")).hasSuffix("}"))
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(header.utf8)) as? [String: Any])
            XCTAssertNil(json["__metadata__"], "empty metadata is omitted, as the reference writer does")
        }
    }

    func testEmptyFileOfTensorsRoundTrips() throws {
        let url = directory.appendingPathComponent("none.safetensors")
        try Safetensors.write([], metadata: ["k": "v"], to: url)
        let file = try Safetensors.read(url)
        XCTAssertEqual(file.tensors, [])
        XCTAssertEqual(file.metadata, ["k": "v"])
    }

    func testWriteReplacesExistingFile() throws {
        let url = directory.appendingPathComponent("m.safetensors")
        try Safetensors.write([TensorRecord(name: "a", shape: [1], values: [1])], to: url)
        try Safetensors.write([TensorRecord(name: "b", shape: [2], values: [2, 3])], to: url)
        XCTAssertEqual(try Safetensors.read(url).tensors, [TensorRecord(name: "b", shape: [2], values: [2, 3])])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["m.safetensors"])
    }

    // MARK: Reference library and hand-built dtypes

    func testReadsFileWrittenByReferenceLibrary() throws {
        let file = try Safetensors.read(fixture("safetensors_reference.safetensors"))
        XCTAssertEqual(file.metadata, ["format": "np", "note": "h\u{e9}llo \"quoted\"\n"])
        // Data-offset order, as the reference writer laid them out.
        XCTAssertEqual(file.names, ["ints64", "double", "empty", "weight", "ints32", "half", "ints16", "ints8", "bytes", "flags"])
        XCTAssertEqual(file["weight"], TensorRecord(name: "weight", shape: [2, 3], values: [-1, -0.5, 0, 0.5, 1, 1.5]))
        XCTAssertEqual(file["half"]?.values, [1, -2.5, 65504, 0x1p-24])
        XCTAssertEqual(file["double"]?.shape, [])
        XCTAssertEqual(file["double"]?.values, [Float(3.141592653589793)])
        XCTAssertEqual(file["ints64"]?.values, [-3, 0, Float(1 << 40)])
        XCTAssertEqual(file["ints32"]?.values, [-7, 7])
        XCTAssertEqual(file["ints16"]?.values, [-300, 300])
        XCTAssertEqual(file["ints8"]?.values, [-128, 127])
        XCTAssertEqual(file["bytes"], TensorRecord(name: "bytes", shape: [2, 2], values: [0, 255, 1, 128]))
        XCTAssertEqual(file["flags"]?.values, [1, 0, 1])
        XCTAssertEqual(file["empty"], TensorRecord(name: "empty", shape: [0, 4], values: []))
    }

    func testReadsHandBuiltHalfBFloatAndDoubleTensors() throws {
        // F16 1.0, -2.0, smallest subnormal; BF16 1.0, -3.0; F64 0.1 and -1e300 (becomes -inf in Float).
        let half: [UInt16] = [0x3C00, 0xC000, 0x0001]
        let bfloat: [UInt16] = [0x3F80, 0xC040]
        let double: [UInt64] = [(0.1 as Double).bitPattern, (-1e300 as Double).bitPattern]
        let header = """
        {"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[6,10]},\
        "d":{"dtype":"F64","shape":[2,1],"data_offsets":[10,26]}}
        """
        let url = try rawFile(header: header, data: bytes(of: half.map(\.littleEndian)) + bytes(of: bfloat.map(\.littleEndian))
                              + bytes(of: double.map(\.littleEndian)))
        let file = try Safetensors.read(url)
        XCTAssertEqual(file["h"]?.values, [1, -2, 0x1p-24])
        XCTAssertEqual(file["b"]?.values, [1, -3])
        XCTAssertEqual(file["d"]?.shape, [2, 1])
        XCTAssertEqual(file["d"]?.values, [Float(0.1), -.infinity])
        XCTAssertEqual(file.metadata, [:])
    }

    func testHeaderOrderMayDifferFromDataOrder() throws {
        let header = #"{"second":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"first":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        let url = try rawFile(header: header, data: bytes(of: [Float(1), 2]))
        XCTAssertEqual(try Safetensors.read(url).names, ["first", "second"])
    }

    // MARK: Malformed files

    func testMissingFileAndDirectory() throws {
        let missing = directory.appendingPathComponent("absent.safetensors")
        assertHeaderFails(missing, ["no such file"])
        assertHeaderFails(directory, ["is a directory"])
    }

    func testEmptyAndTooShortFiles() throws {
        let empty = directory.appendingPathComponent("empty.safetensors")
        try Data().write(to: empty)
        assertHeaderFails(empty, ["file is empty"])
        let short = directory.appendingPathComponent("short.safetensors")
        try Data([1, 2, 3]).write(to: short)
        assertHeaderFails(short, ["3 bytes", "too short"])
    }

    func testHeaderLengthAboveLimitOrFile() throws {
        assertHeaderFails(try rawFile("huge.safetensors", header: "{}", headerLength: .max), ["header length 18446744073709551615", "100000000-byte limit"])
        assertHeaderFails(try rawFile("long.safetensors", header: "{}", headerLength: 64), ["header length 64", "exceeds the 2 bytes"])
    }

    func testTruncatedDataBuffer() throws {
        let url = try rawFile(header: #"{"a":{"dtype":"F32","shape":[10],"data_offsets":[0,40]}}"#, data: Array(repeating: 0, count: 32))
        assertHeaderFails(url, ["tensor 'a': data_offsets [0, 40] exceed the data buffer (32 bytes)"])
    }

    func testHeaderThatIsNotJSON() throws {
        assertHeaderFails(try rawFile(header: "{not json}"), ["header is not valid JSON"])
        assertHeaderFails(try rawFile("deep.safetensors", header: String(repeating: "[", count: 10_000)), ["not valid JSON", "nesting"])
        let invalidUTF8 = directory.appendingPathComponent("utf8.safetensors")
        try Data([4, 0, 0, 0, 0, 0, 0, 0, 0x7B, 0xFF, 0xFE, 0x7D]).write(to: invalidUTF8)
        assertHeaderFails(invalidUTF8, ["not valid UTF-8"])
    }

    func testHeaderThatIsNotAnObject() throws {
        assertHeaderFails(try rawFile(header: "[1, 2]"), ["header is an array, expected a JSON object"])
    }

    func testMissingAndUnexpectedFields() throws {
        assertHeaderFails(try rawFile("m.safetensors", header: #"{"a":{"dtype":"F32","data_offsets":[0,0]}}"#), ["tensor 'a': missing field 'shape'"])
        assertHeaderFails(try rawFile("e.safetensors", header: #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"foo":1}}"#),
                          ["tensor 'a': unexpected field 'foo'"])
        assertHeaderFails(try rawFile("d.safetensors", header: #"{"a":{"dtype":"F32","dtype":"F16","shape":[0],"data_offsets":[0,0]}}"#),
                          ["field 'dtype' appears twice"])
        assertHeaderFails(try rawFile("s.safetensors", header: #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0,0]}}"#),
                          ["data_offsets has 3 entries"])
        assertHeaderFails(try rawFile("t.safetensors", header: #"{"a":"F32"}"#), ["tensor 'a': entry is a string"])
    }

    func testUnknownDtype() throws {
        assertHeaderFails(try rawFile(header: #"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#, data: [0]),
                          ["tensor 'a': unsupported dtype 'Q7'", "F32"])
        // Names from the file are escaped so that the message stays on one line.
        assertHeaderFails(try rawFile("n.safetensors", header: #"{"a\nb'c":{"dtype":"Q\u0000","shape":[1],"data_offsets":[0,1]}}"#, data: [0]),
                          [#"tensor 'a\nb\'c': unsupported dtype 'Q\u{0}'"#])
    }

    func testNegativeNonIntegerAndHugeShapes() throws {
        assertHeaderFails(try rawFile("n.safetensors", header: #"{"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}}"#),
                          ["tensor 'a': shape entry -1 is negative"])
        assertHeaderFails(try rawFile("f.safetensors", header: #"{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,0]}}"#),
                          ["shape entry 2.5 is not an integer"])
        assertHeaderFails(try rawFile("h.safetensors", header: #"{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,0]}}"#),
                          ["is too large"])
        // Each dimension fits in Int, but the product does not.
        assertHeaderFails(try rawFile("o.safetensors", header: #"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#),
                          ["shape [4294967296, 4294967296] has too many elements (integer overflow)"])
        // The element count fits, the byte count does not.
        assertHeaderFails(try rawFile("b.safetensors", header: #"{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}}"#),
                          ["too large (integer overflow)"])
    }

    func testOffsetsThatDoNotMatchTheElementCount() throws {
        let url = try rawFile(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}"#, data: Array(repeating: 0, count: 12))
        assertHeaderFails(url, ["tensor 'a': data_offsets [0, 12] span 12 bytes but F32 with shape [2] needs 8"])
    }

    func testReversedOffsets() throws {
        let url = try rawFile(header: #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, data: Array(repeating: 0, count: 8))
        assertHeaderFails(url, ["data_offsets [8, 0] end before they begin"])
    }

    func testOverlappingOffsets() throws {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        assertHeaderFails(try rawFile(header: header, data: Array(repeating: 0, count: 12)),
                          ["tensor 'b': data_offsets [4, 12] overlap tensor 'a' at [0, 8]"])
    }

    func testGapsAndUncoveredBytes() throws {
        let gap = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        assertHeaderFails(try rawFile("gap.safetensors", header: gap, data: Array(repeating: 0, count: 12)),
                          ["tensor 'b': data_offsets [8, 12] leave a gap of 4 bytes after tensor 'a'"])
        let leading = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        assertHeaderFails(try rawFile("lead.safetensors", header: leading, data: Array(repeating: 0, count: 8)),
                          ["gap of 4 bytes after the start of the data buffer"])
        let trailing = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        assertHeaderFails(try rawFile("trail.safetensors", header: trailing, data: Array(repeating: 0, count: 12)),
                          ["data buffer is 12 bytes but the tensors cover only 4"])
    }

    func testDuplicateAndEmptyNames() throws {
        let duplicate = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        assertHeaderFails(try rawFile("dup.safetensors", header: duplicate, data: Array(repeating: 0, count: 8)),
                          ["tensor 'a' appears twice"])
        assertHeaderFails(try rawFile("empty-name.safetensors", header: #"{"":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#),
                          ["empty name"])
    }

    func testMetadataMustBeAnObjectOfStrings() throws {
        assertHeaderFails(try rawFile("v.safetensors", header: #"{"__metadata__":{"epochs":3}}"#),
                          ["__metadata__ value for key 'epochs' is a number, expected a string"])
        assertHeaderFails(try rawFile("o.safetensors", header: #"{"__metadata__":"x"}"#), ["__metadata__ is a string"])
        assertHeaderFails(try rawFile("t.safetensors", header: #"{"__metadata__":{},"__metadata__":{}}"#), ["__metadata__ appears twice"])
    }

    func testReadHeaderSkipsDataButChecksItsSize() throws {
        let url = try rawFile(header: #"{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}"#, data: Array(repeating: 0, count: 6))
        let header = try Safetensors.readHeader(url)
        XCTAssertEqual(header.tensors, [SafetensorsTensorInfo(name: "a", dtype: "BF16", shape: [3], dataOffsets: 0..<6)])
    }

    // MARK: Writer validation

    func testWriterRejectsInconsistentTensors() throws {
        let url = directory.appendingPathComponent("out.safetensors")
        let cases: [([TensorRecord], String)] = [
            ([TensorRecord(name: "a", shape: [2, 3], values: [1])], "tensor 'a': shape [2, 3] holds 6 values but 1 were given"),
            ([TensorRecord(name: "a", shape: [1], values: [1]), TensorRecord(name: "a", shape: [1], values: [2])], "'a' is used twice"),
            ([TensorRecord(name: "", shape: [], values: [1])], "empty name"),
            ([TensorRecord(name: "a", shape: [-1], values: [])], "negative dimension"),
            ([TensorRecord(name: "__metadata__", shape: [], values: [1])], "reserved"),
        ]
        for (tensors, fragment) in cases {
            assertFails(url, [fragment]) { try Safetensors.write(tensors, to: url) }
            XCTAssertThrowsError(try Safetensors.encode(tensors)) { error in
                XCTAssertTrue("\(error)".contains(fragment), "\(error)")
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
    }
}
