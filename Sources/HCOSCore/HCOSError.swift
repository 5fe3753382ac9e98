import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

/// The package-wide error: a code a caller can switch on, a message that says what failed and
/// why, and the lower-level cause (a `SystemError`, a parse error, ...). Module-specific errors
/// carry their own context and are wrapped as the cause.
public struct HCOSError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case invalidArgument = "invalid argument"
        case invalidConfig = "invalid configuration"
        case missingTool = "missing tool"
        case notFound = "not found"
        case io = "I/O error"
        case corrupt = "corrupt data"
        case toolFailed = "tool failed"
        case timeout = "timed out"
        case unsupported = "unsupported"
        case noSpace = "no space"
        case ambiguous = "ambiguous"
        case inUse = "in use"
    }

    public let code: Code
    public let message: String
    public let cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        guard let cause else { return message }
        return "\(message): \(cause)"
    }
}

/// A failed system call, with errno and the object it was about.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32
    public let subject: String?

    public init(_ call: String, errno: Int32, subject: String? = nil) {
        self.call = call
        self.errno = errno
        self.subject = subject
    }

    public var description: String {
        let reason = String(cString: strerror(errno))
        if let subject { return "\(call) \(subject): \(reason) (errno \(errno))" }
        return "\(call): \(reason) (errno \(errno))"
    }
}
