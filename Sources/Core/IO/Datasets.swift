// Datasets: the in-memory classification dataset and its loaders for .npz and IDX (MNIST) files.
import Foundation

/// Where a dataset comes from.
public enum DatasetSource: Sendable, Equatable {
    /// An .npz archive with arrays `x` (samples, shape [N, ...]) and `y` (integer labels, shape [N]).
    case npz(URL)
    /// A pair of IDX files (raw or gzip-compressed), as MNIST is distributed.
    case idx(images: URL, labels: URL)
    /// Several .npz archives of one split (shards of an export), their samples in this order.
    case npzShards([URL])

    /// The files this source reads.
    public var urls: [URL] {
        switch self {
        case let .npz(url): [url]
        case let .idx(images, labels): [images, labels]
        case let .npzShards(urls): urls
        }
    }
}

/// Per-channel input normalisation (`tasks[].normalize`), applied after uint8 pixels are
/// divided by 255: CLIP's is mean (0.48145466, 0.4578275, 0.40821073), std (0.26862954,
/// 0.26130258, 0.27577711).
public struct ChannelNormalization: Sendable, Equatable, CustomStringConvertible {
    public var mean: [Float]
    public var std: [Float]

    public init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }

    public var description: String { "normalize mean \(mean) std \(std)" }

    /// The channels of a model input: C of [C, H, W], else 1.
    public static func channels(of inputShape: [Int]) -> Int { inputShape.count == 3 ? inputShape[0] : 1 }
}

/// Samples with their integer class labels. Inputs are row-major, `count × featureCount`.
public struct Dataset: Sendable, Equatable {
    public internal(set) var inputs: [Float]
    public internal(set) var labels: [Int32]
    public internal(set) var count: Int
    /// The shape of one sample, e.g. [28, 28]; `featureCount` is its element count.
    public let sampleShape: [Int]
    public let featureCount: Int

    public init(inputs: [Float], labels: [Int32], sampleShape: [Int]) {
        let featureCount = sampleShape.reduce(1, *)
        precondition(sampleShape.allSatisfy { $0 >= 0 }, "Dataset: negative dimension in sample shape \(sampleShape)")
        precondition(inputs.count == labels.count * featureCount,
                     "Dataset: \(inputs.count) inputs do not match \(labels.count) labels of \(featureCount) features")
        self.inputs = inputs
        self.labels = labels
        self.count = labels.count
        self.sampleShape = sampleShape
        self.featureCount = featureCount
    }

    /// The same images with channels first: samples [H, W, C] (as image files and most .npz
    /// exports store them) become [C, H, W], as the ViT reads them.
    public func channelsFirst() -> Dataset {
        precondition(sampleShape.count == 3)
        let (height, width, channels) = (sampleShape[0], sampleShape[1], sampleShape[2])
        var moved = [Float](repeating: 0, count: inputs.count)
        for sample in 0..<count {
            let start = sample * featureCount
            for y in 0..<height {
                for x in 0..<width {
                    for c in 0..<channels {
                        moved[start + (c * height + y) * width + x] = inputs[start + (y * width + x) * channels + c]
                    }
                }
            }
        }
        return Dataset(inputs: moved, labels: labels, sampleShape: [channels, height, width])
    }

    /// The samples as a model reading `inputShape` takes them: images stored channels last
    /// [H, W, C] for a model reading [C, H, W] are transposed; anything else is left as it is.
    public func arranged(for inputShape: [Int]) -> Dataset {
        guard inputShape.count == 3, sampleShape != inputShape,
              sampleShape == [inputShape[1], inputShape[2], inputShape[0]] else { return self }
        return channelsFirst()
    }

    /// Inputs normalised per channel, (x − mean[c]) / std[c], for a model reading `inputShape`
    /// (channels first, each a contiguous plane); one mean and std apply to every channel.
    public func normalized(_ normalization: ChannelNormalization, for inputShape: [Int]) -> Dataset {
        let channels = ChannelNormalization.channels(of: inputShape)
        precondition(normalization.mean.count == normalization.std.count
                     && (normalization.mean.count == 1 || normalization.mean.count == channels))
        let plane = featureCount / channels
        var values = inputs
        for sample in 0..<count {
            for c in 0..<channels {
                let k = normalization.mean.count == 1 ? 0 : c
                let mean = normalization.mean[k], std = normalization.std[k]
                let start = sample * featureCount + c * plane
                for i in start..<(start + plane) { values[i] = (values[i] - mean) / std }
            }
        }
        return Dataset(inputs: values, labels: labels, sampleShape: sampleShape)
    }

    /// The samples at `indices`, in that order (repeats allowed).
    public func subset(_ indices: [Int]) -> Dataset {
        let featureCount = featureCount, count = count
        let selectedInputs = inputs.withUnsafeBufferPointer { source in
            [Float](unsafeUninitializedCapacity: indices.count * featureCount) { selected, initialized in
                for (row, index) in indices.enumerated() {
                    precondition(index >= 0 && index < count, "Dataset.subset: index \(index) out of range 0..<\(count)")
                    (selected.baseAddress! + row * featureCount)
                        .initialize(from: source.baseAddress! + index * featureCount, count: featureCount)
                }
                initialized = indices.count * featureCount
            }
        }
        return Dataset(inputs: selectedInputs, labels: indices.map { labels[$0] }, sampleShape: sampleShape)
    }

    public static func load(_ source: DatasetSource) throws -> Dataset {
        switch source {
        case .npz(let url): return try loadNPZ(url)
        case .idx(let images, let labels): return try loadIDX(images: images, labels: labels)
        case .npzShards(let urls): return try concatenated(urls.map(loadNPZ), names: urls.map(FileBytes.displayPath))
        }
    }

    /// The shards' samples one after another; every shard's samples must have the first's shape.
    private static func concatenated(_ shards: [Dataset], names: [String]) throws -> Dataset {
        let shape = shards[0].sampleShape
        if let index = shards.firstIndex(where: { $0.sampleShape != shape }) {
            throw OrthofuseError("\(names[index]): samples have shape \(shards[index].sampleShape), the split's first shard \(names[0]) has \(shape)")
        }
        try checkBudget(inputs: shards.reduce(0) { $0 + $1.inputs.count }, labels: shards.reduce(0) { $0 + $1.count },
                        what: names[0])
        return Dataset(inputs: shards.flatMap(\.inputs), labels: shards.flatMap(\.labels), sampleShape: shape)
    }

    /// The dataset as floats and labels (with the raw bytes alive while converting) must fit.
    private static func checkBudget(inputs: Int, labels: Int, what: String) throws {
        let (floats, overflow) = inputs.multipliedReportingOverflow(by: 2 * MemoryLayout<Float>.stride)
        try MemoryBudget.check(overflow ? Int.max : floats + labels * 8, for: "\(what): loading the dataset")
    }

    /// Loads `x` (float32 as is, float64 converted, uint8 divided by 255) and `y` (any integer dtype).
    public static func loadNPZ(_ url: URL) throws -> Dataset {
        let path = FileBytes.displayPath(url)
        // Checked on the headers, before either array is inflated.
        let arrays = try NumpyArchive.readArrays(url, names: ["x", "y"]) { declared in
            let x = declared["x"]!, y = declared["y"]!
            guard !x.shape.isEmpty else {
                throw OrthofuseError("\(path): array 'x' is 0-dimensional; expected shape (N, ...)")
            }
            guard y.shape.count == 1 else {
                throw OrthofuseError("\(path): array 'y' has shape \(NumpyArray.describeShape(y.shape)); expected (N,)")
            }
            guard x.shape[0] == y.shape[0] else {
                throw OrthofuseError("\(path): array 'x' has \(x.shape[0]) samples but 'y' has \(y.shape[0]) labels")
            }
            try checkBudget(inputs: x.elementCount, labels: y.elementCount, what: path)
        }
        let x = arrays["x"]!, y = arrays["y"]!
        let inputs: [Float]
        switch x.elementType {
        case .float32, .float64: inputs = x.floatValues()
        case .uint8: inputs = x.floatValues(scaleBytes: true)
        default:
            throw OrthofuseError("\(path): array 'x' has dtype \(x.descr); expected float32, float64 or uint8")
        }
        guard y.elementType.isInteger else {
            throw OrthofuseError("\(path): array 'y' has dtype \(y.descr); labels must be integers")
        }
        return try assemble(inputs: inputs, mayHoldNonFinite: x.elementType != .uint8, labels: y.int32Values(), shape: x.shape,
                            inputsName: "\(path): array 'x'", labelsName: "\(path): array 'y'")
    }

    /// Loads MNIST-style IDX files: images of unsigned bytes (divided by 255) or floats, shape [N, ...],
    /// and integer labels, shape [N].
    public static func loadIDX(images: URL, labels: URL) throws -> Dataset {
        let imagesPath = FileBytes.displayPath(images), labelsPath = FileBytes.displayPath(labels)
        // The headers first: sizes that disagree are an error before anything is inflated.
        let imageHeader = try IDXArray.readHeader(images)
        let labelHeader = try IDXArray.readHeader(labels)
        guard imageHeader.elementType == .uint8 || imageHeader.elementType == .float32 || imageHeader.elementType == .float64 else {
            throw OrthofuseError("\(imagesPath): IDX images of \(imageHeader.elementType.name) are not supported (expected unsigned byte or float)")
        }
        guard labelHeader.dimensions.count == 1 else {
            throw OrthofuseError("\(labelsPath): IDX labels have \(labelHeader.dimensions.count) dimensions \(Safetensors.describe(labelHeader.dimensions)); expected 1")
        }
        guard imageHeader.dimensions[0] == labelHeader.dimensions[0] else {
            throw OrthofuseError("\(imagesPath): \(imageHeader.dimensions[0]) images but \(labelsPath) has \(labelHeader.dimensions[0]) labels")
        }
        try checkBudget(inputs: imageHeader.elementCount, labels: labelHeader.elementCount, what: imagesPath)
        let imageArray = try IDXArray.read(images)
        let labelArray = try IDXArray.read(labels)
        return try assemble(inputs: imageArray.floatValues(scaleBytes: true), mayHoldNonFinite: imageArray.elementType != .uint8,
                            labels: labelArray.int32Values(),
                            shape: imageArray.dimensions, inputsName: imagesPath, labelsName: labelsPath)
    }

    /// Final checks shared by the loaders: at least one sample and one feature, finite inputs,
    /// non-negative labels (they index classes).
    private static func assemble(inputs: [Float], mayHoldNonFinite: Bool, labels: [Int32], shape: [Int],
                                 inputsName: String, labelsName: String) throws -> Dataset {
        guard shape[0] > 0 else { throw OrthofuseError("\(inputsName): holds no samples (N == 0)") }
        let sampleShape = Array(shape.dropFirst())
        guard !sampleShape.contains(0) else {
            throw OrthofuseError("\(inputsName): samples have no features (shape \(Safetensors.describe(shape)))")
        }
        if mayHoldNonFinite, let bad = inputs.firstIndex(where: { !$0.isFinite }) {
            let featureCount = inputs.count / shape[0]
            throw OrthofuseError("\(inputsName): non-finite value \(inputs[bad]) in sample \(bad / featureCount)")
        }
        if let bad = labels.firstIndex(where: { $0 < 0 }) {
            throw OrthofuseError("\(labelsName): negative label \(labels[bad]) at index \(bad)")
        }
        return Dataset(inputs: inputs, labels: labels, sampleShape: sampleShape)
    }
}
