// TemporaryFolder: a fresh folder for one test under the system's temporary directory, removed when
// the test ends, passed or failed.
import Foundation
import XCTest

extension XCTestCase {
    /// A new empty folder whose name starts with `orthofuse-<label>-`; removed after the test.
    public func temporaryFolder(_ label: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("orthofuse-\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }
}
