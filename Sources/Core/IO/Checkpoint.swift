// Checkpoint: a model as merge reads it — one .safetensors file, or a Hugging Face folder whose
// model.safetensors.index.json maps every tensor to one of its shard files — and the same two
// layouts written (shards of a bounded size with their own index).
import Foundation

public struct Checkpoint: Sendable {
    /// The index file of the sharded layout.
    public static let indexName = "model.safetensors.index.json"

    public let url: URL
    /// The files holding tensors: the file itself, or the index's shards in order of first mention.
    public let shards: [URL]
    /// Every tensor, shard by shard in data order; `dataOffsets` are within the tensor's shard.
    public let header: SafetensorsHeader
    private let shardOfTensor: [String: Int]
    /// Where each shard's data buffer starts (8 + its header's length).
    private let dataStarts: [Int]

    public var isSharded: Bool { shards.count != 1 || shards[0] != url }

    /// Opens `url` (a file, or a folder with the index) and checks its index against the shards'
    /// headers: every entry's tensor is in the shard it names, no shard holds a tensor the index
    /// does not list or lists elsewhere, no shard path leaves the folder.
    public static func open(_ url: URL) throws -> Checkpoint {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            let header = try Safetensors.readHeader(url)
            return Checkpoint(url: url, shards: [url], header: header, shardOfTensor: [:],
                              dataStarts: [try FileBytes.size(url) - header.dataBufferSize])
        }
        let indexURL = url.appendingPathComponent(indexName)
        let path = FileBytes.displayPath(indexURL)
        guard FileManager.default.fileExists(atPath: indexURL.path) else {
            throw OrthofuseError("\(FileBytes.displayPath(url)): is a folder without \(indexName) (expected a .safetensors file or a Hugging Face sharded checkpoint)")
        }
        let weightMap = try readWeightMap(indexURL, path: path)
        var shardNames: [String] = []
        for name in weightMap.values.sorted() where !shardNames.contains(name) { shardNames.append(name) }
        var infos: [SafetensorsTensorInfo] = []
        var shardOfTensor: [String: Int] = [:]
        var metadata: [String: String] = [:]
        var dataBytes = 0
        var dataStarts: [Int] = []
        for (shardIndex, name) in shardNames.enumerated() {
            guard !name.contains("/"), !name.hasPrefix("."), !name.isEmpty else {
                throw OrthofuseError("\(path): shard \(MessageText.quoted(name)) is not a file name in the folder")
            }
            let shard = try Safetensors.readHeader(url.appendingPathComponent(name))
            dataStarts.append(try FileBytes.size(url.appendingPathComponent(name)) - shard.dataBufferSize)
            if shardIndex == 0 { metadata = shard.metadata }
            for info in shard.tensors {
                guard weightMap[info.name] == name else {
                    let listed = weightMap[info.name].map { "the index puts it in \($0)" } ?? "the index does not list it"
                    throw OrthofuseError("\(path): shard \(name) holds tensor \(MessageText.quoted(info.name)) but \(listed)")
                }
                shardOfTensor[info.name] = shardIndex
                infos.append(info)
            }
            dataBytes += shard.dataBufferSize
        }
        if let missing = weightMap.keys.sorted().first(where: { shardOfTensor[$0] == nil }) {
            throw OrthofuseError("\(path): tensor \(MessageText.quoted(missing)) is listed in \(weightMap[missing]!) but that shard does not hold it")
        }
        return Checkpoint(url: url, shards: shardNames.map { url.appendingPathComponent($0) },
                          header: SafetensorsHeader(tensors: infos, metadata: metadata, dataBufferSize: dataBytes),
                          shardOfTensor: shardOfTensor, dataStarts: dataStarts)
    }

    /// The index's `weight_map`: tensor name → shard file name.
    private static func readWeightMap(_ indexURL: URL, path: String) throws -> [String: String] {
        let text = try FileBytes.readText(indexURL, origin: path, limit: Safetensors.maximumHeaderLength, kind: "index")
        guard let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw OrthofuseError("\(path): not a JSON object")
        }
        guard let map = json["weight_map"] as? [String: Any], !map.isEmpty else {
            throw OrthofuseError("\(path): no \"weight_map\" object of tensor names to shard files")
        }
        var weightMap: [String: String] = [:]
        for (tensor, shard) in map {
            guard let shard = shard as? String else {
                throw OrthofuseError("\(path): weight_map entry \(MessageText.quoted(tensor)) is not a file name")
            }
            weightMap[tensor] = shard
        }
        return weightMap
    }

    /// One tensor's stored bytes, read from its file alone (memory for that tensor only).
    public func bytes(of info: SafetensorsTensorInfo) throws -> [UInt8] {
        [UInt8](try storedData(of: info))
    }

    /// One tensor's values as Float, read from its file alone.
    public func values(of info: SafetensorsTensorInfo) throws -> [Float] {
        let dtype = SafetensorsDType(rawValue: info.dtype)!  // the header check knows every dtype it lets through
        let stored = try storedData(of: info)
        return stored.withUnsafeBytes { Safetensors.decode($0, as: dtype, count: stored.count / dtype.byteWidth) }
    }

    /// One tensor's values in a FloatBuffer of its own (decoded straight into it).
    public func floats(of info: SafetensorsTensorInfo) throws -> FloatBuffer {
        let dtype = SafetensorsDType(rawValue: info.dtype)!
        let stored = try storedData(of: info)
        let count = stored.count / dtype.byteWidth
        let buffer = FloatBuffer(uninitializedCount: count)
        stored.withUnsafeBytes { if count > 0 { Safetensors.decode($0, as: dtype, count: count, into: buffer.pointer) } }
        return buffer
    }

    private func storedData(of info: SafetensorsTensorInfo) throws -> Data {
        let shard = shardOfTensor[info.name] ?? 0
        let path = FileBytes.displayPath(shards[shard])
        do {
            let handle = try FileHandle(forReadingFrom: shards[shard])
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(dataStarts[shard] + info.dataOffsets.lowerBound))
            let data = try handle.read(upToCount: info.dataOffsets.count) ?? Data()
            guard data.count == info.dataOffsets.count else {
                throw OrthofuseError("\(path): tensor \(MessageText.quoted(info.name)) is cut short (the file changed while reading?)")
            }
            return data
        } catch let error as OrthofuseError {
            throw error
        } catch {
            throw OrthofuseError("\(path): cannot read (\(FileSystemMessage.reason(error)))")
        }
    }

    /// Reads parts of tensors at any offset, from several threads at once (pread(2) on files
    /// opened once), into the caller's memory: no copy of a whole tensor, and no file pages kept
    /// mapped in the process.
    public final class PartReader: @unchecked Sendable {
        // Sendable: the descriptors are only read with pread after init.
        private let checkpoint: Checkpoint
        private let descriptors: [Int32]

        public init(_ checkpoint: Checkpoint) throws {
            self.checkpoint = checkpoint
            var descriptors: [Int32] = []
            for shard in checkpoint.shards {
                let descriptor = Glibc.open(shard.path, O_RDONLY | O_CLOEXEC)
                guard descriptor >= 0 else {
                    let reason = String(cString: strerror(errno))
                    for opened in descriptors { close(opened) }
                    throw OrthofuseError("\(FileBytes.displayPath(shard)): cannot read (\(reason))")
                }
                descriptors.append(descriptor)
            }
            self.descriptors = descriptors
        }

        deinit { for descriptor in descriptors { close(descriptor) } }

        /// Bytes `bytes` (relative to the tensor's data) of tensor `info` into `target`.
        public func read(_ info: SafetensorsTensorInfo, bytes: Range<Int>, into target: UnsafeMutableRawPointer) throws {
            precondition(bytes.lowerBound >= 0 && bytes.upperBound <= info.dataOffsets.count, "read outside the tensor")
            let shard = checkpoint.shardOfTensor[info.name] ?? 0
            let start = checkpoint.dataStarts[shard] + info.dataOffsets.lowerBound + bytes.lowerBound
            var done = 0
            while done < bytes.count {
                let got = pread(descriptors[shard], target + done, bytes.count - done, off_t(start + done))
                if got < 0, errno == EINTR { continue }
                let path = FileBytes.displayPath(checkpoint.shards[shard])
                if got < 0 { throw OrthofuseError("\(path): cannot read (\(String(cString: strerror(errno))))") }
                if got == 0 {
                    throw OrthofuseError("\(path): tensor \(MessageText.quoted(info.name)) is cut short (the file changed while reading?)")
                }
                done += got
            }
        }

        /// Elements `elements` of floating tensor `info` as Float32 into `values`, through
        /// `staging` (room for the elements in their stored dtype); checked finite, a bad value
        /// named with `origin` and its flat index in the tensor.
        public func readFloats(_ info: SafetensorsTensorInfo, elements: Range<Int>, into values: UnsafeMutablePointer<Float>,
                               staging: UnsafeMutableRawPointer, origin: String) throws {
            let dtype = SafetensorsDType(rawValue: info.dtype)!  // the header check knows every dtype it lets through
            let width = dtype.byteWidth
            try read(info, bytes: (elements.lowerBound * width)..<(elements.upperBound * width), into: staging)
            Safetensors.decode(UnsafeRawBufferPointer(start: staging, count: elements.count * width), as: dtype,
                               count: elements.count, into: values)
            try ParameterLayout.checkFinite(values, count: elements.count, tensor: info.name, origin: origin, firstIndex: elements.lowerBound)
        }
    }

    /// The folder's files that are neither the index nor a shard (config.json, tokenizer files…),
    /// which a merged folder carries over from the base.
    public var companionFiles: [URL] {
        guard isSharded else { return [] }
        let shardNames = Set(shards.map(\.lastPathComponent))
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        return names.sorted().filter { !$0.hasPrefix(".") && $0 != Self.indexName && !shardNames.contains($0) }
            .map { url.appendingPathComponent($0) }
            // Through symbolic links, as a Hugging Face cache's snapshot folders are made of.
            .filter { (try? $0.resolvingSymlinksInPath().resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true }
    }

    // MARK: Writing

    /// One tensor's data for the writers: values in the entry's float dtype, or raw bytes.
    public typealias TensorData = (values: [Float], rawBytes: [UInt8]?)

    /// A checkpoint being written: a single safetensors file at `url`, or with `sharded` a Hugging
    /// Face folder there — shards `model-0000i-of-0000n.safetensors` of at most `shardSize` bytes
    /// of tensor data each (a larger tensor gets a shard of its own), the index with
    /// `metadata.total_size`, and `companions` copied in. Every file's header is written first;
    /// tensors' data then goes to its place in any order, from any thread (`write`). Built under a
    /// temporary name beside `url` and renamed into place when finished, so readers never see half
    /// of it (a folder must not exist or be empty); dropped unfinished, it leaves nothing.
    ///
    /// Several processes (ranks) can write one checkpoint together: each writes its `part` — one of
    /// `part.count` consecutive runs of the files — into the folder one of them staged
    /// (`Staging`), and that one publishes it once every part is finished.
    public final class Writer: @unchecked Sendable {
        // Sendable: after init only `write` runs concurrently, and the shard writers' writes are.
        /// Which files a process writes: the `index`-th of `count` consecutive runs of them.
        public struct Part: Sendable {
            public let index: Int
            public let count: Int
            public init(index: Int, count: Int) {
                precondition(count >= 1 && (0..<count).contains(index))
                self.index = index
                self.count = count
            }
            public static let whole = Part(index: 0, count: 1)
        }

        private let url: URL
        private let companions: [URL]
        /// The staging folder of a sharded output; published by this writer when it staged it.
        private let staging: Staging?
        private let publishes: Bool
        private let entries: [SafetensorsStreamWriter.Entry]
        /// The entries of each file, in order, and the files' names.
        private let groups: [Range<Int>]
        private let fileNames: [String]
        /// This process's files (indices into `groups`) and their writers.
        private let ownedFiles: Range<Int>
        private let files: [SafetensorsStreamWriter]

        /// `staging`: the folder another process staged for this sharded output; nil stages it
        /// here, to be published by `finish`.
        public init(_ entries: [SafetensorsStreamWriter.Entry], metadata: [String: String], to url: URL,
                    sharded: Bool, shardSize: Int = 5_000_000_000, companions: [URL] = [],
                    part: Part = .whole, staging: Staging? = nil) throws {
            self.url = url
            self.companions = companions
            self.entries = entries
            let groups = sharded ? shardPlan(entries.map(storedBytes), shardSize: shardSize) : [entries.indices]
            self.groups = groups
            fileNames = sharded
                ? groups.indices.map { String(format: "model-%05d-of-%05d.safetensors", $0 + 1, groups.count) }
                : [url.lastPathComponent]
            ownedFiles = (groups.count * part.index / part.count)..<(groups.count * (part.index + 1) / part.count)
            publishes = sharded && staging == nil
            self.staging = sharded ? try staging ?? Staging(url) : nil
            let folder = self.staging?.url ?? url.deletingLastPathComponent()
            files = try ownedFiles.map { [fileNames] index in
                try SafetensorsStreamWriter(url: folder.appendingPathComponent(fileNames[index]),
                                            entries: Array(entries[groups[index]]), metadata: metadata)
            }
        }

        /// The checkpoint's files of tensors (all processes' together).
        public var fileCount: Int { groups.count }

        /// The entries this process writes, in order (all of them for the whole checkpoint).
        public var ownedEntries: [Int] { ownedFiles.flatMap { Array(groups[$0]) } }

        /// Bytes [byteOffset, byteOffset + bytes.count) of entry `index`'s data, in its dtype.
        public func write(entry index: Int, at byteOffset: Int, _ bytes: UnsafeRawBufferPointer) throws {
            let group = groups.firstIndex { $0.contains(index) }!
            precondition(ownedFiles.contains(group), "entry \(index) is another process's to write")
            try files[group - ownedFiles.lowerBound].write(entry: index - groups[group].lowerBound, at: byteOffset, bytes)
        }

        /// Elements `elements` of entry `index` from `values`, stored in the entry's float dtype
        /// through `staging` (room for them in that dtype).
        public func write(entry index: Int, elements: Range<Int>, values: UnsafePointer<Float>,
                          staging: UnsafeMutableRawPointer) throws {
            let dtype = SafetensorsDType(rawValue: entries[index].dtype)!
            Safetensors.encode(values, count: elements.count, as: dtype, into: staging)
            try write(entry: index, at: elements.lowerBound * dtype.byteWidth,
                      UnsafeRawBufferPointer(start: staging, count: elements.count * dtype.byteWidth))
        }

        /// Entry `index`'s whole data: `values` in its float dtype, or its raw bytes.
        public func append(entry index: Int, values: [Float], rawBytes: [UInt8]?) throws {
            let entry = entries[index]
            let record = TensorRecord(name: entry.name, shape: entry.shape, values: values, outputDType: entry.dtype, rawBytes: rawBytes)
            do {
                _ = try Safetensors.storedByteCount(record, elements: Safetensors.elementCount(of: entry.shape)!)
            } catch let problem as Safetensors.EncodingProblem {
                throw OrthofuseError("\(FileBytes.displayPath(url)): cannot write safetensors: \(problem.message)")
            }
            var data = Data()
            Safetensors.appendStored(record, to: &data)
            try data.withUnsafeBytes { try write(entry: index, at: 0, $0) }
        }

        /// After every owned entry's data: this process's files flushed and renamed into place
        /// (a single file's is the output itself), and — when this writer staged the folder — the
        /// folder published.
        public func finish() throws {
            for file in files { try file.finish() }
            if publishes { try publish() }
        }

        /// The staged folder's index and companions written, the folder renamed into place: by
        /// the process that staged it, once every part is finished.
        public func publish() throws {
            guard let staging else { return }
            var weightMap: [String: String] = [:]
            for (file, group) in groups.enumerated() {
                for index in group { weightMap[entries[index].name] = fileNames[file] }
            }
            let index: [String: Any] = ["metadata": ["total_size": entries.reduce(0) { $0 + storedBytes($1) }],
                                        "weight_map": weightMap]
            let json = try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
            try AtomicFile.write(json, to: staging.url.appendingPathComponent(indexName))
            let manager = FileManager.default
            for companion in companions {
                // The file itself, not a link that may be relative to the base folder.
                try manager.copyItem(at: companion.resolvingSymlinksInPath(),
                                     to: staging.url.appendingPathComponent(companion.lastPathComponent))
            }
            try staging.publish(as: url)
        }
    }

    /// The temporary folder a sharded output is built in, beside it: removed when dropped unless
    /// published (renamed into place).
    public final class Staging: @unchecked Sendable {
        // Sendable: its URL is fixed; publishing happens on one thread.
        public let url: URL
        private var published = false

        /// Checks that `output` is not an existing file nor a folder with files, and makes
        /// `.NAME.tmp-PID` beside it.
        public init(_ output: URL) throws {
            let manager = FileManager.default
            var isDirectory: ObjCBool = false
            if manager.fileExists(atPath: output.path, isDirectory: &isDirectory), !isDirectory.boolValue {
                throw OrthofuseError("\(FileBytes.displayPath(output)): exists and is not a folder; not replaced")
            }
            if let existing = try? manager.contentsOfDirectory(atPath: output.path), !existing.isEmpty {
                throw OrthofuseError("\(FileBytes.displayPath(output)): exists and is not empty; choose a new folder for the sharded output")
            }
            let parent = output.deletingLastPathComponent()
            try FileSystemMessage.createDirectory(parent)
            url = parent.appendingPathComponent(".\(output.lastPathComponent).tmp-\(getpid())")
            try? manager.removeItem(at: url)
            try FileSystemMessage.createDirectory(url)
        }

        /// A folder another process staged (its `url`, as that process made it).
        public init(existing url: URL) {
            self.url = url
            published = true  // not this process's to remove
        }

        deinit {
            if !published { try? FileManager.default.removeItem(at: url) }
        }

        func publish(as output: URL) throws {
            let manager = FileManager.default
            if manager.fileExists(atPath: output.path) { try manager.removeItem(at: output) }  // empty, checked in init
            try manager.moveItem(at: url, to: output)
            published = true
        }
    }

    /// Consecutive index ranges, each at most `shardSize` bytes unless one tensor is larger.
    static func shardPlan(_ sizes: [Int], shardSize: Int) -> [Range<Int>] {
        var groups: [Range<Int>] = []
        var start = 0
        var bytes = 0
        for (i, size) in sizes.enumerated() {
            if i > start, bytes + size > shardSize {
                groups.append(start..<i)
                start = i
                bytes = 0
            }
            bytes += size
        }
        if start < sizes.count { groups.append(start..<sizes.count) }
        return groups
    }

    /// The bytes a tensor takes in its file.
    static func storedBytes(_ entry: SafetensorsStreamWriter.Entry) -> Int {
        (Safetensors.elementCount(of: entry.shape) ?? 0) * (SafetensorsDType(rawValue: entry.dtype)?.byteWidth ?? 4)
    }
}
