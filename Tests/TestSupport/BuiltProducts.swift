// BuiltProducts: where the package root and the built `orthofuse` executable are, for tests that run it.
import Foundation

public enum BuiltProducts {
    /// The package root, from this file's location (Tests/TestSupport/…).
    public static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The orthofuse executable built next to the test bundle (`swift test` builds both).
    public static var orthofuse: URL {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
            Bundle.main.bundleURL.deletingLastPathComponent(),
            Bundle.main.bundleURL,
        ].map { $0.appendingPathComponent("orthofuse") }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]
    }
}
