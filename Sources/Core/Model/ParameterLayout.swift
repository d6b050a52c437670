// ParameterLayout: the one list of a model's named tensors and their offsets in a flat buffer.

/// One named parameter tensor, with PyTorch's shape convention (Linear weight is [out, in]).
public struct ParameterSpec: Sendable, Equatable {
    public let name: String
    public let shape: [Int]

    public init(name: String, shape: [Int]) {
        self.name = name
        self.shape = shape
    }

    public var count: Int { shape.reduce(1, *) }
    /// A weight matrix: what OrthoReg and TSV act on.
    public var isMatrix: Bool { shape.count == 2 }
}

/// Parameters, gradients, optimizer moments and task vectors all share this flat layout, so the
/// optimizer, OrthoReg and merging are loops over buffers; names and shapes are declared once.
public struct ParameterLayout: Sendable, Equatable {
    public let specs: [ParameterSpec]
    public let offsets: [Int]
    public let totalCount: Int
    private let indexByName: [String: Int]

    public init(_ specs: [ParameterSpec]) {
        self.specs = specs
        var offsets: [Int] = []
        var total = 0
        for spec in specs {
            offsets.append(total)
            total += spec.count
        }
        self.offsets = offsets
        totalCount = total
        var index: [String: Int] = [:]
        for (i, spec) in specs.enumerated() {
            precondition(index[spec.name] == nil, "duplicate parameter name \(spec.name)")
            index[spec.name] = i
        }
        indexByName = index
    }

    public func index(of name: String) -> Int? { indexByName[name] }

    public func range(of name: String) -> Range<Int>? {
        guard let i = indexByName[name] else { return nil }
        return offsets[i]..<(offsets[i] + specs[i].count)
    }

    public func range(at index: Int) -> Range<Int> {
        offsets[index]..<(offsets[index] + specs[index].count)
    }

    /// Splits a flat buffer into named tensors (for saving).
    public func records(from values: UnsafeBufferPointer<Float>) -> [TensorRecord] {
        precondition(values.count == totalCount, "buffer does not match the layout")
        return specs.enumerated().map { i, spec in
            TensorRecord(name: spec.name, shape: spec.shape, values: Array(values[range(at: i)]))
        }
    }

    public func records(from buffer: FloatBuffer) -> [TensorRecord] {
        records(from: UnsafeBufferPointer(buffer.buffer))
    }

    /// Weights must be numbers: a NaN or ±inf in a model file is named here, at the file, rather
    /// than surfacing later as "loss became nan" or as accuracies of a broken model.
    public static func checkFinite(_ values: FloatBuffer, tensor: String, origin: String) throws {
        try checkFinite(values.pointer, count: values.count, tensor: tensor, origin: origin)
    }

    public static func checkFinite(_ values: [Float], tensor: String, origin: String) throws {
        try values.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            try checkFinite(base, count: buffer.count, tensor: tensor, origin: origin)
        }
    }

    /// The same for `count` values that start at flat index `firstIndex` of the tensor.
    static func checkFinite(_ values: UnsafePointer<Float>, count: Int, tensor: String, origin: String, firstIndex: Int = 0) throws {
        if let index = ElementWise.firstNonFinite(values, count: count) {
            throw OrthofuseError("\(origin): tensor '\(tensor)' holds a non-finite value (\(values[index])) at flat index \(firstIndex + index)")
        }
    }

    /// Loads a backbone's θ from a model file: one holding this layout's tensors (and perhaps a
    /// task head's head.* tensors, ignored), or a whole CLIP state dict, whose image tower is
    /// under `visual.` and whose text tower (every other tensor) is ignored.
    public func loadBackbone(_ file: SafetensorsFile, into destination: FloatBuffer, origin: String) throws {
        let tower = "visual."
        if let first = specs.first, file[first.name] == nil, file[tower + first.name] != nil {
            try load(file, into: destination, origin: origin, prefix: tower)
        } else {
            try load(file, into: destination, origin: origin, ignoringPrefixes: ["head."])
        }
    }

    /// Fills a flat buffer from named tensors, strictly: every parameter must be present with
    /// its exact shape. Extra tensors are an error unless `ignoringPrefixes` lists their prefix.
    /// With `prefix`, parameter `name` is read from tensor `prefix + name`, and only tensors under
    /// that prefix count as extra.
    public func load(
        _ file: SafetensorsFile, into destination: FloatBuffer, origin: String, ignoringPrefixes: [String] = [],
        prefix: String = ""
    ) throws {
        precondition(destination.count == totalCount, "buffer does not match the layout")
        for (i, spec) in specs.enumerated() {
            let name = prefix + spec.name
            guard let record = file[name] else {
                throw OrthofuseError("\(origin): tensor '\(name)' missing (expected shape \(spec.shape))")
            }
            guard record.shape == spec.shape else {
                throw OrthofuseError(
                    "\(origin): tensor '\(name)' has shape \(record.shape), the model needs \(spec.shape)")
            }
            try Self.checkFinite(record.values, tensor: name, origin: origin)
            let offset = offsets[i]
            record.values.withUnsafeBufferPointer { source in
                if let base = source.baseAddress { (destination.pointer + offset).update(from: base, count: spec.count) }
            }
        }
        for record in file.tensors where record.name.hasPrefix(prefix) && indexByName[String(record.name.dropFirst(prefix.count))] == nil {
            if ignoringPrefixes.contains(where: { record.name.hasPrefix($0) }) { continue }
            throw OrthofuseError("\(origin): unexpected tensor '\(record.name)' (not a parameter of this model)")
        }
    }
}
