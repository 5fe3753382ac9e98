import Dispatch
import FoundationEssentials
import HCOSCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An HTTP/1.1 origin server (RFC 9112) on a Unix socket: os-agent's API transport. One thread
/// per connection, so a slow client or a slow handler holds up only its own connection. Every
/// request is authorized by the peer's credentials (SO_PEERCRED) before its body is read.
/// Whatever bytes arrive, the server answers a 4xx or closes the connection, and keeps running.
public final class UnixHTTPServer: Sendable {
    public struct Limits: Sendable {
        /// Request line plus header fields (431 beyond); also the bound on chunked trailers.
        public var maxHeaderBytes: Int
        /// Request body, declared or chunked (413 beyond).
        public var maxBodyBytes: Int
        /// Connections served at once; one more is answered 503 and closed.
        public var maxConnections: Int
        /// Seconds a client has to send a complete request (408 beyond), and that a response
        /// write may block on a client that does not read.
        public var readTimeout: Double

        public init(
            maxHeaderBytes: Int = 16 * 1024, maxBodyBytes: Int = 1024 * 1024, maxConnections: Int = 64,
            readTimeout: Double = 10
        ) {
            self.maxHeaderBytes = maxHeaderBytes
            self.maxBodyBytes = maxBodyBytes
            self.maxConnections = maxConnections
            self.readTimeout = readTimeout
        }
    }

    public let path: String
    public let limits: Limits
    private let logger: Logger
    private let authorize: @Sendable (PeerCredentials) -> Bool
    private let handler: @Sendable (HTTPRequest) -> HTTPResponse
    private let listener: Int32
    private let socketFile: UnixSocket.FileIdentity?
    /// stop() writes a byte to `wakeWrite`; `wakeRead` then stays readable for good, which every
    /// poll in the server (the accept loop and each idle connection) watches.
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let state = Mutex(State())
    private let served = DispatchSemaphore(value: 0)

    private struct State {
        enum Phase { case ready, serving, stopping, stopped }
        var phase = Phase.ready
        var connections = 0
        var woken = false
        var listenerClosed = false
    }

    /// Binds `path` (a stale socket file there is replaced; a live socket or a file of another
    /// kind is refused), gives it `mode` before listening, and listens. Requests are served
    /// once `serve()` or `start()` runs.
    public init(
        path: String, mode: mode_t = 0o600, limits: Limits = .init(), logger: Logger,
        authorize: @escaping @Sendable (PeerCredentials) -> Bool,
        handler: @escaping @Sendable (HTTPRequest) -> HTTPResponse
    ) throws {
        self.path = path
        self.limits = limits
        self.logger = logger.with([("socket", path)])
        self.authorize = authorize
        self.handler = handler
        do {
            (wakeRead, wakeWrite) = try UnixSocket.pair()
        } catch {
            throw AgentHTTPError.listen(path: path, cause: error)
        }
        do {
            listener = try UnixSocket.listen(
                path: path, backlog: Int32(clamping: max(16, limits.maxConnections)), mode: mode)
            try UnixSocket.setNonBlocking(listener)
        } catch {
            close(wakeRead)
            close(wakeWrite)
            throw AgentHTTPError.listen(path: path, cause: error)
        }
        socketFile = UnixSocket.fileIdentity(path)
    }

    deinit {
        closeListener()
        close(wakeRead)
        close(wakeWrite)
    }

    /// Accepts and serves connections until `stop()`; returns at once if stopped already.
    public func serve() {
        let proceed = state.withLock { state in
            guard state.phase == .ready else { return false }
            state.phase = .serving
            return true
        }
        guard proceed else { return }
        logger.info("serving HTTP", [("max_connections", String(limits.maxConnections))])
        acceptLoop()
        state.withLock { $0.phase = .stopped }
        served.signal()
    }

    /// `serve()` on a thread of its own.
    public func start() {
        guard DetachedThread.start({ [self] in serve() }) else {
            logger.error("cannot start the HTTP server thread", [("errno", String(errno))])
            return
        }
    }

    /// Stops accepting, closes the listener and removes the socket file (unless another server
    /// has bound the path since), and returns once `serve()` has returned. Idle connections
    /// close; a request in progress is answered, then its connection closes.
    public func stop() {
        let (mustWait, mustWake) = state.withLock { state in
            let mustWake = !state.woken
            state.woken = true
            switch state.phase {
            case .ready:
                state.phase = .stopped
                return (false, mustWake)
            case .serving:
                state.phase = .stopping
                return (true, mustWake)
            case .stopping:
                return (true, mustWake)
            case .stopped:
                return (false, mustWake)
            }
        }
        if mustWake { try? UnixSocket.writeAll(wakeWrite, [1]) }
        if mustWait {
            served.wait()
            // Let any other stop() waiting alongside this one return as well.
            served.signal()
        }
        closeListener()
    }

    private var stopping: Bool { state.withLock { $0.phase != .serving } }

    private func closeListener() {
        let mustClose = state.withLock { state in
            defer { state.listenerClosed = true }
            return !state.listenerClosed
        }
        guard mustClose else { return }
        close(listener)
        if let socketFile { UnixSocket.remove(path, ifStill: socketFile) }
        logger.info("stopped serving HTTP")
    }

    // MARK: Accepting

    private func acceptLoop() {
        while !stopping {
            let readiness: UnixSocket.Readiness
            do {
                readiness = try UnixSocket.waitReadable(listener, wake: wakeRead, milliseconds: -1)
            } catch {
                logger.error("cannot wait for connections", [("error", "\(error)")])
                return
            }
            guard readiness == .readable else { continue }
            let fd: Int32
            do {
                fd = try UnixSocket.accept(listener)
            } catch {
                switch error.errno {
                case EAGAIN, EWOULDBLOCK, ECONNABORTED, EPROTO:
                    continue
                default:
                    // Out of descriptors or memory: back off rather than spin on a listener that
                    // stays readable; stop() still wakes this wait.
                    logger.warning("cannot accept a connection", [("error", "\(error)")])
                    _ = try? UnixSocket.waitReadable(wakeRead, milliseconds: 100)
                    continue
                }
            }
            admit(fd)
        }
    }

    private func admit(_ fd: Int32) {
        let limit = limits.maxConnections
        let admitted = state.withLock { state in
            guard state.connections < limit else { return false }
            state.connections += 1
            return true
        }
        guard admitted else {
            logger.warning("too many connections; answering 503", [("max_connections", String(limit))])
            refuse(fd, .error(503, code: "busy", message: "the agent is serving \(limit) connections already; retry"))
            return
        }
        guard DetachedThread.start({ [self] in serveConnection(fd) }) else {
            releaseSlot()
            logger.error("cannot start a connection thread", [("errno", String(errno))])
            refuse(fd, .error(503, code: "busy", message: "the agent cannot start a thread for this connection"))
            return
        }
    }

    /// Answers a connection the server will not serve, from the accept loop: the response is
    /// small enough for the socket buffer, and the send timeout bounds the write regardless.
    private func refuse(_ fd: Int32, _ response: HTTPResponse) {
        UnixSocket.setSendTimeout(fd, seconds: 1)
        try? UnixSocket.writeAll(fd, Self.serialize(response, method: "GET", keepAlive: false, minorVersion: 1))
        UnixSocket.shutdownWrite(fd)
        close(fd)
    }

    private func releaseSlot() {
        state.withLock { $0.connections -= 1 }
    }

    // MARK: One connection

    private func serveConnection(_ fd: Int32) {
        let peer: PeerCredentials
        do {
            let credentials = try UnixSocket.peerCredentials(fd)
            peer = PeerCredentials(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
        } catch {
            logger.warning("cannot read peer credentials; closing", [("error", "\(error)")])
            finish(fd)
            return
        }
        let peerFields = [("pid", String(peer.pid)), ("uid", String(peer.uid))]
        UnixSocket.setSendTimeout(fd, seconds: limits.readTimeout)
        var reader = SocketReader(fd: fd, wake: wakeRead, deadline: .now)
        var authorized: Bool?
        var served = 0

        while true {
            reader.deadline = .now + .milliseconds(Int64(limits.readTimeout * 1000))
            let receivedBefore = reader.received
            let pendingBefore = reader.available.count
            let request: HTTPRequest
            let keepAlive: Bool
            let minorVersion: Int
            do throws(MessageError) {
                guard let head = try reader.readHead(limit: limits.maxHeaderBytes) else { break }
                let parsed = try RequestHead(parsing: head[...])
                if authorized == nil { authorized = authorize(peer) }
                guard authorized == true else {
                    throw .invalid(403, "forbidden", "uid \(peer.uid) may not use this socket")
                }
                if case .length(let length) = parsed.framing, length > limits.maxBodyBytes {
                    throw .invalid(413, "body_too_large", "the body is larger than \(limits.maxBodyBytes) bytes")
                }
                if parsed.expectsContinue && parsed.framing != .none && parsed.framing != .length(0) {
                    guard (try? UnixSocket.writeAll(fd, Array("HTTP/1.1 100 Continue\r\n\r\n".utf8))) != nil else {
                        break
                    }
                }
                let body = try reader.readBody(
                    parsed.framing, limit: limits.maxBodyBytes, trailerLimit: limits.maxHeaderBytes)
                request = HTTPRequest(
                    method: parsed.method, target: parsed.target, path: parsed.path, query: parsed.query,
                    headers: parsed.headers, body: body, peer: peer)
                keepAlive = parsed.keepAlive
                minorVersion = parsed.minorVersion
            } catch {
                let partial = reader.received > receivedBefore || pendingBefore > 0
                if let response = errorResponse(error, partial: partial || served == 0, peerFields: peerFields) {
                    try? UnixSocket.writeAll(
                        fd, Self.serialize(response, method: nil, keepAlive: false, minorVersion: 1))
                }
                break
            }

            let response = checked(handler(request), for: request)
            let again = keepAlive && !stopping
            let bytes = Self.serialize(response, method: request.method, keepAlive: again, minorVersion: minorVersion)
            logger.debug(
                "request",
                [("method", request.method), ("path", request.path), ("status", String(response.status))] + peerFields)
            do {
                try UnixSocket.writeAll(fd, bytes)
            } catch {
                logger.warning("cannot send the response", [("error", "\(error)")] + peerFields)
                break
            }
            served += 1
            if !again { break }
        }
        finish(fd)
    }

    /// The answer to a request that failed to arrive; nil when the connection just closes
    /// (the peer went away, the server is stopping, the connection sat idle between requests).
    private func errorResponse(_ error: MessageError, partial: Bool, peerFields: [(String, String)])
        -> HTTPResponse?
    {
        switch error {
        case .invalid(let status, let code, let message):
            logger.warning("rejected request", [("status", String(status)), ("reason", message)] + peerFields)
            return .error(status, code: code, message: message)
        case .timedOut:
            guard partial else { return nil }
            let seconds = limits.readTimeout
            logger.warning("request timed out", [("seconds", String(seconds))] + peerFields)
            return .error(408, code: "request_timeout", message: "the request did not arrive within \(seconds) s")
        case .closed:
            return .error(400, code: "bad_request", message: "the connection closed before the request was complete")
        case .woken, .io:
            return nil
        }
    }

    /// A handler's response the server can send as is, or a 500 that says what was wrong with it.
    private func checked(_ response: HTTPResponse, for request: HTTPRequest) -> HTTPResponse {
        var problem: String?
        if !(200...599).contains(response.status) {
            problem = "status \(response.status) is not a final status"
        } else if let bad = response.headers.first(where: {
            !HTTPSyntax.isToken($0.name.utf8) || !$0.value.utf8.allSatisfy(HTTPSyntax.isFieldValueChar)
        }) {
            problem = "invalid header \(HTTPSyntax.quoted(Array(bad.name.utf8)))"
        }
        guard let problem else { return response }
        logger.error("handler returned an invalid response", [("path", request.path), ("problem", problem)])
        return .error(500, code: "internal", message: "the handler returned an invalid response: \(problem)")
    }

    /// Closes a connection so the peer reads the whole response: the slot is free at once, the
    /// write side shuts, and what the peer still sends (a body the server refused) is drained
    /// for a bounded time before the close, which would otherwise reset the connection.
    private func finish(_ fd: Int32) {
        releaseSlot()
        UnixSocket.shutdownWrite(fd)
        let deadline = ContinuousClock.now + .milliseconds(Int64(min(limits.readTimeout, 2) * 1000))
        var budget = limits.maxBodyBytes + limits.maxHeaderBytes
        while budget > 0 {
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { break }
            let milliseconds = Int32(clamping: remaining.components.seconds * 1000 + 1)
            guard (try? UnixSocket.waitReadable(fd, milliseconds: milliseconds)) == .readable,
                let bytes = try? UnixSocket.receive(fd), !bytes.isEmpty
            else { break }
            budget -= bytes.count
        }
        close(fd)
    }

    /// The response bytes: status line, the handler's fields, then the framing fields the server
    /// owns (RFC 9112 §6): Content-Length always, except where a status forbids a body.
    static func serialize(_ response: HTTPResponse, method: String?, keepAlive: Bool, minorVersion: Int) -> [UInt8] {
        let bodyless = response.status == 204 || response.status == 304
        var head = "HTTP/1.1 \(response.status) \(HTTPResponse.reason(response.status))\r\n"
        let owned = ["content-length", "transfer-encoding", "connection"]
        var hasContentType = false
        for (name, value) in response.headers {
            let lower = HTTPSyntax.lowercased(name)
            if owned.contains(lower) { continue }
            if lower == "content-type" { hasContentType = true }
            head += "\(name): \(value)\r\n"
        }
        if !bodyless {
            if !hasContentType { head += "Content-Type: application/json\r\n" }
            head += "Content-Length: \(response.body.count)\r\n"
        }
        if !keepAlive {
            head += "Connection: close\r\n"
        } else if minorVersion == 0 {
            head += "Connection: keep-alive\r\n"
        }
        head += "\r\n"
        let sendsBody = !bodyless && method != "HEAD"
        return Array(head.utf8) + (sendsBody ? response.body : [])
    }
}
