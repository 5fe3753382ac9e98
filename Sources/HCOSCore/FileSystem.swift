import CShim
import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

/// An owned file descriptor with the positioned, full-length reads and writes the disk code needs.
public final class FileDescriptor: @unchecked Sendable {
    public let fd: Int32
    public let path: String

    public init(path: String, flags: Int32, mode: mode_t = 0o644) throws {
        self.path = path
        self.fd = try Syscall.call("open", path) { open(path, flags | O_CLOEXEC, mode) }
    }

    deinit { close(fd) }

    /// Up to `count` bytes at `offset`; fewer only at the end of the file. The array is filled
    /// in place (no zeroing, no copy): the slot writer and the digest code move gigabytes here.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: count) { buf, initialized in
            while initialized < count {
                let start = initialized
                let n = try Syscall.call("pread", path) {
                    pread(fd, buf.baseAddress.map { $0 + start }, count - start, off_t(offset) + off_t(start))
                }
                if n == 0 { break }
                initialized += n
            }
        }
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            let n = try bytes.withUnsafeBytes { buf in
                try Syscall.call("pwrite", path) {
                    pwrite(fd, buf.baseAddress.map { $0 + done }, bytes.count - done, off_t(offset) + off_t(done))
                }
            }
            done += n
        }
    }

    public func sync() throws { try Syscall.call("fsync", path) { fsync(fd) } }

    /// Starts writing the range's dirty pages to the disk and returns (`wait`: false), or returns
    /// once they are written (`wait`: true). Not durable by itself (no metadata, no flush of
    /// the disk's cache): a write still ends with `sync`.
    public func writeBack(at offset: UInt64, count: UInt64, wait: Bool) throws {
        try Syscall.call("sync_file_range", path) {
            hcos_writeback(fd, Int64(offset), Int64(count), wait ? 1 : 0)
        }
    }

    /// Drops the range's clean pages from the page cache (a hint; dirty pages stay).
    public func dropCache(at offset: UInt64, count: UInt64) {
        _ = posix_fadvise(fd, off_t(offset), off_t(count), POSIX_FADV_DONTNEED)
    }

    public func size() throws -> UInt64 {
        var st = stat()
        try Syscall.call("fstat", path) { fstat(fd, &st) }
        return UInt64(st.st_size)
    }

    public func truncate(to size: UInt64) throws {
        try Syscall.call("ftruncate", path) { ftruncate(fd, off_t(size)) }
    }
}

/// Small file helpers. `writeDurably` is the one way to write a file that must survive power
/// loss: write a temporary file, fsync it, rename it over the target, fsync the directory.
public enum FileSystem {
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func readBytes(_ path: String) throws -> [UInt8] {
        let file = try FileDescriptor(path: path, flags: O_RDONLY)
        return try file.read(at: 0, count: Int(try file.size()))
    }

    /// True when the two files hold the same bytes; read 1 MiB at a time from each, so comparing
    /// a kernel costs 2 MiB of memory, not twice its size (os-agent stays small during upgrades).
    public static func sameContents(_ first: String, _ second: String) throws -> Bool {
        let a = try FileDescriptor(path: first, flags: O_RDONLY)
        let b = try FileDescriptor(path: second, flags: O_RDONLY)
        let size = try a.size()
        guard try b.size() == size else { return false }
        var offset: UInt64 = 0
        while offset < size {
            let count = Int(min(UInt64(1 << 20), size - offset))
            let left = try a.read(at: offset, count: count)
            guard !left.isEmpty, try b.read(at: offset, count: count) == left else { return false }
            offset += UInt64(left.count)
        }
        return true
    }

    public static func readString(_ path: String) throws -> String {
        // /proc and /sys files report size 0: read until EOF instead of trusting st_size.
        let file = try FileDescriptor(path: path, flags: O_RDONLY)
        var result: [UInt8] = []
        while true {
            let chunk = try file.read(at: UInt64(result.count), count: 65536)
            if chunk.isEmpty { break }
            result += chunk
        }
        return String(decoding: result, as: UTF8.self)
    }

    public static func writeDurably(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
        let directory = parent(of: path)
        let temporary = "\(path).tmp.\(getpid())"
        do {
            let file = try FileDescriptor(path: temporary, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: mode)
            try file.write(bytes, at: 0)
            try file.sync()
        }
        try Syscall.call("rename", path) { rename(temporary, path) }
        try syncDirectory(directory)
    }

    public static func writeDurably(_ text: String, to path: String, mode: mode_t = 0o644) throws {
        try writeDurably(Array(text.utf8), to: path, mode: mode)
    }

    /// Bytes that writers other than root may still use on the file system holding `path`
    /// (statvfs `f_bavail`): the agent leaves ext4's root reserve alone.
    public static func availableSpace(_ path: String) throws -> UInt64 {
        var info = statvfs()
        try Syscall.call("statvfs", path) { statvfs(path, &info) }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }

    public static func syncDirectory(_ path: String) throws {
        let dir = try FileDescriptor(path: path, flags: O_RDONLY | O_DIRECTORY)
        try dir.sync()
    }

    /// The target of a symbolic link, as stored (not resolved).
    public static func readLink(_ path: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = try buffer.withUnsafeMutableBufferPointer { pointer in
            guard let base = pointer.baseAddress else { return 0 }
            return try Syscall.call("readlink", path) { Glibc.readlink(path, base, pointer.count - 1) }
        }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        if isDirectory(path) { return }
        let up = parent(of: path)
        if up != path && !up.isEmpty && up != "." { try makeDirectories(up, mode: mode) }
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw SystemError("mkdir", errno: errno, subject: path)
        }
    }
}
