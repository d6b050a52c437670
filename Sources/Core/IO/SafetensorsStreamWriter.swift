// SafetensorsStreamWriter: a safetensors file written tensor by tensor — the header first (every
// size is known from the shapes and dtypes), then each tensor's data at its place, in any order and
// from any thread — so a merge never holds the whole output. Atomic: a temporary file of the
// final size, renamed into place by finish().
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public final class SafetensorsStreamWriter: @unchecked Sendable {
    // Sendable: `write` is pwrite(2) at disjoint offsets plus a locked byte count.
    public struct Entry: Sendable {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public init(name: String, dtype: String, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }
    }

    private let url: URL
    private let temporary: URL
    private let descriptor: Int32
    /// Where each entry's data starts in the file, and how many bytes it takes.
    private let dataStarts: [Int]
    public let byteCounts: [Int]
    private let lock = NSLock()
    private var bytesWritten = 0
    private var finished = false

    /// Creates the temporary file beside `url` with the header of `entries` (in this order) and
    /// room for their data.
    public init(url: URL, entries: [Entry], metadata: [String: String]) throws {
        let path = FileBytes.displayPath(url)
        var headerEntries: [Safetensors.HeaderEntry] = []
        for entry in entries {
            guard let dtype = SafetensorsDType(rawValue: entry.dtype), let count = Safetensors.elementCount(of: entry.shape) else {
                throw OrthofuseError("\(path): cannot write tensor \(MessageText.quoted(entry.name)) (dtype \(entry.dtype), shape \(Safetensors.describe(entry.shape)))")
            }
            headerEntries.append(.init(name: entry.name, dtype: entry.dtype, shape: entry.shape, byteCount: count * dtype.byteWidth))
        }
        let prefix: [UInt8]
        do {
            prefix = try Safetensors.filePrefix(headerEntries, metadata: metadata)
        } catch let problem as Safetensors.EncodingProblem {
            throw OrthofuseError("\(path): cannot write safetensors: \(problem.message)")
        }
        var status = stat()
        if stat(url.path, &status) == 0, (status.st_mode & S_IFMT) != S_IFREG {
            throw OrthofuseError("\(path): exists and is not a regular file; not replaced")
        }
        let directory = url.deletingLastPathComponent()
        try FileSystemMessage.createDirectory(directory)
        self.url = url
        byteCounts = headerEntries.map(\.byteCount)
        var starts: [Int] = []
        var offset = prefix.count
        for count in byteCounts {
            starts.append(offset)
            offset += count
        }
        dataStarts = starts
        temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        descriptor = open(temporary.path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw OrthofuseError("\(path): cannot create a temporary file beside it (\(String(cString: strerror(errno))))")
        }
        do {
            try prefix.withUnsafeBytes { try writeAll($0, at: 0) }
            // The final size up front: data written at its offsets, in any order, fills a file
            // that is already as long as it will be (sparse until then).
            guard ftruncate(descriptor, off_t(offset)) == 0 else { throw failure() }
        } catch {
            close(descriptor)
            unlink(temporary.path)
            throw error
        }
    }

    deinit {
        if !finished {
            close(descriptor)
            unlink(temporary.path)
        }
    }

    /// Bytes [byteOffset, byteOffset + bytes.count) of entry `index`'s data, already in its dtype
    /// (little-endian). Safe from several threads at once for disjoint ranges.
    public func write(entry index: Int, at byteOffset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        precondition(byteOffset >= 0 && byteOffset + bytes.count <= byteCounts[index], "write outside the tensor's data")
        try writeAll(bytes, at: dataStarts[index] + byteOffset)
        lock.lock()
        bytesWritten += bytes.count
        lock.unlock()
    }

    /// After every entry's data: flushes to disk and renames over `url`.
    public func finish() throws {
        let expected = byteCounts.reduce(0, +)
        guard bytesWritten == expected else {
            throw OrthofuseError("\(FileBytes.displayPath(url)): \(bytesWritten) of \(expected) bytes of tensor data written")
        }
        guard fsync(descriptor) == 0 else { throw failure() }
        guard close(descriptor) == 0 else {
            finished = true  // closed: deinit must not close it again
            unlink(temporary.path)
            throw failure()
        }
        finished = true
        guard rename(temporary.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary.path)
            throw OrthofuseError("\(FileBytes.displayPath(url)): cannot rename the finished file into place (\(reason))")
        }
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer, at fileOffset: Int) throws {
        var done = 0
        while done < bytes.count {
            let written = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(fileOffset + done))
            if written < 0 {
                if errno == EINTR { continue }
                throw failure()
            }
            done += written
        }
    }

    private func failure() -> OrthofuseError {
        OrthofuseError("\(FileBytes.displayPath(url)): write failed (\(String(cString: strerror(errno))))")
    }
}
