// ErrorAssertions: the contract for bad input, asserted — one OrthofuseError, on one line, that
// starts with the source it blames and says what is wrong.
import Core
import Foundation
import XCTest

/// Asserts that `body` throws one single-line OrthofuseError starting with "`source`: " and
/// containing every one of `fragments`.
public func assertFails<T>(_ source: String, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                           _ body: () throws -> T) {
    do {
        _ = try body()
        XCTFail("expected an error mentioning \(fragments)", file: file, line: line)
    } catch let error as OrthofuseError {
        XCTAssertTrue(error.message.hasPrefix(source + ": "), "message does not start with '\(source)': \(error.message)", file: file, line: line)
        XCTAssertFalse(error.message.contains("\n"), "message spans lines: \(error.message)", file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(error.message.contains(fragment), "'\(error.message)' lacks '\(fragment)'", file: file, line: line)
        }
    } catch {
        XCTFail("unexpected error type \(type(of: error)): \(error)", file: file, line: line)
    }
}

/// The same for an error that must name the file at `url` first.
public func assertFails<T>(_ url: URL, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                           _ body: () throws -> T) {
    assertFails(url.path, fragments, file: file, line: line, body)
}
