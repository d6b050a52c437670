// SafetensorsStreamWriter: a safetensors file written tensor by tensor — the header first (every
// size is known from the shapes and dtypes), then each tensor's data as it is computed — so a
// merge never holds the whole output. Atomic: a temporary file renamed into place by finish().
import Foundation

public final class SafetensorsStreamWriter {
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
    private let handle: FileHandle
    private let entries: [Entry]
    private var next = 0
    private var finished = false

    /// Creates the temporary file beside `url` and writes the header of `entries` (in this order).
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
        self.entries = entries
        temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        guard FileManager.default.createFile(atPath: temporary.path, contents: Data(prefix)),
              let handle = FileHandle(forWritingAtPath: temporary.path) else {
            throw OrthofuseError("\(path): cannot create a temporary file beside it")
        }
        self.handle = handle
        handle.seekToEndOfFile()
    }

    deinit {
        if !finished {
            try? handle.close()
            try? FileManager.default.removeItem(at: temporary)
        }
    }

    /// The next entry's data: `values` stored in its dtype (F16/BF16 rounded to nearest even), or
    /// its raw little-endian bytes.
    public func append(_ values: [Float] = [], rawBytes: [UInt8]? = nil) throws {
        guard next < entries.count else { throw OrthofuseError("\(FileBytes.displayPath(url)): more tensors than the header lists") }
        let entry = entries[next]
        let record = TensorRecord(name: entry.name, shape: entry.shape, values: values, outputDType: entry.dtype, rawBytes: rawBytes)
        do {
            _ = try Safetensors.storedByteCount(record, elements: Safetensors.elementCount(of: entry.shape)!)
        } catch let problem as Safetensors.EncodingProblem {
            throw OrthofuseError("\(FileBytes.displayPath(url)): cannot write safetensors: \(problem.message)")
        }
        var data = Data()
        Safetensors.appendStored(record, to: &data)
        do {
            try handle.write(contentsOf: data)
        } catch {
            throw OrthofuseError("\(FileBytes.displayPath(url)): write failed (\(FileSystemMessage.reason(error)))")
        }
        next += 1
    }

    /// After the last tensor: flushes to disk and renames over `url`.
    public func finish() throws {
        guard next == entries.count else {
            throw OrthofuseError("\(FileBytes.displayPath(url)): \(next) of \(entries.count) tensors written")
        }
        do {
            try handle.synchronize()
            try handle.close()
        } catch {
            throw OrthofuseError("\(FileBytes.displayPath(url)): write failed (\(FileSystemMessage.reason(error)))")
        }
        guard rename(temporary.path, url.path) == 0 else {
            throw OrthofuseError("\(FileBytes.displayPath(url)): cannot rename the finished file into place (\(String(cString: strerror(errno))))")
        }
        finished = true
    }
}
