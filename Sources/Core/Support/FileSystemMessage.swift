// FileSystemMessage: a Foundation file error as the short reason a user reads ("read-only file
// system"), not as NSCocoaErrorDomain Code=642 with its user-info dictionary.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public enum FileSystemMessage {
    /// Creates `url` and its parents; a failure is one line naming the folder and the reason.
    public static func createDirectory(_ url: URL) throws {
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            throw OrthofuseError("\(url.path): cannot create the folder (\(whyNotCreatable(url) ?? reason(error)))")
        }
    }

    /// Foundation on Linux often reports only "error 512": ask the nearest existing ancestor.
    private static func whyNotCreatable(_ url: URL) -> String? {
        var ancestor = url.deletingLastPathComponent()
        while ancestor.path != "/", !FileManager.default.fileExists(atPath: ancestor.path) {
            ancestor = ancestor.deletingLastPathComponent()
        }
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: ancestor.path, isDirectory: &isDirectory)
        if !isDirectory.boolValue { return "\(ancestor.path) is a file, not a folder" }
        if access(ancestor.path, W_OK) != 0 { return "\(ancestor.path): \(String(cString: strerror(errno)))" }
        return nil
    }

    public static func reason(_ error: any Error) -> String {
        let error = error as NSError
        if error.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(error.code))) }
        if let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        guard error.domain == NSCocoaErrorDomain else { return error.localizedDescription }
        switch error.code {
        case NSFileWriteVolumeReadOnlyError: return "read-only file system"
        case NSFileWriteNoPermissionError, NSFileReadNoPermissionError: return "permission denied"
        case NSFileWriteOutOfSpaceError: return "no space left on device"
        case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return "no such file or directory"
        case NSFileWriteFileExistsError: return "a file of that name exists"
        case NSFileWriteUnknownError, NSFileReadUnknownError: return "the file system refused the operation"
        default: return error.localizedDescription
        }
    }
}
