// DatasetTests: .npy, .npz and IDX (raw and gzip) loading, and one test per class of malformed input.
import Foundation
import XCTest
import ZIPFoundation
@testable import Core
import TestSupport

final class DatasetTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = try temporaryFolder("dataset")
    }

    // MARK: Helpers

    private func fixture(_ name: String) throws -> URL {
        try XCTUnwrap(Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures"), "missing fixture \(name)")
    }

    private func fixtureBytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: fixture(name)))
    }

    private func temporaryFile(_ name: String, _ bytes: [UInt8]) throws -> URL {
        let url = directory.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    /// A version 1.0 .npy image with the given header dictionary text and payload.
    private func npy(_ dictionary: String, payload: [UInt8], version: UInt8 = 1) -> [UInt8] {
        var header = Array(dictionary.utf8)
        let preamble = version == 1 ? 10 : 12
        header += Array(repeating: UInt8(ascii: " "), count: (64 - (preamble + header.count + 1) % 64) % 64) + [0x0A]
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version, 0]
        if version == 1 {
            bytes += [UInt8(header.count & 0xFF), UInt8(header.count >> 8)]
        } else {
            withUnsafeBytes(of: UInt32(header.count).littleEndian) { bytes += $0 }
        }
        return bytes + header + payload
    }

    private func idx(_ type: UInt8, _ dimensions: [UInt32], payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = [0, 0, type, UInt8(dimensions.count)]
        for dimension in dimensions { withUnsafeBytes(of: dimension.bigEndian) { bytes += $0 } }
        return bytes + payload
    }

    // MARK: .npy

    func testReadsNumpyFixturesOfEveryVersionAndByteOrder() throws {
        let f4 = try NumpyArray.read(fixture("npy_f4_2x3.npy"))
        XCTAssertEqual(f4.descr, "<f4")
        XCTAssertEqual(f4.shape, [2, 3])
        XCTAssertEqual(f4.floatValues(), [1.5, -2, 0, 3.25, 1e-3, -7])

        let f8 = try NumpyArray.read(fixture("npy_f8_big_endian.npy"))
        XCTAssertEqual(f8.descr, ">f8")
        XCTAssertEqual(f8.floatValues(), [1, -0.5, 1e10])

        let i2 = try NumpyArray.read(fixture("npy_i2_big_endian.npy"))
        XCTAssertEqual(try i2.int32Values(), [-2, 513, 32767])

        let scalar = try NumpyArray.read(fixture("npy_0d.npy"))
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(scalar.floatValues(), [2.5])

        let u1 = try NumpyArray.read(fixture("npy_u1_v2.npy"))
        XCTAssertEqual(u1.shape, [2, 2])
        XCTAssertEqual(try u1.int32Values(), [0, 1, 254, 255])

        let i8 = try NumpyArray.read(fixture("npy_i8_v3.npy"))
        XCTAssertEqual(i8.floatValues(), [-8_589_934_592, 5])
        let source = try fixture("npy_i8_v3.npy").path
        assertFails(source, ["value -8589934592 at index 0 does not fit in Int32"]) { try i8.int32Values() }
    }

    func testFortranOrderIsRejected() throws {
        let url = try fixture("npy_fortran_2x3.npy")
        assertFails(url.path, ["Fortran order", "not supported"]) { try NumpyArray.read(url) }
        // One-dimensional arrays have the same layout in both orders.
        let oneDimensional = npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", payload: [0, 0, 128, 63, 0, 0, 0, 64])
        XCTAssertEqual(try NumpyArray.parse(Data(oneDimensional), source: "v").floatValues(), [1, 2])
    }

    func testHandBuiltNumpyHeaderVariants() throws {
        // Double quotes, no trailing comma, keys in another order, Python 2 long suffix, format 2.0.
        let bytes = npy(#"{"shape": (2L, 1L), "fortran_order": False, "descr": "|i1"}"#, payload: [0xFF, 0x05], version: 2)
        let array = try NumpyArray.parse(Data(bytes), source: "v")
        XCTAssertEqual(array.shape, [2, 1])
        XCTAssertEqual(try array.int32Values(), [-1, 5])
        let empty = try NumpyArray.parse(Data(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 3), }", payload: [])), source: "v")
        XCTAssertEqual(empty.elementCount, 0)
        XCTAssertEqual(empty.floatValues(), [])
    }

    func testMalformedNumpyFiles() throws {
        let good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
        let eightBytes: [UInt8] = Array(repeating: 0, count: 8)
        let cases: [([UInt8], String)] = [
            ([], "file is empty"),
            (Array("PK\u{03}\u{04}not numpy".utf8), "missing the \\x93NUMPY magic"),
            ([0x93] + Array("NUMPY".utf8) + [4, 0, 0, 0], "unsupported .npy format version 4.0"),
            ([0x93] + Array("NUMPY".utf8) + [1, 0, 0xFF, 0xFF] + Array("{}".utf8), ".npy header length 65535 exceeds the 2 bytes left"),
            ([0x93] + Array("NUMPY".utf8) + [2, 0, 0xFF, 0xFF, 0xFF, 0x7F], "exceeds the 1048576-byte limit"),
            (npy(good, payload: [0, 0, 0]), "array data is truncated: shape (2,) of <f4 needs 8 bytes, file has 3"),
            (npy(good, payload: eightBytes + [1]), "1 unexpected bytes after the array data"),
            (npy("['descr', '<f4']", payload: []), ".npy header is not a dictionary"),
            (npy("{'descr': '<f4', 'shape': (2,)}", payload: eightBytes), "missing the key 'fortran_order'"),
            (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", payload: eightBytes), "unexpected key 'extra'"),
            (npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", payload: eightBytes), "key 'descr' appears twice"),
            (npy("{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}", payload: eightBytes), "unsupported dtype '<c8'"),
            (npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", payload: eightBytes), "Python objects"),
            (npy("{'descr': '|f4', 'fortran_order': False, 'shape': (2,)}", payload: eightBytes), "unsupported dtype '|f4'"),
            (npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", payload: eightBytes), "structured dtypes"),
            (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1)}", payload: []), "negative dimension -1"),
            (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", payload: []), "integer overflow"),
            (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", payload: []), "too large"),
            (npy("{'descr': '<f4', 'fortran_order': 'no', 'shape': (2,)}", payload: eightBytes), "'fortran_order' is not True or False"),
            (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", payload: eightBytes), "not a valid Python literal"),
            (npy(String(repeating: "(", count: 500), payload: []), "not a valid Python literal (nesting too deep)"),
        ]
        for (bytes, fragment) in cases {
            assertFails("bad.npy", [fragment]) { try NumpyArray.parse(Data(bytes), source: "bad.npy") }
        }
    }

    // MARK: .npz

    func testLoadsStoredNpzWithByteInputs() throws {
        let dataset = try Dataset.load(.npz(fixture("npz_stored_u8.npz")))
        XCTAssertEqual(dataset.count, 4)
        XCTAssertEqual(dataset.sampleShape, [2, 3])
        XCTAssertEqual(dataset.featureCount, 6)
        XCTAssertEqual(dataset.labels, [0, 1, 2, 1])
        XCTAssertEqual(dataset.inputs.count, 24)
        XCTAssertEqual(dataset.inputs, (0..<24).map { Float($0 * 10) / 255 })
    }

    func testLoadsDeflatedNpzWithFloatInputs() throws {
        let dataset = try Dataset.loadNPZ(fixture("npz_deflated_f4.npz"))
        XCTAssertEqual(dataset.count, 5)
        XCTAssertEqual(dataset.sampleShape, [4])
        XCTAssertEqual(dataset.labels, [3, 0, 1, 2, 3])
        XCTAssertEqual(dataset.inputs.first, -1)
        XCTAssertEqual(dataset.inputs.last, 1)
        XCTAssertEqual(dataset.inputs.count, 20)

        let doubles = try Dataset.loadNPZ(fixture("npz_f8_i4.npz"))
        XCTAssertEqual(doubles.inputs, [0.25, 0.5, 1, 2])
        XCTAssertEqual(doubles.labels, [1, 0])
    }

    func testNpzContentProblemsNameTheFileAndArray() throws {
        let cases: [(String, [String])] = [
            ("npz_missing_y.npz", ["array 'y' missing (the archive holds: 'x', 'labels')"]),
            ("npz_float_labels.npz", ["array 'y' has dtype <f4; labels must be integers"]),
            ("npz_count_mismatch.npz", ["array 'x' has 3 samples but 'y' has 2 labels"]),
            ("npz_no_samples.npz", ["array 'x': holds no samples"]),
            ("npz_nonfinite.npz", ["array 'x': non-finite value nan in sample 1"]),
        ]
        for (name, fragments) in cases {
            let url = try fixture(name)
            assertFails(url.path, fragments) { try Dataset.loadNPZ(url) }
        }
    }

    func testNpzThatIsNotAZipOrIsMissing() throws {
        let junk = try temporaryFile("junk.npz", Array("definitely not a zip archive".utf8))
        assertFails(junk.path, ["not a zip archive"]) { try Dataset.loadNPZ(junk) }
        let empty = try temporaryFile("empty.npz", [])
        assertFails(empty.path, ["file is empty"]) { try Dataset.loadNPZ(empty) }
        let missing = directory.appendingPathComponent("absent.npz")
        assertFails(missing.path, ["no such file"]) { try Dataset.loadNPZ(missing) }
        assertFails(directory.path, ["is a directory"]) { try Dataset.loadNPZ(directory) }
    }

    func testDamagedNpzEntriesAreDetected() throws {
        // Flip bytes inside the first entry's compressed data (its local header is at offset 0).
        var deflated = try fixtureBytes("npz_deflated_f4.npz")
        let dataStart = 30 + Int(deflated[26]) + Int(deflated[28]) | Int(deflated[29]) << 8
        for offset in (dataStart + 20)..<(dataStart + 28) { deflated[offset] ^= 0x5A }
        let damaged = try temporaryFile("damaged.npz", deflated)
        assertFails(damaged.path, ["array 'x'", "archive corrupt"]) { try Dataset.loadNPZ(damaged) }

        // A flipped byte in stored data is caught by the CRC.
        var stored = try fixtureBytes("npz_stored_u8.npz")
        let storedStart = 30 + Int(stored[26]) + Int(stored[28]) | Int(stored[29]) << 8
        stored[storedStart + 140] ^= 0x01
        let flipped = try temporaryFile("flipped.npz", stored)
        assertFails(flipped.path, ["array 'x': zip entry CRC32 mismatch"]) { try Dataset.loadNPZ(flipped) }

        // A deflate stream that runs past the end of the file ends in an error, not an endless loop
        // (the fixture holds only x: a dataset load would stop at the missing y first).
        let endless = try fixture("npz_endless_deflate.npz")
        assertFails(endless.path, ["array 'x'", "ends before the deflate stream does"]) {
            try NumpyArchive.readArrays(endless, names: ["x"])
        }

        // Cutting the file loses the central directory.
        let truncated = try temporaryFile("truncated.npz", Array(try fixtureBytes("npz_stored_u8.npz").prefix(300)))
        assertFails(truncated.path, ["not a zip archive"]) { try Dataset.loadNPZ(truncated) }
    }

    // MARK: IDX and gzip

    private let expectedImages: [Float] = [0, 51, 102, 153, 204, 255, 1, 2, 3, 4, 5, 6, 255, 0, 255, 0, 255, 0].map { $0 / 255 }

    func testLoadsRawIDX() throws {
        let dataset = try Dataset.load(.idx(images: fixture("idx_images.idx"), labels: fixture("idx_labels.idx")))
        XCTAssertEqual(dataset.count, 3)
        XCTAssertEqual(dataset.sampleShape, [2, 3])
        XCTAssertEqual(dataset.featureCount, 6)
        XCTAssertEqual(dataset.labels, [7, 0, 9])
        XCTAssertEqual(dataset.inputs, expectedImages)
    }

    func testLoadsGzipIDXDetectedByMagicNotName() throws {
        let gzipped = try Dataset.loadIDX(images: fixture("idx_images_gzipped.idx"), labels: fixture("idx_labels.idx.gz"))
        XCTAssertEqual(gzipped.inputs, expectedImages)
        XCTAssertEqual(gzipped.labels, [7, 0, 9])
        // An uncompressed file with a .gz name is read as it is.
        let misnamed = try temporaryFile("labels.gz", try fixtureBytes("idx_labels.idx"))
        XCTAssertEqual(try Dataset.loadIDX(images: fixture("idx_images.idx"), labels: misnamed).labels, [7, 0, 9])
    }

    func testGzipHeaderWithEveryOptionalField() throws {
        let data = try Data(contentsOf: fixture("idx_labels_allflags.gz"))
        XCTAssertEqual(try Gzip.decompress(data, source: "f"), try Data(contentsOf: fixture("idx_labels.idx")))
        var corruptHeader = [UInt8](data)
        corruptHeader[20] ^= 0xFF  // inside FEXTRA, so the header CRC no longer matches
        let url = try temporaryFile("header.gz", corruptHeader)
        assertFails(url.path, ["gzip header CRC mismatch"]) { try IDXArray.read(url) }
    }

    func testTruncatedGzip() throws {
        let bytes = try fixtureBytes("idx_images_gzipped.idx")
        for length in [2, 12, bytes.count / 2, bytes.count - 3] {
            let url = try temporaryFile("cut-\(length).idx", Array(bytes.prefix(length)))
            assertFails(url.path, ["truncated"]) { try IDXArray.read(url) }
        }
        // The deflate stream cut short while the trailer survives (the stream starts at byte 25).
        let cutStream = Array(bytes.prefix(35)) + Array(bytes.suffix(8))
        let url = try temporaryFile("cut-stream.idx", cutStream)
        assertFails(url.path, ["the compressed data ends before the deflate stream does", "truncated"]) { try IDXArray.read(url) }
    }

    func testGzipWithBadCRC() throws {
        var bytes = try fixtureBytes("idx_images_gzipped.idx")
        bytes[bytes.count - 8] ^= 0x01
        let url = try temporaryFile("crc.idx", bytes)
        assertFails(url.path, ["gzip CRC32 mismatch"]) { try IDXArray.read(url) }
        var size = try fixtureBytes("idx_images_gzipped.idx")
        size[size.count - 4] &+= 1
        let sizeURL = try temporaryFile("size.idx", size)
        assertFails(sizeURL.path, ["the IDX header declares", "gzip trailer records"]) { try IDXArray.read(sizeURL) }
    }

    // MARK: Sizes checked before inflating

    /// A raw deflate stream of `bytes` (ZIPFoundation's encoder).
    private func deflate(_ bytes: [UInt8]) throws -> [UInt8] {
        let data = Data(bytes)
        var output = Data()
        _ = try Data.compress(size: Int64(data.count), bufferSize: max(1, data.count), provider: { position, size in
            data.subdata(in: Int(position)..<min(data.count, Int(position) + size))
        }, consumer: { output.append($0) })
        return [UInt8](output)
    }

    /// A gzip file of `bytes`, with the trailer's size field set to `recordedSize` when given.
    private func gzip(_ bytes: [UInt8], recordedSize: UInt32? = nil) throws -> [UInt8] {
        var file: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3] + (try deflate(bytes))
        withUnsafeBytes(of: Data(bytes).crc32(checksum: 0).littleEndian) { file += $0 }
        withUnsafeBytes(of: (recordedSize ?? UInt32(truncatingIfNeeded: bytes.count)).littleEndian) { file += $0 }
        return file
    }

    /// An .npz archive of deflated entries.
    private func npz(_ name: String, _ entries: [(String, [UInt8])], method: CompressionMethod = .deflate) throws -> URL {
        let url = directory.appendingPathComponent(name)
        let archive = try Archive(url: url, accessMode: .create)
        for (path, bytes) in entries {
            let data = Data(bytes)
            try archive.addEntry(with: path, type: .file, uncompressedSize: Int64(data.count), compressionMethod: method,
                                 provider: { position, size in data.subdata(in: Int(position)..<(Int(position) + size)) })
        }
        return url
    }

    /// uint8 images stored channels last ([N, H, W, C], as image exports store them) are read ÷ 255,
    /// moved channels first for a [C, H, W] model, and normalised per channel (CLIP's preprocessing).
    func testChannelsLastImagesAreMovedChannelsFirstAndNormalised() throws {
        let (height, width, channels) = (2, 3, 3)
        let pixels = (0..<(2 * height * width * channels)).map { UInt8(($0 * 7) % 256) }
        let url = try npz("images.npz", [
            ("x.npy", npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 3, 3), }", payload: pixels)),
            ("y.npy", npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }", payload: [0, 1])),
        ])
        let stored = try Dataset.load(.npz(url))
        XCTAssertEqual(stored.sampleShape, [height, width, channels])
        let arranged = stored.arranged(for: [channels, height, width])
        XCTAssertEqual(arranged.sampleShape, [channels, height, width])
        XCTAssertEqual(arranged.arranged(for: [channels, height, width]), arranged, "channels first already: unchanged")
        XCTAssertEqual(stored.arranged(for: [height * width * channels]), stored, "a flat input: unchanged")
        let normalization = ChannelNormalization(mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711])
        let normalized = arranged.normalized(normalization, for: [channels, height, width])
        for n in 0..<2 {
            for y in 0..<height {
                for x in 0..<width {
                    for c in 0..<channels {
                        let raw = Float(pixels[((n * height + y) * width + x) * channels + c]) / 255
                        let expected = (raw - normalization.mean[c]) / normalization.std[c]
                        XCTAssertEqual(normalized.inputs[n * 18 + (c * height + y) * width + x], expected, "sample \(n) (\(c), \(y), \(x))")
                    }
                }
            }
        }
        let single = arranged.normalized(ChannelNormalization(mean: [0.5], std: [0.25]), for: [channels, height, width])
        XCTAssertEqual(single.inputs, arranged.inputs.map { ($0 - 0.5) / 0.25 }, "one mean and std for every channel")
    }

    /// A split in several .npz shards: their samples in order; shards of another sample shape are refused.
    func testShardsOfASplitAreReadInOrder() throws {
        func shard(_ name: String, samples: [[UInt8]], labels: [UInt8], shape: String) throws -> URL {
            try npz(name, [
                ("x.npy", npy("{'descr': '|u1', 'fortran_order': False, 'shape': (\(samples.count), \(shape)), }", payload: samples.flatMap { $0 })),
                ("y.npy", npy("{'descr': '|u1', 'fortran_order': False, 'shape': (\(labels.count),), }", payload: labels)),
            ])
        }
        let first = try shard("a.npz", samples: [[0, 51], [102, 153]], labels: [0, 1], shape: "2")
        let second = try shard("b.npz", samples: [[204, 255]], labels: [2], shape: "2")
        let data = try Dataset.load(.npzShards([first, second]))
        XCTAssertEqual(data.labels, [0, 1, 2])
        XCTAssertEqual(data.inputs, [0, 0.2, 0.4, 0.6, 0.8, 1])
        XCTAssertEqual(data.sampleShape, [2])
        let other = try shard("c.npz", samples: [[1, 2, 3]], labels: [0], shape: "3")
        XCTAssertThrowsError(try Dataset.load(.npzShards([first, other]))) { error in
            XCTAssertTrue("\(error)".contains("c.npz: samples have shape [3], the split's first shard"), "\(error)")
        }
    }

    func testGzipIDXSizesAreCheckedBeforeInflating() throws {
        // The trailer claims 3.75 GiB for a few bytes: refused on the header, nothing reserved.
        let images = idx(0x08, [2, 3], payload: [1, 2, 3, 4, 5, 6])
        let inflated = try temporaryFile("inflated.idx.gz", try gzip(images, recordedSize: 0xF000_0000))
        assertFails(inflated.path, ["declares 18 bytes", "records 4026531840"]) { try IDXArray.read(inflated) }
        // A header that declares more than the machine holds, with a trailer that agrees (mod 2^32).
        let huge = idx(0x08, [1 << 20, 1 << 12, 1 << 10], payload: [])
        let declared = 16 + (1 << 42)
        let claims = try temporaryFile("huge.idx.gz", try gzip(huge, recordedSize: UInt32(truncatingIfNeeded: declared)))
        assertFails(claims.path, ["inflating", "more than the"]) { try IDXArray.read(claims) }
        // Images and labels that disagree fail on the headers, before the images are inflated.
        let labels = try temporaryFile("labels.idx", idx(0x08, [3], payload: [0, 1, 2]))
        assertFails(claims.path, ["1048576 images", "3 labels"]) { try Dataset.loadIDX(images: claims, labels: labels) }
        // A good gzip file still reads.
        let good = try temporaryFile("good.idx.gz", try gzip(images))
        XCTAssertEqual(try IDXArray.read(good).dimensions, [2, 3])
    }

    func testNpzHeadersAreCheckedBeforeInflating() throws {
        // x.npy declares (1000000, 784) float32 but its entry holds 16 bytes of data.
        let lying = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 784), }", payload: [UInt8](repeating: 0, count: 16))
        let y = npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", payload: [UInt8](repeating: 0, count: 16))
        let url = try npz("lying.npz", [("x.npy", lying), ("y.npy", y)])
        assertFails(url.path, ["array 'x'", "(1000000, 784)", "the zip entry holds"]) { try Dataset.loadNPZ(url) }
        // Counts that disagree are reported from the headers, even when x's data is damaged:
        // the damage is never reached because x is not inflated.
        let x = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", payload: [UInt8](repeating: 0, count: 24))
        let stored = try npz("stored.npz", [("x.npy", x), ("y.npy", y)], method: .none)
        var bytes = try [UInt8](Data(contentsOf: stored))
        let dataStart = 30 + Int(bytes[26]) + (Int(bytes[28]) | Int(bytes[29]) << 8)
        bytes[dataStart + x.count - 1] ^= 0xFF  // the last data byte: the CRC no longer matches
        let damaged = try temporaryFile("damaged-count.npz", bytes)
        assertFails(damaged.path, ["array 'x' has 3 samples but 'y' has 2 labels"]) { try Dataset.loadNPZ(damaged) }
    }

    func testTheMemoryBudgetRefusesWhatCannotFit() {
        XCTAssertGreaterThan(MemoryBudget.availableBytes, 1 << 20)
        XCTAssertNoThrow(try MemoryBudget.check(1 << 20, for: "a small buffer"))
        XCTAssertThrowsError(try MemoryBudget.check(Int.max, for: "everything")) { error in
            XCTAssertTrue("\(error)".hasPrefix("everything needs"), "\(error)")
        }
    }

    func testGzipWithCorruptDeflateData() throws {
        var bytes = try fixtureBytes("idx_images_gzipped.idx")
        bytes[26] = 0xFF  // the header has FNAME "idx_images.idx", so the stream starts at byte 25
        bytes[27] = 0xFF
        let url = try temporaryFile("corrupt.idx", bytes)
        assertFails(url.path, ["gzip data is damaged"]) { try IDXArray.read(url) }
    }

    func testMalformedIDXFiles() throws {
        let cases: [([UInt8], String)] = [
            ([], "file is empty"),
            ([1, 2, 3, 4, 5], "not an IDX file"),
            ([0, 0, 0x07, 1, 0, 0, 0, 0], "unknown IDX element type 0x7"),
            ([0, 0, 0x08, 0], "zero dimensions"),
            ([0, 0, 0x08, 3, 0, 0, 0, 1], "IDX header is truncated: 3 dimensions need 16 bytes"),
            (idx(0x08, [2, 2], payload: [1, 2, 3]), "IDX data is truncated: dimensions [2, 2] of unsigned byte need 4 bytes, file has 3"),
            (idx(0x08, [2], payload: [1, 2, 3]), "1 unexpected bytes after the IDX data"),
            (idx(0x0E, [0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF], payload: []), "too large (integer overflow)"),
        ]
        for (bytes, fragment) in cases {
            let url = try temporaryFile("bad.idx", bytes)
            assertFails(url.path, [fragment]) { try IDXArray.read(url) }
        }
    }

    func testIDXPairProblems() throws {
        let images = try fixture("idx_images.idx")
        let twoLabels = try temporaryFile("two.idx", idx(0x08, [2], payload: [1, 2]))
        assertFails(images.path, ["3 images but", "two.idx has 2 labels"]) { try Dataset.loadIDX(images: images, labels: twoLabels) }
        let matrixLabels = try temporaryFile("matrix.idx", idx(0x08, [3, 1], payload: [1, 2, 3]))
        assertFails(matrixLabels.path, ["2 dimensions", "expected 1"]) { try Dataset.loadIDX(images: images, labels: matrixLabels) }
        let floatLabels = try temporaryFile("float.idx", idx(0x0D, [3], payload: Array(repeating: 0, count: 12)))
        assertFails(floatLabels.path, ["not an integer type"]) { try Dataset.loadIDX(images: images, labels: floatLabels) }
        let noImages = try temporaryFile("none.idx", idx(0x08, [0, 2, 2], payload: []))
        let noLabels = try temporaryFile("nolabels.idx", idx(0x08, [0], payload: []))
        assertFails(noImages.path, ["holds no samples"]) { try Dataset.loadIDX(images: noImages, labels: noLabels) }
        let negative = try temporaryFile("negative.idx", idx(0x09, [3], payload: [1, 0xFF, 2]))
        assertFails(negative.path, ["negative label -1 at index 1"]) { try Dataset.loadIDX(images: images, labels: negative) }
        let missing = directory.appendingPathComponent("missing-labels.idx")
        assertFails(missing.path, ["no such file"]) { try Dataset.loadIDX(images: images, labels: missing) }
    }

    // MARK: Dataset values

    func testSubsetGathersRowsInOrder() throws {
        let dataset = Dataset(inputs: [0, 1, 10, 11, 20, 21], labels: [5, 6, 7], sampleShape: [2])
        let picked = dataset.subset([2, 0, 2])
        XCTAssertEqual(picked.inputs, [20, 21, 0, 1, 20, 21])
        XCTAssertEqual(picked.labels, [7, 5, 7])
        XCTAssertEqual(picked.count, 3)
        XCTAssertEqual(picked.sampleShape, [2])
        XCTAssertEqual(dataset.subset([]).count, 0)
    }

    /// Entries in either order, stored (read in place from the file) or deflated, give the same
    /// arrays; the stored payload is large enough to be read without a copy.
    func testNpzEntriesInAnyOrderAndMethodReadTheSame() throws {
        let samples = 40, features = 3
        let values = (0..<(samples * features)).map { Float($0) * 0.25 - 7 }
        let payload = values.withUnsafeBytes { Array($0) }
        let x = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (\(samples), \(features)), }", payload: payload)
        let y = npy("{'descr': '|u1', 'fortran_order': False, 'shape': (\(samples),), }", payload: (0..<samples).map { UInt8($0 % 10) })
        for method in [CompressionMethod.none, .deflate] {
            for (order, entries) in [("xy", [("x.npy", x), ("y.npy", y)]), ("yx", [("y.npy", y), ("x.npy", x)])] {
                let url = try npz("\(order)-\(method.rawValue).npz", entries, method: method)
                let data = try Dataset.loadNPZ(url)
                XCTAssertEqual(data.inputs, values, "\(order), method \(method.rawValue)")
                XCTAssertEqual(data.labels, (0..<samples).map { Int32($0 % 10) }, "\(order), method \(method.rawValue)")
                XCTAssertEqual(data.sampleShape, [features])
            }
        }
    }

    /// The validation split is the sorted first ⌊fraction·N⌋ indices of the stream's permutation;
    /// the training split keeps the rest, in order, with their labels.
    func testHoldOutValidationSplitsByThePermutation() throws {
        let count = 50, features = 4
        let inputs = (0..<(count * features)).map { Float($0) }
        var data = Dataset(inputs: inputs, labels: (0..<count).map { Int32($0) }, sampleShape: [features])
        let random = RandomStream(seed: 7, label: "validation-split/test")
        var stream = random
        let expected = stream.permutation(count)[0..<10].sorted()
        let validation = data.holdOutValidation(fraction: 0.2, maxValidation: 0, random: random)
        XCTAssertEqual(validation.labels, expected.map { Int32($0) })
        XCTAssertEqual(validation.inputs, expected.flatMap { i in (0..<features).map { Float(i * features + $0) } })
        let kept = (0..<count).filter { !expected.contains($0) }
        XCTAssertEqual(data.count, count - 10)
        XCTAssertEqual(data.labels, kept.map { Int32($0) })
        XCTAssertEqual(data.inputs, kept.flatMap { i in (0..<features).map { Float(i * features + $0) } })

        var capped = Dataset(inputs: inputs, labels: (0..<count).map { Int32($0) }, sampleShape: [features])
        XCTAssertEqual(capped.holdOutValidation(fraction: 0.5, maxValidation: 3, random: random).count, 3)
        XCTAssertEqual(capped.count, count - 3)
        var none = Dataset(inputs: inputs, labels: (0..<count).map { Int32($0) }, sampleShape: [features])
        XCTAssertEqual(none.holdOutValidation(fraction: 0, maxValidation: 0, random: random).count, 0)
        XCTAssertEqual(none.inputs, inputs)
    }

    func testErrorsUseThePathAsWritten() throws {
        let relative = URL(fileURLWithPath: "no-such-directory/mnist/train.npz")
        assertFails("no-such-directory/mnist/train.npz", ["no such file"]) { try Dataset.loadNPZ(relative) }
    }
}
