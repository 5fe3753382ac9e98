import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// AF_UNIX stream sockets: qemu's chardev and QMP servers, and test peers.
public enum UnixSocket {
    /// Connects to a listening socket; the descriptor is close-on-exec and owned by the caller.
    public static func connect(path: String) throws -> Int32 {
        let fd = try Syscall.call("socket", path) {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        do {
            var address = try makeAddress(path)
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

    /// A listening socket at `path` (an old socket file there is replaced).
    public static func listen(path: String, backlog: Int32 = 4) throws -> Int32 {
        let fd = try Syscall.call("socket", path) {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        do {
            var address = try makeAddress(path)
            unlink(path)
            try Syscall.call("bind", path) {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
            try Syscall.call("listen", path) { Glibc.listen(fd, backlog) }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Writes all of `bytes`, retrying short writes.
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

    /// Blocks a writer at most `seconds` when the peer stops reading.
    static func setSendTimeout(_ fd: Int32, seconds: Int) {
        var value = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    static func makeAddress(_ path: String) throws -> sockaddr_un {
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
