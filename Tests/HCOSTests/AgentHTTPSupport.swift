import AgentHTTP
import Foundation
import HCOSCore
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What the test handler echoes back for `/v1/echo`.
struct EchoReply: Codable, Equatable {
    var method: String
    var path: String
    var query: [String: String]
    var body: String
    var contentType: String?
    var pid: Int32
    var uid: UInt32
}

struct AgentStatus: Codable, Equatable {
    var state: String
}

/// A server on a fresh short socket path (sun_path holds 107 bytes), started on its own thread,
/// with a small router: /v1/status, /v1/echo, anything else 404.
final class HTTPTestServer: Sendable {
    let directory: String
    let path: String
    let server: UnixHTTPServer

    init(
        limits: UnixHTTPServer.Limits = .init(),
        authorize: @escaping @Sendable (PeerCredentials) -> Bool = { _ in true },
        extra: @escaping @Sendable (HTTPRequest) -> HTTPResponse? = { _ in nil }
    ) throws {
        directory = try httpScratchDirectory()
        path = directory + "/agent.sock"
        server = try UnixHTTPServer(
            path: path, limits: limits, logger: .silent, authorize: authorize,
            handler: { request in extra(request) ?? HTTPTestServer.route(request) })
        server.start()
    }

    var client: UnixHTTPClient { UnixHTTPClient(socketPath: path, timeout: 10) }

    static func route(_ request: HTTPRequest) -> HTTPResponse {
        switch (request.method, request.path) {
        case ("GET", "/v1/status"), ("HEAD", "/v1/status"):
            return .json(AgentStatus(state: "ok"))
        case (_, "/v1/echo"):
            return .json(
                EchoReply(
                    method: request.method, path: request.path, query: request.query,
                    body: String(decoding: request.body, as: UTF8.self), contentType: request.header("content-type"),
                    pid: request.peer.pid, uid: request.peer.uid))
        default:
            return .error(404, code: "not_found", message: "no route for \(request.method) \(request.path)")
        }
    }

    /// Stops the server and removes its directory.
    func finish() {
        server.stop()
        rmdir(directory)
    }

    /// A good request still gets a good answer.
    func expectHealthy(sourceLocation: SourceLocation = #_sourceLocation) throws {
        let status: AgentStatus = try client.json("GET", "/v1/status")
        #expect(status == AgentStatus(state: "ok"), sourceLocation: sourceLocation)
    }
}

func httpScratchDirectory() throws -> String {
    var template = Array("/tmp/hcos-http.XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw HCOSError(.io, "mkdtemp failed") }
    return String(cString: made)
}

/// A raw connection for sending bytes a well-behaved client never would.
final class RawHTTPConnection {
    let fd: Int32

    init(_ path: String) throws {
        fd = try UnixSocket.connect(path: path)
        // A safety net against a hung test, not a synchronisation: every read below expects data.
        UnixSocket.setReceiveTimeout(fd, seconds: 10)
    }

    deinit { close(fd) }

    /// Sends `bytes`; a server that already answered and closed makes this fail, which is fine.
    func send(_ bytes: [UInt8]) { try? UnixSocket.writeAll(fd, bytes) }
    func send(_ text: String) { send(Array(text.utf8)) }
    func shutdownWrite() { UnixSocket.shutdownWrite(fd) }

    /// Bytes received past the last response read.
    private var pending: [UInt8] = []

    /// Everything until the server closes the connection.
    func readToEnd() -> [UInt8] {
        var all = pending
        pending = []
        while let bytes = try? UnixSocket.receive(fd), !bytes.isEmpty { all += bytes }
        return all
    }

    /// Exactly one response (its head, then Content-Length bytes of body), leaving the connection
    /// open for the next.
    func readResponse() -> RawHTTPResponse? {
        let separator = Array("\r\n\r\n".utf8)
        while pending.firstRange(of: separator) == nil {
            guard let bytes = try? UnixSocket.receive(fd), !bytes.isEmpty else { return nil }
            pending += bytes
        }
        guard var response = RawHTTPResponse(pending), let end = pending.firstRange(of: separator) else { return nil }
        let length = response.status == 100 ? 0 : Int(response.header("content-length") ?? "0") ?? 0
        while pending.count - end.upperBound < length {
            guard let bytes = try? UnixSocket.receive(fd), !bytes.isEmpty else { return nil }
            pending += bytes
        }
        response.body = Array(pending[end.upperBound..<(end.upperBound + length)])
        pending.removeSubrange(..<(end.upperBound + length))
        return response
    }
}

struct RawHTTPResponse {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    init?(_ bytes: [UInt8]) {
        guard let end = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else { return nil }
        let head = String(decoding: bytes[..<end.lowerBound], as: UTF8.self)
        let lines = head.components(separatedBy: "\r\n")
        let statusLine = lines[0].split(separator: " ")
        guard statusLine.count >= 2, statusLine[0] == "HTTP/1.1", let status = Int(statusLine[1]) else { return nil }
        self.status = status
        headers = lines.dropFirst().compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        body = Array(bytes[end.upperBound...])
    }

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    var text: String { String(decoding: body, as: UTF8.self) }
}

/// Sends `bytes` on a fresh connection, optionally half-closes, and returns what came back
/// before the server closed the connection.
func exchange(_ path: String, _ bytes: [UInt8], halfClose: Bool = true) throws -> [UInt8] {
    let connection = try RawHTTPConnection(path)
    connection.send(bytes)
    if halfClose { connection.shutdownWrite() }
    return connection.readToEnd()
}

/// A deterministic generator (SplitMix64), so a failing fuzz case can be replayed.
struct HTTPFuzzGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A flag a test can wait on without sleeping: a handler signals, the test waits.
final class HTTPTestGate: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func open() { semaphore.signal() }
    /// False if the gate did not open within `seconds` (a safety net, not a synchronisation).
    func wait(seconds: Double = 10) -> Bool { semaphore.wait(timeout: .now() + seconds) == .success }
}
