// FileBytes: opening input files for the IO readers, with one clear error for missing or unreadable paths.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public enum FileBytes {
    /// The path as the user wrote it (a relative path stays relative), for error messages.
    static func displayPath(_ url: URL) -> String {
        url.isFileURL ? url.relativePath : url.absoluteString
    }

    /// Why `path` cannot be opened as an input, or nil when it is a readable regular file. Only
    /// regular files are opened: a FIFO would block open() forever, a device reads without end.
    public static func problemOpeningInput(_ path: String) -> String? {
        var status = stat()
        guard stat(path, &status) == 0 else {
            return errno == ENOENT ? "no such file" : String(cString: strerror(errno))
        }
        switch status.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: return "is a directory, expected a file"
        default: return "not a regular file"
        }
        return access(path, R_OK) == 0 ? nil : "permission denied"
    }

    /// Fails unless `url` names an existing, readable regular file.
    static func checkReadableFile(_ url: URL) throws {
        if let problem = problemOpeningInput(url.path) {
            throw OrthofuseError("\(displayPath(url)): \(problem)")
        }
    }

    /// A small text file (a job or merge file): a regular file of at most `limit` bytes, UTF-8.
    /// `origin` names it in messages; `kind` says what it should have been ("job file").
    public static func readText(_ url: URL, origin: String, limit: Int, kind: String) throws -> String {
        if let problem = problemOpeningInput(url.path) {
            throw OrthofuseError("\(origin): \(problem)")
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.intValue ?? 0
        guard size <= limit else {
            throw OrthofuseError("\(origin): larger than \(limit) bytes; not a \(kind)")
        }
        guard let data = try? Data(contentsOf: url) else {
            throw OrthofuseError("\(origin): cannot read")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw OrthofuseError("\(origin): not UTF-8 text")
        }
        return text
    }

    /// The whole file, memory-mapped so that large inputs are not copied before parsing.
    static func load(_ url: URL) throws -> Data {
        try checkReadableFile(url)
        do {
            return try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw OrthofuseError("\(displayPath(url)): cannot read (\(FileSystemMessage.reason(error)))")
        }
    }

    /// The size of the file in bytes, without reading it.
    static func size(_ url: URL) throws -> Int {
        try checkReadableFile(url)
        let attributes = try? FileManager.default.attributesOfItem(atPath: url.path)
        guard let size = (attributes?[.size] as? NSNumber)?.intValue else {
            throw OrthofuseError("\(displayPath(url)): cannot determine the file size")
        }
        return size
    }
}

/// Little- and big-endian integer loads at any alignment; callers check the bounds first.
extension UnsafeRawBufferPointer {
    func littleEndianInteger<T: FixedWidthInteger>(at offset: Int, as type: T.Type) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    func bigEndianInteger<T: FixedWidthInteger>(at offset: Int, as type: T.Type) -> T {
        T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
