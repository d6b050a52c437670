// OrthofuseError: the one error type users see; its message is a single, self-contained line.

/// An error whose `description` is the one line the user reads (file or key path first).
public struct OrthofuseError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// Thrown on ranks other than 0 when a phase failed somewhere: rank 0 reports the reason, the
/// others exit non-zero without adding per-rank noise.
public struct PeerFailure: Error, CustomStringConvertible, Sendable {
    public init() {}
    public var description: String { "another rank failed (reported by rank 0)" }
}
