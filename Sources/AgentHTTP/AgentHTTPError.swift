import HCOSCore

/// What can go wrong talking HTTP over os-agent's socket, on either side.
public enum AgentHTTPError: Error, CustomStringConvertible, Sendable {
    /// The server could not take its socket (the path is not a socket, another server is live
    /// on it, the directory is missing, ...).
    case listen(path: String, cause: any Error & Sendable)
    /// Nothing serves the socket: the file is missing or nobody listens on it.
    case notRunning(socketPath: String, reason: String)
    /// The socket exists but the caller may not connect to it (it is root's, mode 0600).
    case permissionDenied(socketPath: String)
    /// Connecting, sending or receiving failed.
    case connection(socketPath: String, cause: SystemError)
    /// The server did not answer within the client's timeout.
    case timedOut(socketPath: String, seconds: Double)
    /// The bytes that came back are not an HTTP/1.1 response.
    case malformedResponse(socketPath: String, reason: String)
    /// The request cannot be sent as given (bad method token, bad path, a header with CR/LF).
    case invalidRequest(String)
    /// A JSON body could not be encoded, or a 2xx response body could not be decoded.
    case json(String)
    /// The server answered with a non-2xx status; `code` and `message` come from its JSON error
    /// body (`{"error":{"code":..,"message":..,"status":..}}`), or are derived from the status.
    case status(Int, code: String, message: String)

    /// The HTTP status of a `.status` error.
    public var status: Int? {
        if case .status(let status, _, _) = self { return status }
        return nil
    }

    public var description: String {
        switch self {
        case .listen(let path, let cause):
            "cannot listen on \(path): \(cause)"
        case .notRunning(let path, let reason):
            "os-agent is not running: \(path) \(reason)"
        case .permissionDenied(let path):
            "permission denied connecting to \(path) (the agent socket is root's; run as root)"
        case .connection(let path, let cause):
            "connection to \(path) failed: \(cause)"
        case .timedOut(let path, let seconds):
            "no answer from \(path) within \(seconds.formatted()) s"
        case .malformedResponse(let path, let reason):
            "malformed HTTP response from \(path): \(reason)"
        case .invalidRequest(let reason):
            "invalid request: \(reason)"
        case .json(let reason):
            reason
        case .status(let status, let code, let message):
            "\(message) (HTTP \(status) \(code))"
        }
    }
}

extension Double {
    /// 30 rather than 30.0; 0.5 stays 0.5.
    fileprivate func formatted() -> String {
        rounded() == self && abs(self) < 1e15 ? String(Int(self)) : String(self)
    }
}
