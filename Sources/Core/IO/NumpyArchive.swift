// NumpyArchive: reading named arrays from .npz files (zip archives of .npy arrays, stored or deflated).
import Foundation
import ZIPFoundation
#if canImport(Glibc)
import Glibc
#endif

public enum NumpyArchive {
    /// Reads the arrays `names` (keys as given to np.savez, without ".npy") from the .npz file at `url`.
    /// Missing arrays are reported together with the names the archive does hold. Every header is
    /// read first (inflating only its start) and checked against its zip entry's size, then passed
    /// to `check`, so that sizes which disagree fail before any array is inflated.
    public static func readArrays(_ url: URL, names: [String],
                                  check: ([String: NumpyArray.Declared]) throws -> Void = { _ in }) throws -> [String: NumpyArray] {
        let path = FileBytes.displayPath(url)
        let fileData = try FileBytes.load(url)
        guard !fileData.isEmpty else { throw OrthofuseError("\(path): file is empty, not an .npz archive") }
        let archive: Archive
        do {
            archive = try Archive(url: url, accessMode: .read)
        } catch {
            throw OrthofuseError("\(path): not a zip archive (an .npz file is a zip archive of .npy arrays)")
        }
        let entries = archive.filter { $0.type == .file }
        var located: [(name: String, entry: Entry)] = []
        for name in names {
            guard let entry = entries.first(where: { $0.path == name + ".npy" }) ?? entries.first(where: { $0.path == name }) else {
                let present = entries.map { $0.path.hasSuffix(".npy") ? String($0.path.dropLast(4)) : $0.path }
                let listed = present.prefix(10).map { MessageText.quoted($0) }.joined(separator: ", ")
                let more = present.count > 10 ? " and \(present.count - 10) more" : ""
                let holds = present.isEmpty ? "the archive is empty" : "the archive holds: \(listed)\(more)"
                throw OrthofuseError("\(path): array '\(name)' missing (\(holds))")
            }
            located.append((name, entry))
        }
        // Each entry's local header, found once: each is searched for from where the previous one's
        // data ended (then from the start), so that, in file order, no array's data is scanned
        // for another's header.
        var placed: [(name: String, entry: Entry, header: LocalHeader)] = []
        try fileData.withUnsafeBytes { raw in
            var searchFrom = 0
            for (name, entry) in located {
                guard let header = localHeader(of: entry, in: raw, from: searchFrom) ?? localHeader(of: entry, in: raw, from: 0) else {
                    throw OrthofuseError("\(path): array '\(name)': zip local header for \(MessageText.quoted(entry.path)) not found (archive corrupt)")
                }
                placed.append((name, entry, header))
                searchFrom = header.dataStart + Int(clamping: entry.compressedSize)
            }
        }
        var declared: [String: NumpyArray.Declared] = [:]
        for (name, entry, local) in placed {
            let source = "\(path): array '\(name)'"
            let header = try declaredHeader(entry, local, in: fileData, source: source)
            guard UInt64(header.fileSize) == entry.uncompressedSize else {
                throw OrthofuseError("\(source): its header declares shape \(NumpyArray.describeShape(header.shape)) of \(header.descr) (\(header.fileSize) bytes with the header) but the zip entry holds \(entry.uncompressedSize) bytes (archive corrupt)")
            }
            declared[name] = header
        }
        try check(declared)
        let total = located.reduce(0) { $0 + Int($1.entry.uncompressedSize) }
        try MemoryBudget.check(total, for: "\(path): inflating \(names.joined(separator: " and "))")
        var arrays: [String: NumpyArray] = [:]
        for (name, entry, local) in placed {
            let source = "\(path): array '\(name)'"
            arrays[name] = try NumpyArray.parse(entryContents(entry, local, in: fileData, source: source), source: source)
        }
        return arrays
    }

    /// The .npy header of `entry`, from the first bytes of its data only.
    private static func declaredHeader(_ entry: Entry, _ local: LocalHeader, in file: Data, source: String) throws -> NumpyArray.Declared {
        // The preamble says how long the header is; 64 KiB covers every header NumPy writes by default.
        var prefix = try entryContents(entry, local, in: file, source: source, prefix: 1 << 16)
        if prefix.count >= 12, prefix.count == 1 << 16 {
            let declaredLength = Int(prefix[8]) | Int(prefix[9]) << 8 | (prefix[6] == 1 ? 0 : Int(prefix[10]) << 16 | Int(prefix[11]) << 24)
            if declaredLength + 12 > prefix.count, declaredLength <= NumpyArray.maximumHeaderLength {
                prefix = try entryContents(entry, local, in: file, source: source, prefix: declaredLength + 12)
            }
        }
        return try NumpyArray.parseHeader(prefix, source: source)
    }

    /// The uncompressed bytes of `entry` (whose local header is `local`), inflated and CRC-checked
    /// here with explicit bounds rather than through `Archive.extract`, whose Linux inflate loop
    /// never ends on a deflate stream that runs past the end of the file. A stored entry is not
    /// copied: the bytes returned are those of `file` (memory-mapped), kept alive with them.
    /// With `prefix`, only that many bytes from the start (neither CRC nor size is checked then).
    private static func entryContents(_ entry: Entry, _ local: LocalHeader, in file: Data, source: String,
                                      prefix: Int? = nil) throws -> Data {
        func fail(_ problem: String) -> OrthofuseError { OrthofuseError("\(source): \(problem)") }
        guard entry.compressedSize <= UInt64(file.count) else {
            throw fail("zip entry claims \(entry.compressedSize) compressed bytes, more than the whole file (archive corrupt)")
        }
        guard entry.uncompressedSize <= UInt64(Int.max) else { throw fail("zip entry size is out of range (archive corrupt)") }
        let compressedSize = Int(entry.compressedSize)
        let uncompressedSize = Int(entry.uncompressedSize)
        guard local.flags & 0x0001 == 0 else { throw fail("encrypted zip entries are not supported") }
        guard local.dataStart <= file.count, compressedSize <= file.count - local.dataStart else {
            throw fail("zip entry data is truncated (archive corrupt)")
        }
        // A prefix needs only about as many compressed bytes (deflate's stored blocks add 5 per 64 KiB).
        let taken = prefix.map { min(compressedSize, $0 + $0 / 16 + 4096) } ?? compressedSize
        let span = file.startIndex + local.dataStart ..< file.startIndex + local.dataStart + taken
        switch local.method {
        case CompressionMethod.none.rawValue:
            if let prefix { return Data(file[span].prefix(prefix)) }
            guard compressedSize == uncompressedSize else {
                throw fail("stored zip entry has compressed size \(compressedSize) but size \(uncompressedSize) (archive corrupt)")
            }
            let contents = sharedBytes(of: file, in: span)
            guard Checksum.crc32(contents) == entry.checksum else { throw fail("zip entry CRC32 mismatch (archive corrupt)") }
            return contents
        case CompressionMethod.deflate.rawValue:
            let compressed = Data(file[span])
            do {
                if let prefix { return try RawDeflate.inflatePrefix(compressed, count: prefix) }
                let (contents, checksum) = try RawDeflate.inflate(compressed, expectedCount: uncompressedSize)
                guard checksum == entry.checksum else { throw fail("zip entry CRC32 mismatch (archive corrupt)") }
                return contents
            } catch let failure as RawDeflate.Failure {
                throw fail("zip entry is damaged: \(failure.message) (archive corrupt)")
            }
        default:
            throw fail("unsupported zip compression method \(local.method) (only stored and deflate)")
        }
    }

    /// The bytes of `file` in `span` as a Data of their own (indices from 0) without a copy: it
    /// points into `file`'s storage and holds `file` until it is released.
    private static func sharedBytes(of file: Data, in span: Range<Int>) -> Data {
        // Tiny buffers may be held inline, where a pointer does not outlive the access.
        guard span.count > 64 else { return Data(file[span]) }
        let start = file.withUnsafeBytes { UnsafeMutableRawPointer(mutating: $0.baseAddress! + (span.lowerBound - file.startIndex)) }
        return Data(bytesNoCopy: start, count: span.count, deallocator: .custom { _, _ in withExtendedLifetime(file) {} })
    }

    private struct LocalHeader {
        let flags: UInt16
        let method: UInt16
        let dataStart: Int
    }

    /// Finds the local file header of `entry` by its signature and name, at `start` or after.
    /// ZIPFoundation does not publish the header offset, and the name, CRC and bounds checks make
    /// a false match harmless.
    private static func localHeader(of entry: Entry, in raw: UnsafeRawBufferPointer, from start: Int) -> LocalHeader? {
        let name = Array(entry.path.utf8)
        let fixedSize = 30
        guard raw.count >= fixedSize + name.count else { return nil }
        let lastStart = raw.count - fixedSize - name.count
        var searchStart = start
        // memchr finds candidate 'P' bytes quickly, which matters for large archives in debug builds.
        while searchStart <= lastStart, let found = memchr(raw.baseAddress! + searchStart, 0x50, lastStart + 1 - searchStart) {
            let offset = raw.baseAddress!.distance(to: UnsafeRawPointer(found))
            searchStart = offset + 1
            guard raw[offset + 1] == 0x4B, raw[offset + 2] == 0x03, raw[offset + 3] == 0x04 else { continue }
            let nameLength = Int(raw.littleEndianInteger(at: offset + 26, as: UInt16.self))
            guard nameLength == name.count,
                  raw[(offset + fixedSize)..<(offset + fixedSize + nameLength)].elementsEqual(name) else { continue }
            let flags = raw.littleEndianInteger(at: offset + 6, as: UInt16.self)
            let localCRC = raw.littleEndianInteger(at: offset + 14, as: UInt32.self)
            // With a data descriptor (flag bit 3) the local CRC is zero; otherwise it must agree.
            if flags & 0x0008 == 0 && localCRC != entry.checksum { continue }
            let extraLength = Int(raw.littleEndianInteger(at: offset + 28, as: UInt16.self))
            return LocalHeader(flags: flags, method: raw.littleEndianInteger(at: offset + 8, as: UInt16.self),
                               dataStart: offset + fixedSize + nameLength + extraLength)
        }
        return nil
    }
}
