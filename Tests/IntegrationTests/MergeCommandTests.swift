// MergeCommandTests: the built `orthofuse merge` on small checkpoints written here: the formula, the
// metadata, other dtypes, the config file, and one error line (and no output) for each bad input.
import Foundation
import TestSupport
import XCTest
import Core

final class MergeCommandTests: XCTestCase {
    private var directory: URL!

    /// The orthofuse executable built next to the test bundle (`swift test` builds both).
    private static var binary: URL { BuiltProducts.orthofuse }

    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary.path) else {
            throw OrthofuseError("orthofuse binary not built at \(Self.binary.path) (run `swift build --build-tests`)")
        }
        directory = try temporaryFolder("merge")
        try writeCheckpoints()
    }

    // MARK: Checkpoints

    /// base.safetensors and a/b/c.safetensors: a [3, 4] weight, a [4] bias and a [2, 3, 2] tensor,
    /// each model a seeded perturbation of the base.
    private let shapes: [(String, [Int])] = [("layer.weight", [3, 4]), ("layer.bias", [4]), ("block.scale", [2, 3, 2])]

    private func checkpoint(seed: UInt64, label: String, scale: Double) -> [TensorRecord] {
        var random = RandomStream(seed: seed, label: label)
        return shapes.map { name, shape in
            TensorRecord(name: name, shape: shape,
                         values: (0..<shape.reduce(1, *)).map { _ in Float(scale * random.nextGaussian()) })
        }
    }

    private func writeCheckpoints() throws {
        let base = checkpoint(seed: 1, label: "base", scale: 1)
        try Safetensors.write(base, to: url("base.safetensors"))
        for (index, name) in ["a", "b", "c"].enumerated() {
            let delta = checkpoint(seed: UInt64(10 + index), label: name, scale: 0.1)
            let model = zip(base, delta).map { TensorRecord(name: $0.name, shape: $0.shape, values: zip($0.values, $1.values).map(+)) }
            try Safetensors.write(model, to: url("\(name).safetensors"))
        }
    }

    private func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    private func values(_ name: String) throws -> [String: [Float]] {
        try tensorValues(at: url(name))
    }

    /// A safetensors file with any dtype, written byte by byte (Core writes F32 only).
    private func writeRaw(_ name: String, _ tensors: [(name: String, dtype: String, shape: [Int], bytes: [UInt8])]) throws {
        var entries: [String] = []
        var data: [UInt8] = []
        for tensor in tensors {
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            entries.append("\"\(tensor.name)\":{\"dtype\":\"\(tensor.dtype)\",\"shape\":[\(shape)],\"data_offsets\":[\(data.count),\(data.count + tensor.bytes.count)]}")
            data += tensor.bytes
        }
        var header = Array("{\(entries.joined(separator: ","))}".utf8)
        header += [UInt8](repeating: UInt8(ascii: " "), count: (8 - header.count % 8) % 8)
        var file = withUnsafeBytes(of: UInt64(header.count).littleEndian, Array.init)
        file += header + data
        try Data(file).write(to: url(name))
    }

    private func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
        values.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }
    }

    // MARK: Running

    private func merge(_ arguments: [String]) throws -> ProcessOutcome {
        try Subprocess.run(Self.binary, ["merge"] + arguments, in: directory)
    }

    /// Runs a command that must fail: non-zero exit, exactly one error line containing every one of
    /// `fragments`, nothing on stdout, and no output file.
    private func checkRefused(_ arguments: [String], _ fragments: [String], output: String = "out.safetensors",
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let outcome = try merge(arguments)
        XCTAssertNotEqual(outcome.status, 0, "accepted: \(arguments)", file: file, line: line)
        let lines = outcome.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "one error line:\n\(outcome.stderr)", file: file, line: line)
        XCTAssertTrue(lines.first?.hasPrefix("orthofuse: error: ") ?? false, outcome.stderr, file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(outcome.stderr.contains(fragment), "'\(fragment)' in: \(outcome.stderr)", file: file, line: line)
        }
        XCTAssertEqual(outcome.stdout, "", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: url(output).path), "no output written", file: file, line: line)
    }

    // MARK: Tests

    func testTaskArithmeticIsBasePlusAlphaTimesTheSumOfTaskVectors() throws {
        let outcome = try merge(["--method", "task_arithmetic", "--alpha", "0.4", "--base", "base.safetensors",
                                 "--model", "a.safetensors", "--model", "b.safetensors", "--model", "c.safetensors",
                                 "--output", "merged/out.safetensors"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertEqual(outcome.stderr, "")
        let summary = outcome.stdout.split(separator: "\n")
        XCTAssertEqual(summary.count, 1, outcome.stdout)
        for fragment in ["task_arithmetic", "3 model(s)", "3 tensors", "28 parameters", " s "] {
            XCTAssertTrue(outcome.stdout.contains(fragment), "'\(fragment)' in: \(outcome.stdout)")
        }

        let base = try values("base.safetensors")
        let models = try ["a", "b", "c"].map { try values("\($0).safetensors") }
        let merged = try Safetensors.read(url("merged/out.safetensors"))
        XCTAssertEqual(merged.names, shapes.map(\.0), "the base's tensors, in its order")
        XCTAssertEqual(merged.tensors.map(\.shape), shapes.map(\.1))
        for tensor in merged.tensors {
            let baseValues = base[tensor.name]!
            for i in baseValues.indices {
                let taskVectorSum = models.map { Double($0[tensor.name]![i]) - Double(baseValues[i]) }.reduce(0, +)
                let expected = Double(baseValues[i]) + 0.4 * taskVectorSum
                XCTAssertEqual(Double(tensor.values[i]), expected, accuracy: 1e-6, "\(tensor.name)[\(i)]")
            }
        }
        XCTAssertEqual(merged.metadata["orthofuse.kind"], "merged")
        XCTAssertEqual(merged.metadata["format"], "pt", "Hugging Face loaders need a format")
        XCTAssertEqual(merged.metadata["orthofuse.method"], "task_arithmetic")
        XCTAssertEqual(merged.metadata["orthofuse.alpha"], "0.4")
        XCTAssertEqual(merged.metadata["orthofuse.base"], "base.safetensors")
        XCTAssertEqual(merged.metadata["orthofuse.models"], "a.safetensors,b.safetensors,c.safetensors")
        XCTAssertNil(merged.metadata["orthofuse.density"], "task arithmetic has no density")
    }

    /// The config file gives the settings, the command line overrides some; the output equals
    /// Core's merge of the same task vectors, and every knob is in the metadata.
    func testConfigFileWithOverridesMatchesTheLibrary() throws {
        try FileManager.default.createDirectory(at: url("recipes"), withIntermediateDirectories: true)
        try """
            method: ties
            density: 0.3
            trim: global
            alpha: 1.5
            base: ../base.safetensors
            models: [../a.safetensors, ../b.safetensors]
            output: ../from-config.safetensors
            """.write(to: url("recipes/merge.yaml"), atomically: true, encoding: .utf8)
        let outcome = try merge(["--config", "recipes/merge.yaml", "--trim", "per-tensor", "--model", "a.safetensors",
                                 "--model", "b.safetensors", "--model", "c.safetensors"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)

        let file = try Safetensors.read(url("from-config.safetensors"))
        XCTAssertEqual(file.metadata["orthofuse.method"], "ties")
        XCTAssertEqual(file.metadata["orthofuse.density"], "0.3")
        XCTAssertEqual(file.metadata["orthofuse.trim"], "per-tensor", "the option overrides the file")
        XCTAssertEqual(file.metadata["orthofuse.alpha"], "1.5")
        XCTAssertEqual(file.metadata["orthofuse.models"], "a.safetensors,b.safetensors,c.safetensors", "--model replaces models:")

        let layout = ParameterLayout(shapes.map { ParameterSpec(name: $0.0, shape: $0.1) })
        func flat(_ name: String) throws -> FloatBuffer {
            let buffer = FloatBuffer(count: layout.totalCount)
            try layout.load(Safetensors.read(url(name)), into: buffer, origin: name)
            return buffer
        }
        let base = try flat("base.safetensors")
        let taskVectors = try ["a", "b", "c"].map { TaskVector.difference(finetuned: try flat("\($0).safetensors"), base: base) }
        let settings = MergeSettings(method: .ties, density: 0.3, trim: .perTensor)
        let delta = try TaskVectorMerger.mergedTaskVector(taskVectors, layout: layout, settings: settings)
        let merged = try flat("from-config.safetensors")
        for i in 0..<layout.totalCount {
            XCTAssertEqual(Double(merged[i]), Double(base[i]) + 1.5 * Double(delta[i]), accuracy: 1e-6, "entry \(i)")
        }
    }

    /// Every method merges tensor by tensor (inputs read one tensor at a time; TIES' sign election
    /// and global top-k answered in passes over the tensors) and gives bitwise the whole-vector
    /// merge of Core.
    func testTensorByTensorMergesEqualTheWholeVectorMerge() throws {
        let layout = ParameterLayout(shapes.map { ParameterSpec(name: $0.0, shape: $0.1) })
        func flat(_ name: String) throws -> FloatBuffer {
            let file = try values(name)
            return FloatBuffer(layout.specs.flatMap { file[$0.name]! })
        }
        let base = try flat("base.safetensors")
        let taskVectors = try ["a", "b", "c"].map { TaskVector.difference(finetuned: try flat("\($0).safetensors"), base: base) }
        var cases = [MergeMethodName.average, .taskArithmetic, .dare, .breadcrumbs, .tsv, .consensus, .isoC, .magmax, .dareTies]
            .map { (MergeSettings(method: $0), [String]()) }
        cases.append((MergeSettings(method: .ties, density: 0.3), ["--density", "0.3"]))
        cases.append((MergeSettings(method: .ties, density: 0.3, trim: .perTensor), ["--density", "0.3", "--trim", "per-tensor"]))
        cases.append((MergeSettings(method: .isoCTS), []))
        cases.append((MergeSettings(method: .isoCTS, commonFraction: 0.5), ["--common-fraction", "0.5"]))
        for (index, (settings, knobs)) in cases.enumerated() {
            let output = "merged-\(index).safetensors"
            let outcome = try merge(["--method", settings.method.rawValue, "--alpha", "0.7", "--base", "base.safetensors",
                                     "--model", "a.safetensors", "--model", "b.safetensors", "--model", "c.safetensors",
                                     "--output", output] + knobs)
            XCTAssertEqual(outcome.status, 0, outcome.stderr)
            // Whole matrices (SVDs) tensor by tensor; every other method streamed in chunks, in one
            // pass when it is entry-wise.
            let streamed = StreamedMerge.supports(settings.method)
            XCTAssertEqual(outcome.stdout.contains("tensor by tensor"), !streamed, outcome.stdout)
            XCTAssertEqual(outcome.stdout.contains("streamed in chunks"), streamed, outcome.stdout)
            XCTAssertEqual(outcome.stdout.contains(" in 1 pass(es)"), [.average, .taskArithmetic, .dare, .consensus, .magmax].contains(settings.method),
                           outcome.stdout)
            let delta = try TaskVectorMerger.mergedTaskVector(taskVectors, layout: layout, settings: settings)
            let expected = FloatBuffer(count: layout.totalCount)
            TaskArithmetic.merge(base: base, taskVectorSum: delta, alpha: 0.7, into: expected)
            XCTAssertEqual(try flat(output).array, expected.array, "\(settings.method.rawValue) \(knobs)")
        }
        // Tensors merged concurrently: the same file whatever the number of threads.
        for method in ["tsv", "ties"] {
            for threads in [1, 3] {
                let outcome = try merge(["--method", method, "--base", "base.safetensors", "--model", "a.safetensors",
                                         "--model", "b.safetensors", "--output", "\(method)-\(threads).safetensors", "--threads", "\(threads)"])
                XCTAssertEqual(outcome.status, 0, outcome.stderr)
            }
            XCTAssertEqual(try Data(contentsOf: url("\(method)-1.safetensors")), try Data(contentsOf: url("\(method)-3.safetensors")), method)
        }
        try checkRefused(["--method", "tsv", "--base", "base.safetensors", "--model", "a.safetensors", "--output", "out.safetensors",
                          "--threads", "0"], ["--threads", "1...1024"])
    }

    /// F16 and F64 tensors are merged in Float32 and kept in their dtype (--dtype auto, the
    /// default) or stored as F32 (--dtype float32); an I64 tensor is copied from the base byte for
    /// byte, even beyond 2^24.
    func testOtherDTypesAreKeptAndIntegersCopiedExactly() throws {
        func f16(_ values: [Float]) -> [UInt8] { littleEndianBytes(values.map { Float16($0).bitPattern }) }
        func f64(_ values: [Double]) -> [UInt8] { littleEndianBytes(values.map(\.bitPattern)) }
        let ids = littleEndianBytes([Int64(0), 1, 2, (1 << 40) + 1])
        try writeRaw("base16.safetensors", [("w", "F16", [2, 2], f16([1, 2, 3, 4])), ("position_ids", "I64", [4], ids),
                                            ("v", "F64", [3], f64([0.5, -1, 2]))])
        try writeRaw("m1.safetensors", [("w", "F16", [2, 2], f16([1.5, 2, 3, 3])), ("position_ids", "I64", [4], ids),
                                        ("v", "F64", [3], f64([0.25, -1, 2]))])
        try writeRaw("m2.safetensors", [("v", "F64", [3], f64([0.5, 0, 2])),
                                        ("position_ids", "I64", [4], littleEndianBytes([Int64(9), 9, 9, 9])),
                                        ("w", "F16", [2, 2], f16([1, 2.5, 3, 4]))])
        let common = ["--method", "task_arithmetic", "--alpha", "2", "--base", "base16.safetensors",
                      "--model", "m1.safetensors", "--model", "m2.safetensors"]
        let kept = try merge(common + ["--output", "kept.safetensors"])
        XCTAssertEqual(kept.status, 0, kept.stderr)
        XCTAssertTrue(kept.stdout.contains("1 non-float tensor(s) copied from the base"), kept.stdout)
        let keptHeader = try Safetensors.readHeader(url("kept.safetensors"))
        XCTAssertEqual(keptHeader.names, ["w", "position_ids", "v"], "the base's order")
        XCTAssertEqual(keptHeader.tensors.map(\.dtype), ["F16", "I64", "F64"])
        let kept16 = try Checkpoint.open(url("kept.safetensors"))
        XCTAssertEqual(try kept16.bytes(of: kept16.header.tensors[1]), ids)
        let merged = try values("kept.safetensors")
        XCTAssertEqual(merged["w"], [2, 3, 3, 2], "θ0 + 2·Στ over F16 values")
        XCTAssertEqual(merged["v"], [0, 1, 2])
        let metadata = try Safetensors.read(url("kept.safetensors")).metadata
        XCTAssertEqual(metadata["orthofuse.copied_from_base"], "position_ids (I64)")
        XCTAssertEqual(metadata["orthofuse.dtype"], "auto: F16, F64")

        let widened = try merge(common + ["--output", "f32.safetensors", "--dtype", "float32"])
        XCTAssertEqual(widened.status, 0, widened.stderr)
        XCTAssertEqual(try Safetensors.readHeader(url("f32.safetensors")).tensors.map(\.dtype), ["F32", "I64", "F32"])
        XCTAssertEqual(try values("f32.safetensors")["w"], [2, 3, 3, 2])
        try checkRefused(common + ["--output", "x.safetensors", "--dtype", "int8"], ["--dtype", "\"int8\""], output: "x.safetensors")
    }

    /// BF16 in, BF16 out: the Float32 result is rounded to nearest even, ties to the even
    /// mantissa (1 + 2⁻⁸ → 1, 1 + 3·2⁻⁸ → 1 + 2⁻⁶), not truncated; --dtype bfloat16 rounds an F32
    /// model the same way.
    func testBFloat16OutputRoundsToNearestEven() throws {
        func bf16(_ values: [Float]) -> [UInt8] { littleEndianBytes(values.map { UInt16($0.bitPattern >> 16) }) }
        let step: Float = 1.0 / 64  // 2⁻⁶, exact in bfloat16 around 1
        try writeRaw("base-bf16.safetensors", [("w", "BF16", [4], bf16([1, 1, 1, -2]))])
        try writeRaw("model-bf16.safetensors", [("w", "BF16", [4], bf16([1 + step, 1 + 3 * step, 1, -2 - 4 * step]))])
        let outcome = try merge(["--method", "task_arithmetic", "--alpha", "0.25", "--base", "base-bf16.safetensors",
                                 "--model", "model-bf16.safetensors", "--output", "merged-bf16.safetensors"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertEqual(try Safetensors.readHeader(url("merged-bf16.safetensors")).tensors.map(\.dtype), ["BF16"])
        // Float32: 1 + 2⁻⁸, 1 + 3·2⁻⁸, 1, −2 − 2⁻⁶ (exact in bfloat16: its step at 2 is 2⁻⁶).
        XCTAssertEqual(try values("merged-bf16.safetensors")["w"], [1, 1 + step, 1, -2 - step])

        let arguments = ["--method", "task_arithmetic", "--base", "base.safetensors", "--model", "a.safetensors"]
        XCTAssertEqual(try merge(arguments + ["--output", "a-f32.safetensors"]).status, 0)
        let float32 = try values("a-f32.safetensors")
        let toBF16 = try merge(arguments + ["--output", "a-bf16.safetensors", "--dtype", "bfloat16"])
        XCTAssertEqual(toBF16.status, 0, toBF16.stderr)
        for (name, original) in try values("a-bf16.safetensors") {
            XCTAssertEqual(original, float32[name]!.map { Float(bitPattern: UInt32(Safetensors.bfloat16Bits($0)) << 16) }, name)
        }
    }

    /// Writes the single-file checkpoint `name` as a Hugging Face folder: one shard per tensor
    /// (in `order`), the index, and a config.json.
    private func writeShardedCopy(of name: String, as folder: String, order: [String]) throws {
        let file = try Safetensors.read(url("\(name).safetensors"))
        let directory = url(folder)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var weightMap: [String: String] = [:]
        for (index, tensor) in order.enumerated() {
            let shard = "part-\(index).safetensors"
            try Safetensors.write([file[tensor]!], to: directory.appendingPathComponent(shard))
            weightMap[tensor] = shard
        }
        let index = try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 0], "weight_map": weightMap])
        try index.write(to: directory.appendingPathComponent("model.safetensors.index.json"))
        try Data("{\"model_type\": \"test\"}".utf8).write(to: directory.appendingPathComponent("config.json"))
    }

    /// Sharded folders in (each split its own way) and out (shards of a bounded size, the index,
    /// the base's config.json): the same merged values as the single files.
    /// Under mpirun the ranks share out the output's shards: 2 and 3 ranks write exactly the files
    /// of one process, for streamed methods with sums across ranks (global TIES' cuts and sign,
    /// DARE-TIES' sign), without (per-tensor TIES, task arithmetic), and tensor by tensor (TSV);
    /// a bad tensor on one rank's share is one error line and no output, nothing left behind.
    func testRanksWriteTheFilesOfOneProcess() throws {
        let launcher = BuiltProducts.packageRoot.appendingPathComponent("cluster/launch.sh")
        func launched(_ ranks: Int, _ arguments: [String]) throws -> ProcessOutcome {
            try Subprocess.run(URL(fileURLWithPath: "/usr/bin/env"),
                               [launcher.path, "-np", "\(ranks)", "--", Self.binary.path, "merge"] + arguments, in: directory)
        }
        func files(_ folder: String) throws -> [String: Data] {
            let names = try FileManager.default.contentsOfDirectory(atPath: url(folder).path)
            return try Dictionary(uniqueKeysWithValues: names.map { ($0, try Data(contentsOf: url(folder).appendingPathComponent($0))) })
        }
        let inputs = ["--base", "base.safetensors", "--model", "a.safetensors", "--model", "b.safetensors", "--model", "c.safetensors",
                      "--shard-size", "40B"]
        for (index, knobs) in [["--method", "ties"], ["--method", "ties", "--trim", "per-tensor"], ["--method", "dare_ties"],
                               ["--method", "task_arithmetic"], ["--method", "tsv"]].enumerated() {
            let one = try merge(knobs + inputs + ["--output", "one-\(index)"])
            XCTAssertEqual(one.status, 0, one.stderr)
            for ranks in [2, 3] {
                let many = try launched(ranks, knobs + inputs + ["--output", "ranks\(ranks)-\(index)"])
                XCTAssertEqual(many.status, 0, "\(knobs) on \(ranks) ranks:\n\(many.stdout)\n\(many.stderr)")
                XCTAssertTrue(many.stdout.contains("by \(ranks) ranks"), many.stdout)
                XCTAssertEqual(try files("ranks\(ranks)-\(index)"), try files("one-\(index)"), "\(knobs) on \(ranks) ranks")
            }
        }
        // A bad command line is found by every rank; rank 0 says it.
        let refused = try launched(2, ["--method", "bogus"] + inputs + ["--output", "bad-method"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertEqual(refused.stderr.split(separator: "\n").filter { $0.contains("error") }.count, 1, refused.stderr)
        // c's last tensor (rank 1's share with 2 ranks) holds a NaN.
        var bad = try values("c.safetensors")
        bad["block.scale"]![3] = .nan
        try Safetensors.write(shapes.map { TensorRecord(name: $0.0, shape: $0.1, values: bad[$0.0]!) }, to: url("c.safetensors"))
        for method in ["ties", "task_arithmetic"] {
            let failed = try launched(2, ["--method", method] + inputs + ["--output", "bad-\(method)"])
            XCTAssertNotEqual(failed.status, 0, failed.stdout)
            let lines = failed.stderr.split(separator: "\n").filter { $0.contains("error") }
            XCTAssertEqual(lines.count, 1, failed.stderr)
            XCTAssertTrue(failed.stderr.contains("c.safetensors: tensor 'block.scale' holds a non-finite value"), failed.stderr)
            let left = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.contains("bad-") }
            XCTAssertEqual(left, [], "no output and no staging folder")
        }
    }

    func testShardedFoldersInAndOut() throws {
        let names = shapes.map(\.0)
        try writeShardedCopy(of: "base", as: "base-hf", order: names)
        // A companion that is a relative link (as in a Hugging Face cache) arrives as the file.
        try Data("{}".utf8).write(to: url("tokenizer-blob"))
        try FileManager.default.createSymbolicLink(atPath: url("base-hf/tokenizer.json").path, withDestinationPath: "../tokenizer-blob")
        try writeShardedCopy(of: "a", as: "a-hf", order: names.reversed())
        try writeShardedCopy(of: "b", as: "b-hf", order: names)
        let single = try merge(["--method", "ties", "--density", "0.5", "--base", "base.safetensors", "--model", "a.safetensors",
                                "--model", "b.safetensors", "--output", "single.safetensors"])
        XCTAssertEqual(single.status, 0, single.stderr)
        let sharded = try merge(["--method", "ties", "--density", "0.5", "--base", "base-hf", "--model", "a-hf",
                                 "--model", "b-hf", "--output", "merged-hf", "--shard-size", "40B"])
        XCTAssertEqual(sharded.status, 0, sharded.stderr)
        let folder = url("merged-hf")
        let index = try JSONSerialization.jsonObject(
            with: Data(contentsOf: folder.appendingPathComponent("model.safetensors.index.json"))) as? [String: Any]
        let weightMap = try XCTUnwrap(index?["weight_map"] as? [String: String])
        XCTAssertEqual(Set(weightMap.keys), Set(names))
        let shardFiles = Set(weightMap.values)
        XCTAssertGreaterThan(shardFiles.count, 1, "40-byte shards")
        XCTAssertTrue(shardFiles.allSatisfy { $0.hasPrefix("model-0000") && $0.hasSuffix("-of-0000\(shardFiles.count).safetensors") }, "\(shardFiles)")
        XCTAssertEqual((index?["metadata"] as? [String: Any])?["total_size"] as? Int, shapes.reduce(0) { $0 + 4 * $1.1.reduce(1, *) })
        XCTAssertEqual(try String(contentsOf: folder.appendingPathComponent("config.json"), encoding: .utf8), "{\"model_type\": \"test\"}")
        let tokenizer = folder.appendingPathComponent("tokenizer.json")
        XCTAssertEqual(try tokenizer.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile, true, "copied as a file")
        XCTAssertEqual(try String(contentsOf: tokenizer, encoding: .utf8), "{}")
        var merged: [String: [Float]] = [:]
        for shard in shardFiles { merged.merge(try tensorValues(at: folder.appendingPathComponent(shard))) { a, _ in a } }
        XCTAssertEqual(merged, try values("single.safetensors"))
        XCTAssertTrue(sharded.stdout.contains("shard(s)"), sharded.stdout)

        // A folder output that is not empty, and broken indexes: one line, no output.
        try checkRefused(["--method", "ties", "--base", "base-hf", "--model", "a-hf", "--output", "a-hf"], ["a-hf", "input"], output: "none")
        try FileManager.default.createDirectory(at: url("busy"), withIntermediateDirectories: true)
        try Data().write(to: url("busy/file"))
        try checkRefused(["--method", "ties", "--base", "base-hf", "--model", "a-hf", "--output", "busy"], ["busy", "not empty"], output: "none")
        let bIndex = url("b-hf/model.safetensors.index.json")
        var broken = try JSONSerialization.jsonObject(with: Data(contentsOf: bIndex)) as! [String: Any]
        var map = broken["weight_map"] as! [String: String]
        map[names[0]] = map[names[1]]
        broken["weight_map"] = map
        try JSONSerialization.data(withJSONObject: broken).write(to: bIndex)
        try checkRefused(["--method", "ties", "--base", "base-hf", "--model", "b-hf", "--output", "out-hf"],
                         ["b-hf/model.safetensors.index.json", "listed in part-1.safetensors but that shard does not hold it"], output: "out-hf")
        try FileManager.default.createDirectory(at: url("plain-folder"), withIntermediateDirectories: true)
        try checkRefused(["--method", "ties", "--base", "base-hf", "--model", "plain-folder", "--output", "out-hf"],
                         ["plain-folder", "model.safetensors.index.json"], output: "out-hf")
    }

    func testBadInputsAreOneErrorLineAndNoOutput() throws {
        let common = ["--method", "task_arithmetic", "--base", "base.safetensors", "--output", "out.safetensors"]
        try checkRefused(common + ["--model", "a.safetensors", "--model", "missing.safetensors"],
                         ["missing.safetensors", "no such file"])
        try checkRefused(["--method", "ties", "--base", "nobase.safetensors", "--model", "a.safetensors", "--output", "out.safetensors"],
                         ["nobase.safetensors", "no such file"])
        try checkRefused(common, ["--model"])

        var transposed = try Safetensors.read(url("b.safetensors")).tensors
        transposed[0] = TensorRecord(name: transposed[0].name, shape: [4, 3], values: transposed[0].values)
        try Safetensors.write(transposed, to: url("transposed.safetensors"))
        try checkRefused(common + ["--model", "a.safetensors", "--model", "transposed.safetensors"],
                         ["transposed.safetensors: tensor 'layer.weight' has shape [4, 3], the base has [3, 4]"])

        var renamed = try Safetensors.read(url("b.safetensors")).tensors
        renamed[1] = TensorRecord(name: "layer.bias_renamed", shape: renamed[1].shape, values: renamed[1].values)
        try Safetensors.write(renamed, to: url("renamed.safetensors"))
        try checkRefused(common + ["--model", "renamed.safetensors"],
                         ["renamed.safetensors: tensor 'layer.bias' is missing"])

        let extra = try Safetensors.read(url("b.safetensors")).tensors + [TensorRecord(name: "extra", shape: [1], values: [0])]
        try Safetensors.write(extra, to: url("extra.safetensors"))
        try checkRefused(common + ["--model", "extra.safetensors"], ["extra.safetensors: tensor 'extra' is not in the base"])

        try writeRaw("half.safetensors", shapes.map { name, shape in
            (name, "F16", shape, [UInt8](repeating: 0, count: 2 * shape.reduce(1, *)))
        })
        try checkRefused(common + ["--model", "half.safetensors"], ["half.safetensors: tensor 'layer.weight' is F16, the base's is F32"])

        try Data("not a safetensors file".utf8).write(to: url("garbage.safetensors"))
        try checkRefused(common + ["--model", "garbage.safetensors"], ["garbage.safetensors"])

        try checkRefused(["--method", "tsv", "--density", "0.2", "--base", "base.safetensors", "--model", "a.safetensors",
                          "--output", "out.safetensors"], ["--density", "tsv"])
        try checkRefused(["--method", "ties", "--density", "1.5", "--base", "base.safetensors", "--model", "a.safetensors",
                          "--output", "out.safetensors"], ["--density", "must be in (0, 1]"])
        try checkRefused(["--method", "tie", "--base", "base.safetensors", "--model", "a.safetensors",
                          "--output", "out.safetensors"], ["--method", "\"tie\""])
        try checkRefused(["--method", "consensus", "--k", "3", "--base", "base.safetensors", "--model", "a.safetensors",
                          "--model", "b.safetensors", "--output", "out.safetensors"], ["--k", "number of models (2)"])

        try """
            method: ties
            densty: 0.2
            """.write(to: url("bad.yaml"), atomically: true, encoding: .utf8)
        try checkRefused(["--config", "bad.yaml", "--base", "base.safetensors", "--model", "a.safetensors",
                          "--output", "out.safetensors"], ["bad.yaml: densty: unknown key"])
        try """
            method: ties
            models: [a.safetensors, nothere.safetensors]
            """.write(to: url("missing.yaml"), atomically: true, encoding: .utf8)
        try checkRefused(["--config", "missing.yaml", "--base", "base.safetensors", "--output", "out.safetensors"],
                         ["missing.yaml: models[1]: nothere.safetensors: no such file"])
    }

    func testTheOutputMayNotBeAnInput() throws {
        let before = try Data(contentsOf: url("b.safetensors"))
        try checkRefused(["--method", "ties", "--base", "base.safetensors", "--model", "a.safetensors", "--model",
                          "b.safetensors", "--output", "b.safetensors"],
                         ["b.safetensors", "refusing to overwrite an input"], output: "unused.safetensors")
        try checkRefused(["--method", "ties", "--base", "base.safetensors", "--model", "a.safetensors",
                          "--output", "./sub/../base.safetensors"],
                         ["base.safetensors", "refusing to overwrite an input"], output: "unused.safetensors")
        try FileManager.default.createSymbolicLink(at: url("link.safetensors"), withDestinationURL: url("a.safetensors"))
        try checkRefused(["--method", "ties", "--base", "base.safetensors", "--model", "link.safetensors",
                          "--output", "a.safetensors"], ["a.safetensors", "refusing to overwrite an input"],
                         output: "unused.safetensors")
        XCTAssertEqual(try Data(contentsOf: url("b.safetensors")), before, "the input is untouched")
    }

    func testOnlyRegularFilesAreReadOrReplaced() throws {
        let common = ["--method", "task_arithmetic", "--base", "base.safetensors"]
        XCTAssertEqual(mkfifo(url("fifo.safetensors").path, 0o644), 0)
        // A FIFO as input would block open() forever; a device reads without end.
        try checkRefused(common + ["--model", "fifo.safetensors", "--output", "out.safetensors"],
                         ["fifo.safetensors", "not a regular file"])
        try checkRefused(common + ["--model", "/dev/zero", "--output", "out.safetensors"], ["/dev/zero", "not a regular file"])
        // A FIFO as output is not replaced by a regular file (as root, /dev/null would be).
        try checkRefused(common + ["--model", "a.safetensors", "--output", "fifo.safetensors"],
                         ["fifo.safetensors", "not a regular file"], output: "unused.safetensors")
        // Nor is a path that would be a sharded folder (no .safetensors extension).
        XCTAssertEqual(mkfifo(url("fifo-folder").path, 0o644), 0)
        try checkRefused(common + ["--model", "a.safetensors", "--output", "fifo-folder"],
                         ["fifo-folder", "exists and is not a folder"], output: "unused.safetensors")
        for fifo in ["fifo.safetensors", "fifo-folder"] {
            var attributes = stat()
            XCTAssertEqual(stat(url(fifo).path, &attributes), 0)
            XCTAssertEqual(attributes.st_mode & S_IFMT, S_IFIFO, "\(fifo) still a FIFO")
        }
    }

    func testANonFiniteBaseIsNamedAndNegativeAlphaIsAValue() throws {
        var broken = try Safetensors.read(url("base.safetensors")).tensors
        var bias = broken[1].values
        bias[2] = .nan
        broken[1] = TensorRecord(name: broken[1].name, shape: broken[1].shape, values: bias)
        try Safetensors.write(broken, to: url("nanbase.safetensors"))
        try checkRefused(["--method", "task_arithmetic", "--base", "nanbase.safetensors", "--model", "a.safetensors",
                          "--output", "out.safetensors"], ["nanbase.safetensors", "layer.bias", "non-finite"])
        // Negation: α = −1 is a value, not an option.
        let outcome = try merge(["--method", "task_arithmetic", "--alpha", "-1", "--base", "base.safetensors",
                                 "--model", "a.safetensors", "--output", "negated.safetensors"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        let base = try values("base.safetensors"), model = try values("a.safetensors"), negated = try values("negated.safetensors")
        for (name, baseValues) in base {
            for i in baseValues.indices {
                XCTAssertEqual(negated[name]![i], baseValues[i] - (model[name]![i] - baseValues[i]), accuracy: 1e-5)
            }
        }
    }

    func testHelpIsNotAnError() throws {
        let outcome = try merge(["--help"])
        XCTAssertEqual(outcome.status, 0)
        XCTAssertEqual(outcome.stderr, "")
        XCTAssertTrue(outcome.stdout.contains("--density"), outcome.stdout)
    }
}
