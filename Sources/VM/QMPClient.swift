import Foundation
import HCOSCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A client of the QEMU Machine Protocol (docs/interop/qmp-spec.rst): one JSON object per line;
/// the server greets, the client must send `qmp_capabilities`, then each command gets exactly
/// one `return` or `error` reply, with asynchronous `event` lines interleaved.
public final class QMPClient: Sendable {
    private struct Connection {
        var fd: Int32
        var pending: [UInt8] = []
        var events: [String] = []
    }

    private let connection: Mutex<Connection>
    public let path: String

    /// Connects and negotiates capabilities.
    public init(path: String, timeout: Duration = .seconds(10)) throws {
        self.path = path
        let fd = try UnixSocket.connect(path: path)
        UnixSocket.setSendTimeout(fd, seconds: 10)
        connection = Mutex(Connection(fd: fd))
        let greeting = try connection.withLock {
            try QMPClient.readMessage(&$0, deadline: .now + timeout)
        }
        guard QMPClient.kind(of: greeting) == "QMP" else {
            throw HCOSError(.corrupt, "unexpected QMP greeting on \(path): \(greeting.prefix(200))")
        }
        _ = try execute("qmp_capabilities", timeout: timeout)
    }

    deinit {
        _ = connection.withLock { close($0.fd) }
    }

    /// Runs a command and returns its reply line (`{"return": ...}`). An `error` reply throws.
    /// `arguments` is a JSON object, e.g. `{"device": "virtio0"}`.
    @discardableResult
    public func execute(_ command: String, arguments: String? = nil, timeout: Duration = .seconds(10))
        throws -> String
    {
        let request =
            "{\"execute\": \"\(command)\"" + (arguments.map { ", \"arguments\": \($0)" } ?? "") + "}\n"
        return try connection.withLock { conn in
            guard conn.fd >= 0 else { throw HCOSError(.io, "QMP connection \(path) is closed") }
            try UnixSocket.writeAll(conn.fd, Array(request.utf8))
            let deadline = ContinuousClock.now + timeout
            while true {
                let message = try QMPClient.readMessage(&conn, deadline: deadline)
                switch QMPClient.kind(of: message) {
                case "event":
                    conn.events.append(message)
                case "error":
                    throw HCOSError(.toolFailed, "QMP \(command) failed: \(message)")
                case "return":
                    return message
                default:
                    throw HCOSError(.corrupt, "unexpected QMP message on \(path): \(message.prefix(300))")
                }
            }
        }
    }

    /// Decodes the `return` member of a command's reply.
    public func execute<Reply: Decodable>(
        _ command: String, arguments: String? = nil, returning type: Reply.Type,
        timeout: Duration = .seconds(10)
    ) throws -> Reply {
        let line = try execute(command, arguments: arguments, timeout: timeout)
        do {
            return try JSONDecoder().decode(QMPReply<Reply>.self, from: Data(line.utf8)).return
        } catch {
            throw HCOSError(
                .corrupt, "cannot decode QMP \(command) reply (\(error)): \(line.prefix(300))")
        }
    }

    /// `running`, `paused`, `shutdown`, ... (QMP `query-status`).
    public func status() throws -> String {
        struct Status: Decodable {
            let status: String
        }
        return try execute("query-status", returning: Status.self).status
    }

    /// Events (`RESET`, `SHUTDOWN`, `POWERDOWN`, ...) seen so far while waiting for replies.
    public func takeEvents() -> [String] {
        connection.withLock { conn in
            defer { conn.events = [] }
            return conn.events
        }
    }

    /// Which of `event`, `error`, `return`, `QMP` (greeting) a message is.
    static func kind(of message: String) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(message.utf8)) as? [String: Any]
        else {
            return nil
        }
        return ["event", "error", "return", "QMP"].first { object[$0] != nil }
    }

    private static func readMessage(_ conn: inout Connection, deadline: ContinuousClock.Instant)
        throws -> String
    {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let newline = conn.pending.firstIndex(of: 10) {
                let line = String(decoding: conn.pending[..<newline], as: UTF8.self).trimmed()
                conn.pending.removeSubrange(...newline)
                if line.isEmpty { continue }
                return line
            }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw HCOSError(.timeout, "no QMP reply within the deadline") }
            let (seconds, attoseconds) = remaining.components
            let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
            var pfd = pollfd(fd: conn.fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, milliseconds)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { continue }
            let n = chunk.withUnsafeMutableBytes { read(conn.fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { throw HCOSError(.io, "QMP connection closed by qemu") }
            conn.pending += chunk[0..<n]
        }
    }
}

/// A successful QMP reply: `{"return": ...}`.
private struct QMPReply<Value: Decodable>: Decodable {
    let `return`: Value
}
