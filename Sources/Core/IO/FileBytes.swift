// FileBytes: opening input files for the IO readers, with one clear error for missing or unreadable paths.
import Foundation

enum FileBytes {
    /// The path as the user wrote it (a relative path stays relative), for error messages.
    static func displayPath(_ url: URL) -> String {
        url.isFileURL ? url.relativePath : url.absoluteString
    }

    /// Fails unless `url` names an existing, readable regular file.
    static func checkReadableFile(_ url: URL) throws {
        let path = url.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw OrthofuseError("\(displayPath(url)): no such file")
        }
        if isDirectory.boolValue {
            throw OrthofuseError("\(displayPath(url)): is a directory, expected a file")
        }
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw OrthofuseError("\(displayPath(url)): permission denied")
        }
    }

    /// The whole file, memory-mapped so that large inputs are not copied before parsing.
    static func load(_ url: URL) throws -> Data {
        try checkReadableFile(url)
        do {
            return try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw OrthofuseError("\(displayPath(url)): cannot read (\(error.localizedDescription))")
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
