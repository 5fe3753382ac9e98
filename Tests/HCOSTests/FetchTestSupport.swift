import Foundation
import HCOSCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A small real HTTP/1.1 server on 127.0.0.1 for the fetch tests: one thread per connection,
/// `Connection: close`, responses from a handler. It records every request so a test can see
/// what the client asked for (a Range header, an Authorization header).
final class TestHTTPServer: Sendable {
    struct Request: Sendable {
        var method: String
        var path: String
        /// Lowercased names.
        var headers: [String: String]
    }

    struct Response: Sendable {
        var status: Int
        var headers: [(String, String)] = []
        var body: [UInt8] = []
        /// Send only this many body bytes, then close the connection (a server that dies).
        var cutAfter: Int?
        /// Send the head, then nothing until the client gives up (a stalled server).
        var stall = false
        /// False: no Content-Length, the body ends when the connection closes (RFC 9112 §6.3).
        var sendLength = true

        init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
            self.status = status
            self.headers = headers
            self.body = body
        }
    }

    typealias Handler = @Sendable (Request) -> Response

    let port: UInt16
    private let listener: Int32
    private let handler: Handler
    private let recorded = Mutex<[Request]>([])

    var requests: [Request] { recorded.withLock { $0 } }
    var baseURL: String { "http://127.0.0.1:\(port)" }

    init(handler: @escaping Handler) throws {
        self.handler = handler
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw SystemError("socket", errno: errno) }
        self.listener = listener
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(listener, pointer, length) == 0 && listen(listener, 16) == 0
                    && getsockname(listener, pointer, &length) == 0
            }
        }
        guard bound else {
            close(listener)
            throw SystemError("bind", errno: errno, subject: "127.0.0.1")
        }
        port = UInt16(bigEndian: address.sin_port)
        let server = self
        Thread.detachNewThread { server.acceptLoop() }
    }

    /// Stops accepting; connections in progress finish on their own.
    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func acceptLoop() {
        while true {
            let connection = accept(listener, nil, nil)
            if connection < 0 {
                if errno == EINTR { continue }
                return
            }
            Thread.detachNewThread { self.serve(connection) }
        }
    }

    private func serve(_ connection: Int32) {
        defer { close(connection) }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !received.containsHeadEnd {
            let count = recv(connection, &buffer, buffer.count, 0)
            if count <= 0 { return }
            received += buffer[0..<count]
        }
        let lines = String(decoding: received, as: UTF8.self).components(separatedBy: "\r\n")
        let parts = lines[0].split(separator: " ")
        guard parts.count >= 2 else { return }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...]
                .trimmingCharacters(in: .whitespaces)
        }
        let request = Request(method: String(parts[0]), path: String(parts[1]), headers: headers)
        recorded.withLock { $0.append(request) }
        let response = handler(request)
        let reasons = [
            200: "OK", 206: "Partial Content", 307: "Temporary Redirect", 401: "Unauthorized", 404: "Not Found",
            416: "Range Not Satisfiable", 500: "Internal Server Error",
        ]
        let reason = reasons[response.status] ?? "Status"
        var head = "HTTP/1.1 \(response.status) \(reason)\r\nConnection: close\r\n"
        if response.sendLength && !response.headers.contains(where: { $0.0.lowercased() == "content-length" }) {
            head += "Content-Length: \(response.body.count)\r\n"
        }
        for (name, value) in response.headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        guard send(connection, Array(head.utf8)) else { return }
        if response.stall {
            // Hold the connection open, sending nothing, until the client closes it.
            while recv(connection, &buffer, buffer.count, 0) > 0 {}
            return
        }
        if request.method == "HEAD" { return }
        let body = response.cutAfter.map { Array(response.body.prefix($0)) } ?? response.body
        _ = send(connection, body)
    }

    private func send(_ connection: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let count = bytes.withUnsafeBytes {
                Glibc.send(connection, $0.baseAddress.map { $0 + done }, bytes.count - done, Int32(MSG_NOSIGNAL))
            }
            if count <= 0 { return false }
            done += count
        }
        return true
    }

    /// A handler serving `files` (path → bytes) with single byte ranges (`Range: bytes=N-` or
    /// `N-M`, RFC 9110 §14) unless `honourRange` is false, and 404 for anything else.
    static func files(_ files: [String: [UInt8]], honourRange: Bool = true, etag: String? = nil) -> Handler {
        { request in
            guard let bytes = files[request.path] else {
                return Response(status: 404, body: Array("no such file\n".utf8))
            }
            var headers: [(String, String)] = [("Accept-Ranges", honourRange ? "bytes" : "none")]
            if let etag { headers.append(("ETag", etag)) }
            if honourRange, let range = request.headers["range"], range.hasPrefix("bytes=") {
                let spec = range.dropFirst(6).split(separator: "-", omittingEmptySubsequences: false)
                let start = Int(spec[0]) ?? 0
                let end =
                    spec.count > 1 && !spec[1].isEmpty
                    ? min(Int(spec[1]) ?? bytes.count - 1, bytes.count - 1) : bytes.count - 1
                guard start < bytes.count else {
                    return Response(status: 416, headers: headers + [("Content-Range", "bytes */\(bytes.count)")])
                }
                return Response(
                    status: 206, headers: headers + [("Content-Range", "bytes \(start)-\(end)/\(bytes.count)")],
                    body: Array(bytes[start...end]))
            }
            return Response(status: 200, headers: headers, body: bytes)
        }
    }
}

extension [UInt8] {
    fileprivate var containsHeadEnd: Bool {
        count >= 4
            && (0...(count - 4)).contains {
                self[$0] == 13 && self[$0 + 1] == 10 && self[$0 + 2] == 13 && self[$0 + 3] == 10
            }
    }
}

/// Test helpers shared by the fetch tests.
enum FetchTestSupport {
    static func temporaryDirectory(_ label: String) throws -> String {
        let directory = NSTemporaryDirectory() + "hcos-\(label)-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    /// Deterministic, non-repeating-looking bytes.
    static func bytes(_ count: Int, seed: UInt32 = 1) -> [UInt8] {
        var state = seed &* 2_654_435_761 | 1
        return (0..<count).map { _ in
            state ^= state << 13
            state ^= state >> 17
            state ^= state << 5
            return UInt8(truncatingIfNeeded: state)
        }
    }

    /// A TCP port that nothing listens on right now (bound, read, released).
    static func freePort() throws -> UInt16 {
        let server = try TestHTTPServer { _ in .init(status: 500) }
        server.stop()
        return server.port
    }

    /// Whether something accepts TCP connections on 127.0.0.1:port.
    static func accepts(port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = port.bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}

/// A `docker-registry` (the distribution project's registry, Debian package docker-registry)
/// on 127.0.0.1 with its storage in a temporary directory; stopped by `stop()`.
final class RegistryProcess {
    let port: UInt16
    let directory: String
    private let process = Process()

    var host: String { "127.0.0.1:\(port)" }

    init() throws {
        directory = try FetchTestSupport.temporaryDirectory("registry")
        port = try FetchTestSupport.freePort()
        let config = """
            version: 0.1
            log:
              level: warn
            storage:
              filesystem:
                rootdirectory: \(directory)/storage
            http:
              addr: 127.0.0.1:\(port)
            """
        try config.write(toFile: "\(directory)/config.yml", atomically: true, encoding: .utf8)
        guard let binary = Command.resolve("docker-registry") else {
            throw HCOSError(.missingTool, "docker-registry is not installed (apt-get install docker-registry)")
        }
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "\(directory)/config.yml"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        // Ready when the port accepts connections; give up if the process dies or after 30 s.
        let deadline = Date().addingTimeInterval(30)
        while !FetchTestSupport.accepts(port: port) {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw HCOSError(.timeout, "docker-registry did not start listening on 127.0.0.1:\(port)")
            }
            usleep(20_000)
        }
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
