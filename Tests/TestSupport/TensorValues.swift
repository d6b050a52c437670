// TensorValues: a safetensors file as name → values, the form in which tests compare checkpoints.
import Core
import Foundation

/// Every tensor of the file at `url`, by name, as Float32 values.
public func tensorValues(at url: URL) throws -> [String: [Float]] {
    Dictionary(uniqueKeysWithValues: try Safetensors.read(url).tensors.map { ($0.name, $0.values) })
}
