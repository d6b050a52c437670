// OutputDType: the dtype a merged checkpoint's floating tensors are stored in (`merge --dtype`).
// The arithmetic is Float32 whatever the choice; F16 and BF16 are rounded to nearest even.

public enum OutputDType: String, Sendable, CaseIterable {
    /// Each tensor in the base's dtype for it (F32, F16, BF16 or F64).
    case auto
    case float32
    case bfloat16
    case float16

    /// The safetensors dtype of a floating tensor whose base tensor is `baseDType`.
    public func stored(forBase baseDType: String) -> String {
        switch self {
        case .auto: baseDType
        case .float32: "F32"
        case .bfloat16: "BF16"
        case .float16: "F16"
        }
    }
}
