// JobConfig+Hash: the job's identity, the SHA-256 of its canonical text.
import Core

extension JobConfig {
    /// SHA-256 of the canonical, fully-defaulted job text: two ranks run the same job exactly
    /// when their hashes agree.
    public var configHash: String { Checksum.sha256(canonicalYAML) }
}
