// ModelConfig: the `model:` section (architecture and input shape) and the job's size limits.
import Core

/// Upper bounds on sizes in a job file. They refuse absurd inputs before anything is allocated,
/// and each error message states the bound it hit.
public enum JobLimits {
    public static let steps = 1_000_000_000
    public static let batchSize = 1 << 20
    public static let classes = 1 << 20
    public static let layerWidth = 1 << 16
    public static let inputFeatures = 1 << 26
    /// Entries of the largest single weight matrix (1 GiB of Float32).
    public static let matrixEntries = 1 << 28
    public static let layers = 256
    public static let inputRank = 8
    public static let tokens = 4096
    public static let tasks = 1024
    public static let alphaCount = 10_001
    public static let validationExamples = 1 << 30
    public static let blasThreads = 1024
    public static let loraRank = 1 << 12
}

public struct ModelConfig: Sendable, Equatable, Codable {
    /// Shape of one input example: any shape for an MLP (flattened), `[C, H, W]` for a ViT.
    public let input: [Int]
    public let architecture: Architecture

    public enum Architecture: Sendable, Equatable {
        case mlp(MLPShape)
        case vit(ViTShape)
        /// open_clip's image tower: a ViT with its names, ln_pre and the projection to output_dim.
        case clipViT(CLIPViTShape)
    }

    /// The word `arch:` takes.
    public enum ArchitectureName: String, Sendable, Codable, CaseIterable {
        case mlp, vit
        case clipViT = "clip_vit"
    }

    public var architectureName: ArchitectureName {
        switch architecture {
        case .mlp: .mlp
        case .vit: .vit
        case .clipViT: .clipViT
        }
    }

    /// Values per example once flattened (the MLP's first fan-in).
    public var inputFeatureCount: Int { input.reduce(1, *) }

    /// Width of the features the classification heads read.
    public var featureWidth: Int {
        switch architecture {
        case .mlp(let shape): shape.hidden.last!
        case .vit(let shape): shape.width
        case .clipViT(let shape): shape.outputDim
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case arch, input, hidden, activation, patch, width, depth, heads
        case mlpRatio = "mlp_ratio"
        case outputDim = "output_dim"

        static let mlpOnly: [CodingKeys] = [.hidden]
        static let vitOnly: [CodingKeys] = [.patch, .width, .depth, .heads, .mlpRatio]
        static let clipOnly: [CodingKeys] = [.outputDim]
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.strictContainer(keyedBy: CodingKeys.self)
        let arch = try container.choice(ArchitectureName.self, .arch)
        switch arch {
        case .mlp:
            try container.refuse(CodingKeys.vitOnly, because: "only allowed with arch: vit or clip_vit")
            try container.refuse(CodingKeys.clipOnly, because: "only allowed with arch: clip_vit")
            input = try container.integers(.input, each: 1...JobLimits.inputFeatures, counts: 1...JobLimits.inputRank)
        case .vit, .clipViT:
            try container.refuse(CodingKeys.mlpOnly, because: "only allowed with arch: mlp")
            if arch == .vit {
                try container.refuse([.activation], because: "only allowed with arch: mlp or clip_vit")
                try container.refuse(CodingKeys.clipOnly, because: "only allowed with arch: clip_vit")
            }
            input = try container.integers(.input, each: 1...JobLimits.inputFeatures, counts: 1...JobLimits.inputRank)
            try container.check(input.count == 3, .input, "must be [channels, height, width] with arch: \(arch.rawValue)")
        }
        var features = 1
        for size in input {
            features *= size
            try container.check(
                features <= JobLimits.inputFeatures, .input,
                "must have at most \(JobLimits.inputFeatures) values in total"
            )
        }
        switch arch {
        case .mlp:
            let shape = try MLPShape(from: decoder)
            var fanIn = features
            for (index, width) in shape.hidden.enumerated() {
                if fanIn * width > JobLimits.matrixEntries {
                    throw container.invalid(
                        .hidden, [AnyCodingKey.index(index)],
                        "a \(fanIn) x \(width) weight matrix exceeds \(JobLimits.matrixEntries) entries"
                    )
                }
                fanIn = width
            }
            architecture = .mlp(shape)
        case .vit:
            let shape = try ViTShape(from: decoder)
            try Self.checkTower(shape, input: input, container)
            architecture = .vit(shape)
        case .clipViT:
            let shape = try CLIPViTShape(from: decoder)
            try Self.checkTower(shape.tower, input: input, container)
            try container.check(
                shape.tower.width * shape.outputDim <= JobLimits.matrixEntries, .outputDim,
                "the projection exceeds \(JobLimits.matrixEntries) entries"
            )
            architecture = .clipViT(shape)
        }
    }

    /// The limits a ViT's sizes must keep, whichever flavor.
    private static func checkTower(_ shape: ViTShape, input: [Int], _ container: KeyedDecodingContainer<CodingKeys>) throws {
        let (channels, height, width) = (input[0], input[1], input[2])
        try container.check(
            height % shape.patch == 0 && width % shape.patch == 0, .patch,
            "must divide the image height and width (\(height) x \(width))"
        )
        let tokens = (height / shape.patch) * (width / shape.patch) + 1
        try container.check(
            tokens <= JobLimits.tokens, .patch,
            "gives \(tokens) tokens, more than \(JobLimits.tokens)"
        )
        try container.check(
            channels * shape.patch * shape.patch * shape.width <= JobLimits.matrixEntries, .patch,
            "the patch embedding exceeds \(JobLimits.matrixEntries) entries"
        )
        try container.check(
            shape.width * shape.width * shape.mlpRatio <= JobLimits.matrixEntries, .width,
            "the MLP weight matrices exceed \(JobLimits.matrixEntries) entries"
        )
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch architecture {
        case .mlp(let shape):
            try container.encode(ArchitectureName.mlp, forKey: .arch)
            try container.encode(input, forKey: .input)
            try shape.encode(to: encoder)
        case .vit(let shape):
            try container.encode(ArchitectureName.vit, forKey: .arch)
            try container.encode(input, forKey: .input)
            try shape.encode(to: encoder)
        case .clipViT(let shape):
            try container.encode(ArchitectureName.clipViT, forKey: .arch)
            try container.encode(input, forKey: .input)
            try shape.encode(to: encoder)
        }
    }
}

/// The MLP-only fields of `model:`. Decoded from the `model:` mapping, which checks the keys.
public struct MLPShape: Sendable, Equatable, Codable {
    /// Widths of the hidden layers; the last is the feature width the heads read.
    public let hidden: [Int]
    public let activation: Activation

    private typealias Keys = ModelConfig.CodingKeys

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        hidden = try container.integers(.hidden, each: 1...JobLimits.layerWidth, counts: 1...JobLimits.layers)
        activation = try container.choice(Activation.self, .activation, default: .relu)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(hidden, forKey: .hidden)
        try container.encode(activation, forKey: .activation)
    }
}

/// The ViT-only fields of `model:`. Decoded from the `model:` mapping, which checks the keys.
public struct ViTShape: Sendable, Equatable, Codable {
    /// Side of the square patches the image is cut into.
    public let patch: Int
    /// Token width (embedding dimension).
    public let width: Int
    /// Number of transformer blocks.
    public let depth: Int
    public let heads: Int
    /// Hidden width of each block's MLP as a multiple of `width`.
    public let mlpRatio: Int

    private typealias Keys = ModelConfig.CodingKeys

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        patch = try container.integer(.patch, in: 1...JobLimits.layerWidth)
        width = try container.integer(.width, in: 1...JobLimits.layerWidth)
        depth = try container.integer(.depth, in: 1...JobLimits.layers)
        heads = try container.integer(.heads, in: 1...width)
        try container.check(width % heads == 0, .heads, "must divide width (\(width))")
        mlpRatio = try container.integer(.mlpRatio, in: 1...16, default: 4)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(patch, forKey: .patch)
        try container.encode(width, forKey: .width)
        try container.encode(depth, forKey: .depth)
        try container.encode(heads, forKey: .heads)
        try container.encode(mlpRatio, forKey: .mlpRatio)
    }
}

/// The clip_vit fields of `model:`: the tower's ViT sizes, the output dimension E of `proj`, and the
/// blocks' activation (gelu, open_clip's default; quick_gelu for OpenAI's weights).
public struct CLIPViTShape: Sendable, Equatable, Codable {
    public let tower: ViTShape
    public let outputDim: Int
    public let activation: TransformerActivation

    private typealias Keys = ModelConfig.CodingKeys

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        tower = try ViTShape(from: decoder)
        outputDim = try container.integer(.outputDim, in: 1...JobLimits.layerWidth)
        activation = try container.choice(TransformerActivation.self, .activation, default: .gelu)
    }

    public func encode(to encoder: any Encoder) throws {
        try tower.encode(to: encoder)
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(outputDim, forKey: .outputDim)
        try container.encode(activation, forKey: .activation)
    }
}
