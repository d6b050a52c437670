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

    public var isSharded: Bool { shards.count != 1 || shards[0] != url }

    /// Opens `url` (a file, or a folder with the index) and checks its index against the shards'
    /// headers: every entry's tensor is in the shard it names, no shard holds a tensor the index
    /// does not list or lists elsewhere, no shard path leaves the folder.
    public static func open(_ url: URL) throws -> Checkpoint {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            return Checkpoint(url: url, shards: [url], header: try Safetensors.readHeader(url),
                              shardOfTensor: [:])
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
        for (shardIndex, name) in shardNames.enumerated() {
            guard !name.contains("/"), !name.hasPrefix("."), !name.isEmpty else {
                throw OrthofuseError("\(path): shard \(MessageText.quoted(name)) is not a file name in the folder")
            }
            let shard = try Safetensors.readHeader(url.appendingPathComponent(name))
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
                          shardOfTensor: shardOfTensor)
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

    /// Every tensor as Float values, in `header` order, with the first shard's metadata.
    public func read() throws -> SafetensorsFile {
        guard isSharded else { return try Safetensors.read(url) }
        var tensors: [TensorRecord] = []
        for shard in shards { tensors += try Safetensors.read(shard).tensors }
        return SafetensorsFile(tensors: tensors, metadata: header.metadata)
    }

    /// The stored bytes of the tensors `names`, as they are in their files.
    public func rawBytes(of names: Set<String>) throws -> [String: [UInt8]] {
        guard isSharded else { return try Safetensors.rawBytes(of: names, in: url) }
        var bytes: [String: [UInt8]] = [:]
        for (index, shard) in shards.enumerated() {
            let wanted = names.filter { shardOfTensor[$0] == index }
            if !wanted.isEmpty { bytes.merge(try Safetensors.rawBytes(of: wanted, in: shard)) { first, _ in first } }
        }
        return bytes
    }

    /// The folder's files that are neither the index nor a shard (config.json, tokenizer files…),
    /// which a merged folder carries over from the base.
    public var companionFiles: [URL] {
        guard isSharded else { return [] }
        let shardNames = Set(shards.map(\.lastPathComponent))
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        return names.sorted().filter { name in
            !name.hasPrefix(".") && name != Self.indexName && !shardNames.contains(name)
                && FileManager.default.fileExists(atPath: url.appendingPathComponent(name).path)
                && !((try? url.appendingPathComponent(name).resourceValues(forKeys: [.isDirectoryKey]))?.isDirectory ?? true)
        }.map { url.appendingPathComponent($0) }
    }

    // MARK: Writing

    /// Writes `records` as a Hugging Face folder: shards `model-0000i-of-0000n.safetensors` of at
    /// most `shardSize` bytes of tensor data each (a larger tensor gets a shard of its own), the
    /// index with `metadata.total_size`, and `companions` copied in. The folder is built under a
    /// temporary name beside `folder` and renamed into place: readers never see half of it.
    /// `folder` must not exist or be empty. Returns the number of shards.
    @discardableResult
    public static func writeSharded(_ records: [TensorRecord], metadata: [String: String], shardSize: Int,
                                    companions: [URL], to folder: URL) throws -> Int {
        let shardsOfRecords = shardPlan(records, shardSize: shardSize)
        let manager = FileManager.default
        if let existing = try? manager.contentsOfDirectory(atPath: folder.path), !existing.isEmpty {
            throw OrthofuseError("\(FileBytes.displayPath(folder)): exists and is not empty; choose a new folder for the sharded output")
        }
        let parent = folder.deletingLastPathComponent()
        try FileSystemMessage.createDirectory(parent)
        let staging = parent.appendingPathComponent(".\(folder.lastPathComponent).tmp-\(getpid())")
        try? manager.removeItem(at: staging)
        try FileSystemMessage.createDirectory(staging)
        do {
            var weightMap: [String: String] = [:]
            var totalSize = 0
            for (index, group) in shardsOfRecords.enumerated() {
                let name = String(format: "model-%05d-of-%05d.safetensors", index + 1, shardsOfRecords.count)
                try Safetensors.write(group, metadata: metadata, to: staging.appendingPathComponent(name))
                for record in group { weightMap[record.name] = name }
                totalSize += group.reduce(0) { $0 + storedBytes($1) }
            }
            let index: [String: Any] = ["metadata": ["total_size": totalSize], "weight_map": weightMap]
            let json = try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
            try AtomicFile.write(json, to: staging.appendingPathComponent(indexName))
            for companion in companions {
                try manager.copyItem(at: companion, to: staging.appendingPathComponent(companion.lastPathComponent))
            }
            if manager.fileExists(atPath: folder.path) { try manager.removeItem(at: folder) }  // empty, checked above
            try manager.moveItem(at: staging, to: folder)
            return shardsOfRecords.count
        } catch {
            try? manager.removeItem(at: staging)
            throw error
        }
    }

    /// Consecutive groups of records, each at most `shardSize` bytes unless one record is larger.
    static func shardPlan(_ records: [TensorRecord], shardSize: Int) -> [[TensorRecord]] {
        var groups: [[TensorRecord]] = []
        var current: [TensorRecord] = []
        var bytes = 0
        for record in records {
            let size = storedBytes(record)
            if !current.isEmpty, bytes + size > shardSize {
                groups.append(current)
                current = []
                bytes = 0
            }
            current.append(record)
            bytes += size
        }
        if !current.isEmpty { groups.append(current) }
        return groups
    }

    /// The bytes a record takes in its file (its raw bytes, or its values in its output dtype).
    static func storedBytes(_ record: TensorRecord) -> Int {
        if let raw = record.rawBytes { return raw.count }
        return record.values.count * (SafetensorsDType(rawValue: record.outputDType)?.byteWidth ?? 4)
    }
}
