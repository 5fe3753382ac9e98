import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// A minimal HTTP/1.1 client (RFC 9112) over a Unix socket: one connection per request, closed
/// after the response. hcosctl talks to os-agent with it.
public struct UnixHTTPClient: Sendable {
    public var socketPath: String
    /// Seconds the whole exchange may take, connecting to the last byte of the response.
    public var timeout: Double
    /// A larger response is refused rather than buffered (the agent answers small JSON documents).
    public var maxResponseBytes = 64 * 1024 * 1024

    public init(socketPath: String, timeout: Double = 30) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    /// Sends one request and reads its response (Content-Length, chunked, or until close).
    /// Any status comes back as is; only failures to exchange a well-formed message throw.
    public func request(
        _ method: String, _ path: String, body: [UInt8]? = nil, headers: [(String, String)] = []
    ) throws -> (status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        let bytes = try encodeRequest(method, path, body: body, headers: headers)
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        let fd = try connect()
        defer { close(fd) }
        do {
            try UnixSocket.writeAll(fd, bytes)
        } catch let error as SystemError where error.errno == EPIPE || error.errno == ECONNRESET {
            // The server answered and closed before reading everything (a 403, a 413, a 503):
            // its response is still there to read.
        } catch let error as SystemError where error.errno == EAGAIN {
            throw AgentHTTPError.timedOut(socketPath: socketPath, seconds: timeout)
        } catch let error as SystemError {
            throw AgentHTTPError.connection(socketPath: socketPath, cause: error)
        }
        var reader = SocketReader(fd: fd, deadline: deadline)
        do {
            return try readResponse(&reader, method: method)
        } catch {
            throw clientError(error)
        }
    }

    /// Sends `body` as JSON (none when nil) and decodes a 2xx JSON response; any other status
    /// throws `AgentHTTPError.status` with the server's error code and message.
    public func json<Response: Decodable>(_ method: String, _ path: String, body: (some Encodable)?) throws -> Response
    {
        var bytes: [UInt8]?
        if let body {
            do {
                bytes = try JSONCoding.encode(body)
            } catch {
                throw AgentHTTPError.json("cannot encode the body of \(method) \(path): \(error)")
            }
        }
        var headers = [("Accept", "application/json")]
        if bytes != nil { headers.append(("Content-Type", "application/json")) }
        let response = try request(method, path, body: bytes, headers: headers)
        guard (200..<300).contains(response.status) else {
            throw Self.statusError(response.status, body: response.body)
        }
        do {
            return try JSONCoding.decode(Response.self, from: response.body)
        } catch {
            throw AgentHTTPError.json("cannot decode the response to \(method) \(path): \(error)")
        }
    }

    /// `json(_:_:body:)` without a body (`GET`, `DELETE`, a `POST` that carries none).
    public func json<Response: Decodable>(_ method: String, _ path: String) throws -> Response {
        try json(method, path, body: String?.none)
    }

    // MARK: Internals

    private func connect() throws -> Int32 {
        do {
            return try UnixSocket.connect(path: socketPath, timeout: timeout)
        } catch let error as SystemError {
            switch error.errno {
            case ENOENT:
                throw AgentHTTPError.notRunning(socketPath: socketPath, reason: "does not exist")
            case ECONNREFUSED:
                throw AgentHTTPError.notRunning(socketPath: socketPath, reason: "exists but nothing listens on it")
            case EACCES, EPERM:
                throw AgentHTTPError.permissionDenied(socketPath: socketPath)
            case EAGAIN:
                throw AgentHTTPError.timedOut(socketPath: socketPath, seconds: timeout)
            default:
                throw AgentHTTPError.connection(socketPath: socketPath, cause: error)
            }
        } catch {
            throw AgentHTTPError.invalidRequest("\(error)")
        }
    }

    private func encodeRequest(_ method: String, _ path: String, body: [UInt8]?, headers: [(String, String)])
        throws -> [UInt8]
    {
        guard HTTPSyntax.isToken(method.utf8) else { throw AgentHTTPError.invalidRequest("bad method \(method)") }
        guard path.hasPrefix("/"), path.utf8.allSatisfy(HTTPSyntax.isTargetChar) else {
            throw AgentHTTPError.invalidRequest("the path must start with / and be percent-encoded: \(path)")
        }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\n"
        for (name, value) in headers {
            guard HTTPSyntax.isToken(name.utf8), value.utf8.allSatisfy(HTTPSyntax.isFieldValueChar) else {
                throw AgentHTTPError.invalidRequest("bad header \(name)")
            }
            let lower = HTTPSyntax.lowercased(name)
            guard !["host", "content-length", "transfer-encoding", "connection"].contains(lower) else { continue }
            head += "\(name): \(value)\r\n"
        }
        if let body {
            head += "Content-Length: \(body.count)\r\n"
        } else if ["POST", "PUT", "PATCH"].contains(method) {
            head += "Content-Length: 0\r\n"
        }
        head += "Connection: close\r\n\r\n"
        return Array(head.utf8) + (body ?? [])
    }

    private func readResponse(_ reader: inout SocketReader, method: String) throws(MessageError) -> (
        status: Int, headers: [(name: String, value: String)], body: [UInt8]
    ) {
        while true {
            guard let head = try reader.readHead(limit: 64 * 1024) else {
                throw .invalid(0, "", "the connection closed without a response")
            }
            let lines = try HTTPSyntax.lines(head[...])
            let status = try Self.statusCode(lines[0])
            var headers: [(name: String, value: String)] = []
            for line in lines.dropFirst() { headers.append(try HTTPSyntax.field(line)) }
            // Interim responses (100 Continue) precede the final one.
            if (100..<200).contains(status) { continue }
            let framing = try Self.framing(status: status, method: method, headers: headers)
            let body = try reader.readBody(framing, limit: maxResponseBytes, trailerLimit: 64 * 1024)
            return (status, headers, body)
        }
    }

    /// status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ]
    private static func statusCode(_ line: ArraySlice<UInt8>) throws(MessageError) -> Int {
        let bytes = Array(line)
        guard bytes.count >= 12, bytes.starts(with: Array("HTTP/1.".utf8)), bytes[8] == HTTPSyntax.space,
            bytes.count == 12 || bytes[12] == HTTPSyntax.space,
            let status = Int(String(decoding: bytes[9..<12], as: UTF8.self)), (100...599).contains(status)
        else {
            throw .invalid(0, "", "bad status line \(HTTPSyntax.quoted(line))")
        }
        return status
    }

    /// Response body length (RFC 9112 §6.3).
    private static func framing(status: Int, method: String, headers: [(name: String, value: String)])
        throws(MessageError) -> BodyFraming
    {
        if method == "HEAD" || status == 204 || status == 304 { return .none }
        let codings = headers.filter { HTTPSyntax.equalsIgnoringCase($0.name, "transfer-encoding") }
            .flatMap { HTTPSyntax.listElements($0.value) }.map(HTTPSyntax.lowercased)
        if !codings.isEmpty {
            guard codings == ["chunked"] else {
                throw .invalid(0, "", "unsupported transfer coding \(codings.joined(separator: ", "))")
            }
            return .chunked
        }
        let lengths = Set(
            headers.filter { HTTPSyntax.equalsIgnoringCase($0.name, "content-length") }.map(\.value))
        guard let length = lengths.first else { return .untilClose }
        guard lengths.count == 1, let count = Int(length), count >= 0 else {
            throw .invalid(0, "", "bad Content-Length \(lengths.sorted().joined(separator: ", "))")
        }
        return .length(count)
    }

    private func clientError(_ error: MessageError) -> AgentHTTPError {
        switch error {
        case .invalid(_, _, let reason):
            .malformedResponse(socketPath: socketPath, reason: reason)
        case .timedOut, .woken:
            .timedOut(socketPath: socketPath, seconds: timeout)
        case .closed:
            .malformedResponse(socketPath: socketPath, reason: "the connection closed before the response was complete")
        case .io(let cause):
            .connection(socketPath: socketPath, cause: cause)
        }
    }

    /// The server's error body when it sent one; otherwise the status and what text came back.
    static func statusError(_ status: Int, body: [UInt8]) -> AgentHTTPError {
        if let decoded = try? JSONCoding.decode(ErrorBody.self, from: body) {
            return .status(status, code: decoded.error.code, message: decoded.error.message)
        }
        let printable = body.prefix(512).drop { $0 <= HTTPSyntax.space }.reversed().drop { $0 <= HTTPSyntax.space }
        let text = String(decoding: printable.reversed(), as: UTF8.self)
        return .status(status, code: "http_\(status)", message: text.isEmpty ? HTTPResponse.reason(status) : text)
    }
}
