// MergeCommand: `orthofuse merge`, merging fine-tuned safetensors checkpoints of one base model.
import ArgumentParser
import Core
import JobSchema
import MPITransport
import Reporting
import Transport
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge fine-tuned checkpoints of one base model: output = base + α·Δ of their task vectors.",
        discussion: """
            Task vectors are τt = model_t − base, per tensor; every file must have the base's tensor \
            names, shapes and dtypes. Floating tensors (F32, F16, BF16, F64) are merged; integer and \
            boolean tensors are copied from the base, byte for byte. The arithmetic is Float32; the \
            output keeps each tensor's dtype (--dtype auto) or stores every floating tensor as \
            float32, bfloat16 or float16 (rounded to nearest even); it is written atomically. \
            --config reads the same settings from YAML (keys: method, alpha, density, trim, gamma, \
            lambda, k, seed, base, models, output, dtype; paths relative to that file); options given on the \
            command line override the file, and --model replaces its models.
            """)

    @Option(help: "A YAML file with the merge settings (the option names as keys, `models:` a list).")
    var config: String?

    @Option(help: "Merging method: \(MergeMethodName.allCases.map(\.rawValue).joined(separator: ", ")).")
    var method: String?

    // `parsing: .unconditional` on numeric options: `--alpha -1` (negation) is a value, not an option.
    @Option(parsing: .unconditional, help: "Scale of the merged task vector Δ: output = base + α·Δ (default 1.0).")
    var alpha: Double?

    @Option(parsing: .unconditional, help: "Share of each task vector kept, in (0, 1] (ties, dare, dare_ties, breadcrumbs).")
    var density: Double?

    @Option(help: "Where TIES ranks magnitudes: global (whole vector, as the paper) or per-tensor (as mergekit).")
    var trim: String?

    @Option(parsing: .unconditional, help: "Share of the largest |τ| dropped as outliers, in [0, 1) (breadcrumbs).")
    var gamma: Double?

    @Option(name: .customLong("lambda"), parsing: .unconditional, help: "Consensus λ: task t uses an entry when |τt| > λ·|Στ − τt| (consensus).")
    var consensusLambda: Double?

    @Option(name: .customLong("k"), parsing: .unconditional, help: "Keep the entries used by at least k tasks (consensus).")
    var consensusK: Int?

    @Option(parsing: .unconditional, help: "Seed of the random drops (dare, dare_ties).")
    var seed: UInt64?

    @Option(parsing: .unconditional, help: "Share of each matrix's rank given to the common subspace, in [0, 1] (iso_cts; default 0.8).")
    var commonFraction: Double?

    @Option(help: "The base checkpoint θ0 (safetensors).")
    var base: String?

    @Option(name: .customLong("model"), help: "A fine-tuned checkpoint (safetensors); repeat once per model.")
    var models: [String] = []

    @Option(help: "The merged checkpoint to write, never one of the inputs: a .safetensors file, or any other path a new folder in the Hugging Face sharded layout (shards and model.safetensors.index.json, the base folder's other files copied).")
    var output: String?

    @Option(help: "Worker threads (default: the cores; under mpirun, the cores over the ranks on the host). The output does not depend on it.")
    var threads: Int?

    @Option(help: "Largest shard of a folder output: bytes, or with KB, MB, GB (powers of 1000; default 5GB).")
    var shardSize: String?

    @Option(help: "The output's floating dtype: auto (each tensor's dtype in the base; the default), float32, bfloat16, float16.")
    var dtype: String?

    /// Everything that can be checked without reading the checkpoints' data: the settings, their
    /// ranges and methods, that every input exists and the output is none of them. One error line.
    func validate() throws {
        // The parser validates before it looks for --help; an incomplete command asking for help
        // must get the help, not an error line.
        let builtIn: Set<String> = ["-h", "--help", "--version", "--experimental-dump-help"]
        if CommandLine.arguments.contains(where: builtIn.contains) { return }
        do {
            _ = try request()
        } catch {
            // Under mpirun every rank finds the same problem: rank 0 says it.
            if (MPIEnvironment.launcherRank ?? 0) == 0 { Console.error("\(error)") }
            throw ExitCode.failure
        }
    }

    /// One process, or under mpirun every rank (each merges and writes its share of the output's
    /// files); rank 0 prints the summary, or the one error line of any rank's failure.
    func run() throws {
        let request = try self.request()
        try Launch.onEveryRank(level: .normal) { communicator, _ in
            let summary = try CheckpointMerge.run(request, communicator: communicator)
            if communicator.rank == 0 { print(summary) }
        }
    }

    /// The command line over the config file, checked.
    func request() throws -> CheckpointMerge.Request {
        let recipe: MergeRecipe? = try config.map { try MergeRecipe.load(URL(fileURLWithPath: $0), origin: $0) }
        let method = try chosenMethod(recipe)
        let (settings, sources) = try knobs(for: method, recipe: recipe)
        let alpha = self.alpha ?? recipe?.alpha ?? 1.0
        guard alpha.isFinite else { throw OrthofuseError("--alpha: must be a finite number") }

        guard let base = Self.file(self.base, else: recipe?.base) else {
            throw OrthofuseError("no base checkpoint: give --base or base: in a --config file")
        }
        let models: [CheckpointMerge.File] = self.models.isEmpty
            ? (recipe?.models ?? []).map { .init($0) } : self.models.map { .init($0) }
        guard !models.isEmpty else {
            throw OrthofuseError("no fine-tuned checkpoints: give --model (once per model) or models: in a --config file")
        }
        if method == .consensus, settings.consensusK > models.count {
            let source = sources[.k] ?? "consensus: k (default \(settings.consensusK))"
            throw OrthofuseError("\(source): must be <= the number of models (\(models.count))")
        }
        guard let output = Self.file(self.output, else: recipe?.output) else {
            throw OrthofuseError("no output: give --output or output: in a --config file")
        }
        let outputDType = try self.dtype.map { word in
            guard let named = OutputDType(rawValue: word) else {
                throw OrthofuseError("--dtype: expected one of \(Self.words(OutputDType.self)), got \"\(word)\"")
            }
            return named
        } ?? recipe?.dtype ?? .auto
        let shardSize = try self.shardSize.map(Self.byteCount) ?? CheckpointMerge.defaultShardSize
        if let threads, !(1...1024).contains(threads) { throw OrthofuseError("--threads: must be in 1...1024, got \(threads)") }
        for input in [base] + models { try input.checkReadable() }
        try Self.checkOutput(output, inputs: [base] + models)
        var request = CheckpointMerge.Request(settings: settings, alpha: alpha, base: base, models: models, output: output,
                                              dtype: outputDType, shardSize: shardSize)
        // Under mpirun the ranks on a host share its cores.
        request.threads = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / LauncherEnvironment.ranksOnThisHost)
        return request
    }

    /// The option's path over the config file's.
    private static func file(_ option: String?, else key: JobPath?) -> CheckpointMerge.File? {
        if let option { return .init(option) }
        return key.map { .init($0) }
    }

    /// --method over the config file's method:.
    private func chosenMethod(_ recipe: MergeRecipe?) throws -> MergeMethodName {
        if let word = self.method {
            guard let named = MergeMethodName(rawValue: word) else {
                throw OrthofuseError("--method: expected one of \(Self.words(MergeMethodName.self)), got \"\(word)\"")
            }
            return named
        }
        if let named = recipe?.method { return named }
        throw OrthofuseError("no merge method: give --method (\(Self.words(MergeMethodName.self))) or method: in a --config file")
    }

    /// The method's knobs, options over the config file, checked against the method and their
    /// ranges; also where each came from (the option, or the file's key), for later messages.
    private func knobs(for method: MergeMethodName, recipe: MergeRecipe?) throws -> (MergeSettings, [MergeKnob: String]) {
        let origin = config ?? ""
        var sources: [MergeKnob: String] = [:]
        func take<T>(_ knob: MergeKnob, flag: T?, file: T?) -> T? {
            if let flag {
                sources[knob] = knob.flag
                return flag
            }
            if file != nil { sources[knob] = "\(origin): \(knob.rawValue)" }
            return file
        }
        let trimScope = try self.trim.map { word in
            guard let scope = TrimScope(rawValue: word) else {
                throw OrthofuseError("--trim: expected one of \(Self.words(TrimScope.self)), got \"\(word)\"")
            }
            return scope
        }
        let density = take(.density, flag: self.density, file: recipe?.density)
        let trim = take(.trim, flag: trimScope, file: recipe?.trim)
        let gamma = take(.gamma, flag: self.gamma, file: recipe?.gamma)
        let lambda = take(.lambda, flag: consensusLambda, file: recipe?.lambda)
        let k = take(.k, flag: consensusK, file: recipe?.k)
        let seed = take(.seed, flag: self.seed, file: recipe?.seed)
        let commonFraction = take(.commonFraction, flag: self.commonFraction, file: recipe?.commonFraction)
        for knob in MergeKnob.allCases where !knob.methods.contains(method) {
            if let source = sources[knob] {
                let users = knob.methods.map(\.rawValue).joined(separator: ", ")
                throw OrthofuseError("\(source): does not apply to \(method.rawValue) (only to \(users))")
            }
        }
        // Config values were range-checked when read; options are checked here.
        for (knob, value) in [(MergeKnob.density, density), (.gamma, gamma), (.lambda, lambda), (.k, k.map(Double.init)),
                             (.commonFraction, commonFraction)] {
            if let value, let message = knob.rangeViolation(value) {
                throw OrthofuseError("\(sources[knob]!): \(message)")
            }
        }
        var settings = MergeSettings(method: method)
        if let density { settings.density = density }
        if let trim { settings.trim = trim }
        if let gamma { settings.gamma = gamma }
        if let lambda { settings.consensusLambda = lambda }
        if let k { settings.consensusK = k }
        if let seed { settings.seed = seed }
        if let commonFraction { settings.commonFraction = commonFraction }
        if let (knob, message) = settings.combinationViolation {
            throw OrthofuseError("\(sources[knob] ?? knob.rawValue): \(message)")
        }
        return (settings, sources)
    }

    /// Refuses an output that is a directory or the same file as an input (also through a link).
    private static func checkOutput(_ output: CheckpointMerge.File, inputs: [CheckpointMerge.File]) throws {
        var outputStatus = stat()
        guard stat(output.url.path, &outputStatus) == 0 else { return }
        let isFolder = (outputStatus.st_mode & S_IFMT) == S_IFDIR
        if !isFolder, CheckpointMerge.isFolderOutput(output) {
            throw OrthofuseError("\(output.label): exists and is not a folder; a path without .safetensors is written as a sharded folder (choose a new one)")
        }
        if isFolder, !CheckpointMerge.isFolderOutput(output) {
            throw OrthofuseError("\(output.label): is a directory, expected a file to write")
        }
        if isFolder, let entries = try? FileManager.default.contentsOfDirectory(atPath: output.url.path), !entries.isEmpty,
           !inputs.contains(where: { sameFile($0.url.path, outputStatus) }) {
            throw OrthofuseError("\(output.label): is a folder that is not empty; the sharded output needs a new or empty folder")
        }
        for input in inputs where sameFile(input.url.path, outputStatus) {
            throw OrthofuseError("\(output.label): is the input \(input.name); refusing to overwrite an input (choose another output)")
        }
    }

    private static func sameFile(_ path: String, _ other: stat) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && status.st_dev == other.st_dev && status.st_ino == other.st_ino
    }

    /// "5GB", "256MB", "1000" → bytes (decimal units, as Hugging Face's max_shard_size).
    static func byteCount(_ text: String) throws -> Int {
        let units: [(String, Int)] = [("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000), ("B", 1)]
        let upper = text.uppercased()
        let (number, scale) = units.first { upper.hasSuffix($0.0) }.map { (String(upper.dropLast($0.0.count)), $0.1) } ?? (upper, 1)
        guard let value = Double(number.trimmingCharacters(in: .whitespaces)), value.isFinite, value >= 1,
              value * Double(scale) <= 1e15 else {
            throw OrthofuseError("--shard-size: expected a size such as 5GB, 256MB or 1000000, got \"\(text)\"")
        }
        return Int(value * Double(scale))
    }

    private static func words<T: RawRepresentable & CaseIterable>(_ type: T.Type) -> String where T.RawValue == String {
        T.allCases.map(\.rawValue).joined(separator: ", ")
    }
}
