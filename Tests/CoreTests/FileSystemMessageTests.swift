// FileSystemMessageTests: Foundation's file errors become the short reason a user reads.
import Foundation
import XCTest
@testable import Core
import TestSupport

final class FileSystemMessageTests: XCTestCase {
    func testCocoaAndPOSIXErrorsReadAsReasons() {
        XCTAssertEqual(FileSystemMessage.reason(NSError(domain: NSCocoaErrorDomain, code: NSFileWriteVolumeReadOnlyError)),
                       "read-only file system")
        XCTAssertEqual(FileSystemMessage.reason(NSError(domain: NSPOSIXErrorDomain, code: Int(ENOSPC))),
                       String(cString: strerror(ENOSPC)))
        let wrapped = NSError(domain: NSCocoaErrorDomain, code: 512,
                              userInfo: [NSUnderlyingErrorKey: NSError(domain: NSPOSIXErrorDomain, code: Int(EACCES))])
        XCTAssertEqual(FileSystemMessage.reason(wrapped), String(cString: strerror(EACCES)))
    }

    func testAFolderThatCannotBeMadeIsOneLine() throws {
        // A path under a regular file cannot become a folder.
        let file = try temporaryFolder("fsm").appendingPathComponent("file")
        try Data([1]).write(to: file)
        XCTAssertThrowsError(try FileSystemMessage.createDirectory(file.appendingPathComponent("sub"))) { error in
            XCTAssertTrue("\(error)".contains("cannot create the folder"), "\(error)")
            XCTAssertFalse("\(error)".contains("NSCocoaErrorDomain"), "\(error)")
            XCTAssertFalse("\(error)".contains("\n"), "\(error)")
        }
    }
}
