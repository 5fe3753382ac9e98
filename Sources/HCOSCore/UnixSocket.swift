import CShim

#if canImport(Glibc)
    import Glibc
#endif

/// AF_UNIX stream sockets: qemu's chardev and QMP servers, os-agent's API socket, and their
/// clients. Descriptors are close-on-exec and owned by the caller.
public enum UnixSocket {
    /// Connects to a listening socket. A missing socket fails with ENOENT, a socket the caller may
    /// not open with EACCES, a socket nobody listens on with ECONNREFUSED (all as `SystemError`).
    /// With `timeout`, a server whose backlog is full fails the connect with EAGAIN after that
    /// many seconds (an AF_UNIX connect waits under the send timeout), and the timeout stays set
    /// for sends.
    public static func connect(path: String, timeout: Double? = nil) throws -> Int32 {
        let address = try makeAddress(path)
        let fd = try Syscall.call("socket", path) {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        if let timeout { setSendTimeout(fd, seconds: timeout) }
        do {
            var address = address
            try Syscall.call("connect", path) {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// A listening socket at `path`. A stale socket file there (nobody listening) is replaced; a
    /// live one, or anything that is not a socket, is refused. With `mode`, the socket file gets
    /// that mode before the socket listens, so nobody can connect through a wider one.
    public static func listen(path: String, backlog: Int32 = 4, mode: mode_t? = nil) throws -> Int32 {
        let address = try makeAddress(path)
        try removeStale(path)
        let fd = try Syscall.call("socket", path) {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        do {
            var address = address
            try Syscall.call("bind", path) {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
            if let mode { try Syscall.call("chmod", path) { chmod(path, mode) } }
            try Syscall.call("listen", path) { Glibc.listen(fd, backlog) }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Removes a socket file nobody listens on; refuses a live socket and anything else.
    static func removeStale(_ path: String) throws {
        var info = stat()
        if lstat(path, &info) != 0 {
            let err = errno
            if err == ENOENT { return }
            throw SystemError("lstat", errno: err, subject: path)
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw HCOSError(.invalidArgument, "\(path) exists and is not a socket; refusing to replace it")
        }
        if let fd = try? connect(path: path) {
            close(fd)
            throw HCOSError(.inUse, "\(path) is in use: another server is listening on it")
        }
        if unlink(path) != 0 && errno != ENOENT {
            throw SystemError("unlink", errno: errno, subject: path)
        }
    }

    /// The identity of the socket file at `path` (nil when there is none), so a server removes
    /// only its own socket file and never one a successor has bound since.
    public struct FileIdentity: Equatable, Sendable {
        let device: UInt64
        let inode: UInt64
    }

    public static func fileIdentity(_ path: String) -> FileIdentity? {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { return nil }
        return FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Unlinks `path` if it is still the socket file `identity` names.
    public static func remove(_ path: String, ifStill identity: FileIdentity) {
        guard fileIdentity(path) == identity else { return }
        unlink(path)
    }

    /// A connected pair of sockets (close-on-exec): a wake-up channel between threads.
    public static func pair() throws(SystemError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        try Syscall.call("socketpair") {
            socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        }
        return (fds[0], fds[1])
    }

    /// Makes calls on `fd` fail with EAGAIN instead of blocking (a listener whose connection went
    /// away between poll and accept).
    public static func setNonBlocking(_ fd: Int32) throws(SystemError) {
        let flags = try Syscall.call("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
        try Syscall.call("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    /// Accepts one connection (close-on-exec).
    public static func accept(_ listener: Int32) throws(SystemError) -> Int32 {
        try Syscall.call("accept") { hcos_accept_cloexec(listener) }
    }

    /// The process, user and group on the other end of a connected socket (SO_PEERCRED), as
    /// they were when it connected.
    public static func peerCredentials(_ fd: Int32) throws(SystemError) -> (pid: Int32, uid: UInt32, gid: UInt32) {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        try Syscall.call("getsockopt(SO_PEERCRED)") { hcos_peer_credentials(fd, &pid, &uid, &gid) }
        return (pid, uid, gid)
    }

    public enum Readiness: Sendable, Equatable { case readable, woken, timedOut }

    /// Waits until `fd` is readable (or at end of file), `wake` is readable, or `milliseconds`
    /// pass (-1: no limit). A readable `fd` wins over `wake`.
    public static func waitReadable(_ fd: Int32, wake: Int32? = nil, milliseconds: Int32) throws(SystemError)
        -> Readiness
    {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        if let wake { fds.append(pollfd(fd: wake, events: Int16(POLLIN), revents: 0)) }
        let ready = try Syscall.call("poll") { poll(&fds, nfds_t(fds.count), milliseconds) }
        if ready == 0 { return .timedOut }
        if fds[0].revents != 0 { return .readable }
        return .woken
    }

    /// Reads what is available, at most `maxCount` bytes; empty at end of file.
    public static func receive(_ fd: Int32, maxCount: Int = 65536) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: maxCount)
        let count = try Syscall.call("recv") {
            bytes.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        }
        bytes.removeSubrange(count...)
        return bytes
    }

    /// Writes all of `bytes`, retrying short writes. With a send timeout set, a peer that stops
    /// reading fails the write with EAGAIN instead of blocking forever.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = try bytes.withUnsafeBytes { buffer in
                try Syscall.call("write") {
                    send(fd, buffer.baseAddress.map { $0 + done }, bytes.count - done, Int32(MSG_NOSIGNAL))
                }
            }
            done += n
        }
    }

    /// Says "no more data" to the peer while still reading what it sends.
    public static func shutdownWrite(_ fd: Int32) {
        _ = shutdown(fd, Int32(SHUT_WR))
    }

    /// Blocks a writer at most `seconds` when the peer stops reading.
    public static func setSendTimeout(_ fd: Int32, seconds: Double) {
        var value = timeval(seconds)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Blocks a reader at most `seconds` when the peer sends nothing.
    public static func setReceiveTimeout(_ fd: Int32, seconds: Double) {
        var value = timeval(seconds)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    public static func makeAddress(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            throw HCOSError(
                .invalidArgument,
                "unix socket path is \(bytes.count) bytes, the limit is \(capacity - 1): \(path); use a shorter work directory"
            )
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: bytes)
            buffer[bytes.count] = 0
        }
        return address
    }
}

extension timeval {
    fileprivate init(_ seconds: Double) {
        let whole = seconds.rounded(.down)
        self.init(tv_sec: Int(whole), tv_usec: Int((seconds - whole) * 1_000_000))
    }
}
