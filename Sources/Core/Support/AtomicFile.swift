// AtomicFile: write a file so that readers see either the old content or the whole new one.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public enum AtomicFile {
    /// Writes `data` to `url` through a temporary file in the same directory: write, fsync,
    /// rename, fsync of the directory. On any failure the temporary is removed and the
    /// destination is untouched. Missing parent directories are created.
    /// A destination that exists must be a regular file: renaming over a device node (as root,
    /// `--output /dev/null`), a FIFO or a folder would replace something that is not ours.
    public static func write(_ data: Data, to url: URL) throws {
        var status = stat()
        if stat(url.path, &status) == 0, (status.st_mode & S_IFMT) != S_IFREG {
            let what = (status.st_mode & S_IFMT) == S_IFDIR ? "a directory" : "not a regular file"
            throw OrthofuseError("\(url.path): exists and is \(what); not replaced")
        }
        let directory = url.deletingLastPathComponent()
        try FileSystemMessage.createDirectory(directory)
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        let fd = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw OrthofuseError("\(url.path): cannot create temporary file (\(String(cString: strerror(errno))))")
        }
        var failure: String?
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    failure = String(cString: strerror(errno))
                    return
                }
                offset += written
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        close(fd)
        if failure == nil, rename(temporary.path, url.path) != 0 { failure = String(cString: strerror(errno)) }
        if let failure {
            unlink(temporary.path)
            throw OrthofuseError("\(url.path): write failed (\(failure))")
        }
        let directoryFD = open(directory.path, O_RDONLY)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
    }
}
