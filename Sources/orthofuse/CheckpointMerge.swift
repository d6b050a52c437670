// CheckpointMerge: reads a base and fine-tuned checkpoints (safetensors files or Hugging Face
// sharded folders), checks they match, writes base + α·Δ as a file or a sharded folder.
import Coordinator
import Core
import JobSchema
import Foundation
import Transport

enum CheckpointMerge {
    /// An input or output file: where it is, and how messages and metadata name it.
    struct File {
        var url: URL
        /// The path as written on the command line or in the config file.
        var name: String
        /// How errors about the path itself name it (`merge.yaml: models[1]: b.safetensors`).
        var label: String
        /// Set for paths from a config file: their own existence check names the key.
        private var jobPath: JobPath?

        init(_ path: String) {
            // Lexically resolved, so that `sub/../a.safetensors` is recognised as `a.safetensors`
            // even when `sub` does not exist (writing would create it).
            url = URL(fileURLWithPath: path).standardizedFileURL
            name = path
            label = path
        }

        init(_ path: JobPath) {
            url = path.url
            name = path.written
            label = "\(path.label): \(path.written)"
            jobPath = path
        }

        /// A readable file, or a folder holding the sharded layout's index (Checkpoint checks the rest).
        func checkReadable() throws {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent(Checkpoint.indexName).path) { return }
            if let jobPath {
                try jobPath.checkReadableFile()
                return
            }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
                throw OrthofuseError("\(name): no such file")
            }
            if isDirectory.boolValue {
                throw OrthofuseError("\(name): is a folder without \(Checkpoint.indexName), expected a safetensors file or a sharded checkpoint")
            }
            guard FileManager.default.isReadableFile(atPath: url.path) else { throw OrthofuseError("\(name): not readable") }
        }
    }

    struct Request {
        var settings: MergeSettings
        var alpha: Double
        var base: File
        var models: [File]
        var output: File
        var dtype: OutputDType = .auto
        /// Bytes of tensor data per shard when the output is a folder.
        var shardSize: Int = CheckpointMerge.defaultShardSize
        /// Worker threads of this process (streamed chunks, or tensors merged at the same time).
        var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    }

    /// The output's tensors in file order, up to `threads` at a time: when the writer asks for
    /// tensor i and it is not ready, tensors i, i + 1, … are merged concurrently, as many as fit
    /// in `threads` and whose elements together do not exceed the largest tensor's (so the
    /// largest tensors are merged one at a time). Each tensor's merge is independent of the
    /// others', so the result does not depend on `threads`; memory is about (T + 3) × the
    /// largest tensor, whatever `threads`. `produce` runs on several threads at once:
    /// it reads its inputs through file handles of its own and merges into buffers of its own.
    final class MergeAhead: @unchecked Sendable {
        private let tensors: [SafetensorsTensorInfo]
        private let threads: Int
        private let produce: (SafetensorsTensorInfo) throws -> Checkpoint.TensorData
        private var ready: [Int: Checkpoint.TensorData] = [:]

        private let elementBudget: Int

        init(tensors: [SafetensorsTensorInfo], threads: Int,
             produce: @escaping (SafetensorsTensorInfo) throws -> Checkpoint.TensorData) {
            self.tensors = tensors
            self.threads = max(1, threads)
            self.produce = produce
            elementBudget = tensors.map(Self.elements).max() ?? 0
        }

        private static func elements(_ info: SafetensorsTensorInfo) -> Int {
            info.shape.reduce(1, *)
        }

        /// Tensors index, index + 1, … while they fit in `threads` and the element budget (the
        /// first always does).
        private func batch(from index: Int) -> Range<Int> {
            var end = index + 1, elements = Self.elements(tensors[index])
            while end < tensors.count, end - index < threads, elements + Self.elements(tensors[end]) <= elementBudget {
                elements += Self.elements(tensors[end])
                end += 1
            }
            return index..<end
        }

        func data(_ index: Int) throws -> Checkpoint.TensorData {
            if let done = ready.removeValue(forKey: index) { return done }
            let batch = batch(from: index)
            let results = ConcurrentResults<Checkpoint.TensorData>(count: batch.count)
            DispatchQueue.concurrentPerform(iterations: batch.count) { offset in
                results.set(offset, Result { try produce(tensors[batch.lowerBound + offset]) })
            }
            // The first failure in file order, as a sequential merge would report it.
            for (offset, result) in results.all.enumerated() {
                ready[batch.lowerBound + offset] = try result.get()
            }
            return ready.removeValue(forKey: index)!
        }
    }

    /// As Hugging Face's `max_shard_size` default.
    static let defaultShardSize = 5_000_000_000

    /// An output path without the .safetensors extension is a folder in the sharded layout.
    static func isFolderOutput(_ output: File) -> Bool { output.url.pathExtension != "safetensors" }

    /// The dtypes whose tensors are merged; every other one is copied from the base.
    static let floatingDTypes: Set<String> = ["F32", "F16", "BF16", "F64"]

    /// What every rank knows before merging: the opened inputs, checked against the base, the
    /// merge layout (the base's floating tensors in file order) and the output's entries.
    private struct Plan {
        let base: Checkpoint
        let models: [Checkpoint]
        let layout: ParameterLayout
        let entries: [SafetensorsStreamWriter.Entry]
        let metadata: [String: String]
        let storedDTypes: [String]
        let copiedCount: Int
    }

    private static func makePlan(_ request: Request) throws -> Plan {
        let baseCheckpoint = try Checkpoint.open(request.base.url)
        let baseHeader = baseCheckpoint.header
        let models = try request.models.map { model in
            let checkpoint = try Checkpoint.open(model.url)
            try checkMatches(checkpoint.header, model: model.name, base: baseHeader)
            return checkpoint
        }
        let floating = baseHeader.tensors.filter { floatingDTypes.contains($0.dtype) }
        let copied = baseHeader.tensors.filter { !floatingDTypes.contains($0.dtype) }
        guard !floating.isEmpty else {
            throw OrthofuseError("\(request.base.name): has no floating-point tensors to merge")
        }
        let layout = ParameterLayout(floating.map { ParameterSpec(name: $0.name, shape: $0.shape) })
        let entries = baseHeader.tensors.map { info in
            SafetensorsStreamWriter.Entry(name: info.name, dtype: layout.range(of: info.name) == nil
                                              ? info.dtype : request.dtype.stored(forBase: info.dtype), shape: info.shape)
        }
        let storedDTypes = Set(entries.filter { layout.range(of: $0.name) != nil }.map(\.dtype)).sorted()
        var metadata = request.settings.metadata
        // The tensors keep the base's layout: its format, PyTorch's when it says none.
        metadata[Safetensors.formatKey] = baseHeader.metadata[Safetensors.formatKey] ?? Safetensors.pytorchFormat
        metadata["orthofuse.kind"] = "merged"
        metadata["orthofuse.alpha"] = "\(request.alpha)"
        metadata["orthofuse.base"] = request.base.name
        metadata["orthofuse.models"] = request.models.map(\.name).joined(separator: ",")
        metadata["orthofuse.version"] = JobRunner.version
        metadata["orthofuse.dtype"] = "\(request.dtype.rawValue): \(storedDTypes.joined(separator: ", "))"
        metadata["orthofuse.arithmetic"] = "float32; F16 and BF16 outputs rounded to nearest even"
        if !copied.isEmpty {
            metadata["orthofuse.copied_from_base"] = copied.map { "\($0.name) (\($0.dtype))" }.joined(separator: ", ")
        }
        return Plan(base: baseCheckpoint, models: models, layout: layout, entries: entries, metadata: metadata,
                    storedDTypes: storedDTypes, copiedCount: copied.count)
    }

    /// Checks every header against the base, then merges; returns the summary line. Under mpirun
    /// the output's files are shared out among the ranks (consecutive runs of shards, so whole
    /// tensors in layout order): each rank merges and writes its own, rank 0 staging the folder
    /// and publishing it when every rank is done. Each phase ends in an agreement, so a failure
    /// on any rank is one line from rank 0 and no output.
    static func run(_ request: Request, communicator: any Communicator) throws -> String {
        let started = Date()
        let rank = communicator.rank, ranks = communicator.size
        let sharded = isFolderOutput(request.output)
        // Phase 1: every rank opens and checks the inputs; rank 0 stages a folder output.
        let (plan, staged) = try PhaseAgreement.run(communicator) { () throws -> (Plan, Checkpoint.Staging?) in
            let plan = try makePlan(request)
            return (plan, rank == 0 && ranks > 1 && sharded ? try Checkpoint.Staging(request.output.url) : nil)
        }
        var staging = staged
        if ranks > 1 && sharded {
            let path = try communicator.broadcast(Array((staged?.url.path ?? "").utf8), root: 0)
            if rank != 0 { staging = Checkpoint.Staging(existing: URL(fileURLWithPath: String(decoding: path, as: UTF8.self))) }
        }
        // Phase 2: each rank merges and writes its part.
        let (writer, passes) = try PhaseAgreement.run(communicator) {
            let writer = try Checkpoint.Writer(plan.entries, metadata: plan.metadata, to: request.output.url, sharded: sharded,
                                               shardSize: request.shardSize, companions: plan.base.companionFiles,
                                               part: .init(index: rank, count: ranks), staging: staging)
            let passes = try merge(request, plan, into: writer, communicator: communicator)
            try writer.finish()
            return (writer, passes)
        }
        // Phase 3: rank 0 publishes a folder written by several ranks.
        if ranks > 1 { try PhaseAgreement.run(communicator) { if rank == 0 { try writer.publish() } } }

        let shardText = sharded ? " in \(writer.fileCount) shard(s)" : ""
        let how = StreamedMerge.supports(request.settings.method)
            ? ", streamed in chunks of \(StreamedMerge.defaultChunkElements) entries in \(passes) pass(es) over the inputs"
            : ", tensor by tensor"
        let knobs = request.settings.knobSummary
        let copiedText = plan.copiedCount == 0 ? "" : ", \(plan.copiedCount) non-float tensor(s) copied from the base"
        let rankText = ranks > 1 ? " by \(ranks) ranks" : ""
        return String(
            format: "merged %d model(s) with %@%@, α = %@: %d tensors, %d parameters as %@%@, %.2f s → %@%@",
            request.models.count, request.settings.method.rawValue, knobs.isEmpty ? "" : " (\(knobs))",
            "\(request.alpha)", plan.layout.specs.count, plan.layout.totalCount, plan.storedDTypes.joined(separator: ", "),
            copiedText, Date().timeIntervalSince(started), request.output.name, shardText + rankText + how)
    }

    /// This rank's entries of the output merged into `writer` (their non-floating tensors copied
    /// from the base); returns the passes over the inputs (1 for the tensor-by-tensor methods).
    private static func merge(_ request: Request, _ plan: Plan, into writer: Checkpoint.Writer,
                              communicator: any Communicator) throws -> Int {
        let owned = writer.ownedEntries
        let baseTensors = plan.base.header.tensors
        guard StreamedMerge.supports(request.settings.method) else {
            let mergedTensor = try mergeTensorByTensor(request, base: plan.base, models: plan.models, layout: plan.layout)
            let ahead = MergeAhead(tensors: owned.map { baseTensors[$0] }, threads: request.threads) { info in
                guard plan.layout.range(of: info.name) != nil else { return ([], try plan.base.bytes(of: info)) }
                return (try mergedTensor(info), nil)
            }
            for (position, index) in owned.enumerated() {
                let tensor = try ahead.data(position)
                try writer.append(entry: index, values: tensor.values, rawBytes: tensor.rawBytes)
            }
            return 1
        }
        for index in owned where plan.layout.range(of: baseTensors[index].name) == nil {
            try writer.append(entry: index, values: [], rawBytes: try plan.base.bytes(of: baseTensors[index]))
        }
        let ownedNames = Set(owned.map { baseTensors[$0].name })
        let tensors = plan.layout.specs.indices.filter { ownedNames.contains(plan.layout.specs[$0].name) }
        return try streamed(request, base: plan.base, models: plan.models, layout: plan.layout, writer: writer,
                            entries: plan.entries, tensors: tensors,
                            collectives: communicator.size > 1 ? .over(communicator) : .alone)
    }

    /// The streamed merge (StreamedMerge) of the floating tensors, read in chunks from the
    /// inputs and written in place into `writer`; returns the passes it made over the inputs.
    private static func streamed(_ request: Request, base: Checkpoint, models: [Checkpoint], layout: ParameterLayout,
                                 writer: Checkpoint.Writer, entries: [SafetensorsStreamWriter.Entry], tensors: [Int],
                                 collectives: MergeCollectives) throws -> Int {
        let entryIndex = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
        let inputs = [base] + models
        let streams = CheckpointStreams(
            readers: try inputs.map(Checkpoint.PartReader.init),
            tensors: inputs.map { checkpoint in
                let byName = Dictionary(uniqueKeysWithValues: checkpoint.header.tensors.map { ($0.name, $0) })
                return layout.specs.map { byName[$0.name]! }
            },
            origins: [request.base.name] + request.models.map(\.name),
            writer: writer, outputEntries: layout.specs.map { entryIndex[$0.name]! })
        let merge = StreamedMerge(layout: layout, taskCount: models.count, settings: request.settings,
                                  alpha: Float(request.alpha), threads: request.threads, tensors: tensors, collectives: collectives)
        return try merge.run(streams)
    }

    /// Checkpoints as a streamed merge's inputs (0 the base, t + 1 model t) and output.
    private struct CheckpointStreams: StreamedMergeIO {
        let readers: [Checkpoint.PartReader]
        /// tensors[input][layout index]
        let tensors: [[SafetensorsTensorInfo]]
        /// How messages name each input.
        let origins: [String]
        let writer: Checkpoint.Writer
        /// The writer's entry of each layout tensor.
        let outputEntries: [Int]

        /// Room for an element in the widest floating dtype (F64).
        var stagingBytesPerElement: Int { 8 }

        func read(input: Int, tensor: Int, elements: Range<Int>, into values: UnsafeMutablePointer<Float>,
                  staging: UnsafeMutableRawPointer) throws {
            try readers[input].readFloats(tensors[input][tensor], elements: elements, into: values, staging: staging,
                                          origin: origins[input])
        }

        func write(tensor: Int, elements: Range<Int>, values: UnsafePointer<Float>, staging: UnsafeMutableRawPointer) throws {
            try writer.write(entry: outputEntries[tensor], elements: elements, values: values, staging: staging)
        }
    }

    /// The merged values of one floating tensor, read and merged on demand.
    typealias MergedTensor = (SafetensorsTensorInfo) throws -> [Float]

    /// For the methods that need whole matrices (tsv, iso_c, iso_cts): each tensor of the base and
    /// the models read when it is needed and merged on its own, with the same global indices, so
    /// bitwise the whole-vector merge. Memory is about (T + 3) × the largest tensor.
    private static func mergeTensorByTensor(_ request: Request, base: Checkpoint, models: [Checkpoint],
                                            layout: ParameterLayout) throws -> MergedTensor {
        let byName = models.map { model in Dictionary(uniqueKeysWithValues: model.header.tensors.map { ($0.name, $0) }) }
        return { info in
            let region = layout.range(of: info.name)!
            // Each input decoded straight into a buffer of its own; a model's becomes its task
            // vector in place, and the merge is written into the returned array: no other copies.
            let baseBuffer = try base.floats(of: info)
            try ParameterLayout.checkFinite(baseBuffer, tensor: info.name, origin: request.base.name)
            let taskVectors = try zip(request.models, models.indices).map { model, index in
                let values = try models[index].floats(of: byName[index][info.name]!)
                try ParameterLayout.checkFinite(values, tensor: info.name, origin: model.name)
                TaskVector.subtract(base: baseBuffer, from: values)
                return values
            }
            let delta = try TaskVectorMerger.mergedSlice(taskVectors, region: region, layout: layout,
                                                         settings: request.settings, collectives: .alone)
            return [Float](unsafeUninitializedCapacity: region.count) { merged, initialized in
                if let target = merged.baseAddress {
                    TaskArithmetic.merge(base: baseBuffer.pointer, taskVectorSum: delta.pointer, alpha: Float(request.alpha),
                                         into: target, count: region.count)
                }
                initialized = region.count
            }
        }
    }

    /// Same tensor names, dtypes and shapes as the base (in any order), or one line naming the first difference.
    static func checkMatches(_ header: SafetensorsHeader, model: String, base: SafetensorsHeader) throws {
        let byName = Dictionary(uniqueKeysWithValues: header.tensors.map { ($0.name, $0) })
        for expected in base.tensors {
            guard let info = byName[expected.name] else {
                throw OrthofuseError("\(model): tensor '\(expected.name)' is missing (the base has it)")
            }
            if info.dtype != expected.dtype {
                throw OrthofuseError("\(model): tensor '\(info.name)' is \(info.dtype), the base's is \(expected.dtype)")
            }
            if info.shape != expected.shape {
                throw OrthofuseError("\(model): tensor '\(info.name)' has shape \(info.shape), the base has \(expected.shape)")
            }
        }
        let baseNames = Set(base.names)
        if let extra = header.tensors.first(where: { !baseNames.contains($0.name) }) {
            throw OrthofuseError("\(model): tensor '\(extra.name)' is not in the base")
        }
    }
}

/// Results written by concurrent workers, one slot each, read after they all finished.
final class ConcurrentResults<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [Result<T, any Error>?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ result: Result<T, any Error>) {
        lock.lock()
        slots[index] = result
        lock.unlock()
    }

    var all: [Result<T, any Error>] {
        lock.lock()
        defer { lock.unlock() }
        return slots.map { $0! }
    }
}
