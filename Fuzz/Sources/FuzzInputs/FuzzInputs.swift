// FuzzInputs: what every fuzz target shares: one parser call per input, errors expected, anything
// else (a trap, a hang, an over-read under AddressSanitizer) is the finding.
import Core
import Foundation

/// libFuzzer's driver (LLVM ≥ 11), called from each target's entry point.
@_silgen_name("LLVMFuzzerRunDriver")
func runLibFuzzer(
    _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafeRawPointer, Int) -> Int32) -> Int32

public enum FuzzInputs {
    /// SwiftPM links an executable's entry as `<module>_main`; each target defines that symbol
    /// and hands its arguments to libFuzzer's driver here.
    public static func drive(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                             _ callback: @convention(c) (UnsafeRawPointer, Int) -> Int32) -> Int32 {
        var count = argc
        var arguments = argv
        return runLibFuzzer(&count, &arguments, callback)
    }

    /// Runs `parse` on the input; an OrthofuseError (or any thrown error) is a correct answer.
    public static func run(_ start: UnsafeRawPointer, _ count: Int, _ parse: (Data) throws -> Void) -> Int32 {
        let data = Data(bytes: start, count: count)
        _ = try? parse(data)
        return 0
    }

    /// Parsers that read files: the input written to this process's own scratch file first.
    public static func throughFile(_ data: Data, suffix: String, _ parse: (URL) throws -> Void) throws {
        let url = scratch.appendingPathExtension(suffix)
        try data.write(to: url)
        try parse(url)
    }

    private static let scratch: URL = {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("orthofuse-fuzz")
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory.appendingPathComponent("input-\(getpid())")
    }()

    /// The input as text (the YAML parsers' input), invalid UTF-8 repaired as a reader would.
    public static func text(_ data: Data) -> String { String(decoding: data, as: UTF8.self) }

    public static let directory = URL(fileURLWithPath: "/tmp/orthofuse-fuzz", isDirectory: true)
}
