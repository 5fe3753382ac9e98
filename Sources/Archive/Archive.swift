import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// One member of a cpio archive.
public struct CPIOEntry: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case directory
        /// A regular file whose contents are in memory.
        case file(contents: [UInt8])
        /// A regular file streamed from `path` when written (bounded memory for large files).
        case fileFrom(path: String)
        case symlink(target: String)
        case characterDevice(major: UInt32, minor: UInt32)
        case blockDevice(major: UInt32, minor: UInt32)
        case fifo
    }

    /// Path inside the archive, without a leading "/" ("bin/sh", "dev/console").
    public var name: String
    public var kind: Kind
    /// Permission bits including setuid/setgid/sticky (`0o7777`); the file type comes from `kind`.
    public var permissions: UInt32
    public var uid: UInt32
    public var gid: UInt32

    public init(name: String, kind: Kind, permissions: UInt32, uid: UInt32 = 0, gid: UInt32 = 0) {
        self.name = name
        self.kind = kind
        self.permissions = permissions & 0o7777
        self.uid = uid
        self.gid = gid
    }

    public static func directory(_ name: String, permissions: UInt32 = 0o755) -> CPIOEntry {
        CPIOEntry(name: name, kind: .directory, permissions: permissions)
    }

    public static func file(_ name: String, contents: [UInt8], permissions: UInt32 = 0o644)
        -> CPIOEntry
    {
        CPIOEntry(name: name, kind: .file(contents: contents), permissions: permissions)
    }

    public static func symlink(_ name: String, target: String) -> CPIOEntry {
        CPIOEntry(name: name, kind: .symlink(target: target), permissions: 0o777)
    }

    /// e.g. `.characterDevice("dev/console", major: 5, minor: 1)`, which the kernel opens as
    /// init's stdio before any devtmpfs is mounted.
    public static func characterDevice(
        _ name: String, major: UInt32, minor: UInt32, permissions: UInt32 = 0o600
    ) -> CPIOEntry {
        CPIOEntry(
            name: name, kind: .characterDevice(major: major, minor: minor), permissions: permissions)
    }
}

/// Writes the SVR4 "newc" cpio format (magic 070701) that the Linux kernel unpacks as an
/// initramfs, as specified in the kernel's Documentation/driver-api/early-userspace/
/// buffer-format.rst ("initramfs buffer format"): a 110-byte ASCII-hex header, the NUL-terminated
/// name padded to 4 bytes, the data padded to 4 bytes, and a final "TRAILER!!!" record.
///
/// Output is deterministic: every entry gets the caller's `mtime` (SOURCE_DATE_EPOCH), inode
/// numbers are assigned sequentially in write order, and `archive(directory:)` walks in byte
/// order of names with owner root:root. Every regular file has nlink 1, so the kernel never
/// treats two entries as hard links of each other.
public struct CPIOWriter {
    public let mtime: UInt32
    /// Bytes of archive produced so far (written or buffered).
    public private(set) var length: UInt64 = 0

    private let file: FileDescriptor?
    private let fileOffset: UInt64
    private var buffer: [UInt8] = []
    private var flushed: UInt64 = 0
    private var nextInode: UInt32 = 1
    private var finished = false

    /// Buffered output is written to the file in pieces of about this size.
    static let flushSize = 1 << 20
    static let trailerName = "TRAILER!!!"

    /// A writer that builds the archive in memory; `finish()` returns it. `mtime` (seconds since
    /// the epoch, usually SOURCE_DATE_EPOCH) must fit newc's unsigned 32-bit field.
    public init(mtime: Int) throws {
        self.mtime = try Self.mtime32(mtime)
        self.file = nil
        self.fileOffset = 0
    }

    /// A writer that streams the archive into `file` starting at `offset`.
    public init(mtime: Int, file: FileDescriptor, offset: UInt64 = 0) throws {
        self.mtime = try Self.mtime32(mtime)
        self.file = file
        self.fileOffset = offset
    }

    // MARK: Entries

    /// Appends one entry. Parent directories must be appended before their contents (the
    /// kernel creates entries in archive order).
    public mutating func append(_ entry: CPIOEntry) throws {
        guard !finished else { throw HCOSError(.invalidArgument, "cpio: append after finish") }
        let name = try Self.normalize(entry.name)
        let inode = nextInode
        nextInode += 1
        switch entry.kind {
        case .directory:
            try header(
                name, inode: inode, mode: UInt32(S_IFDIR) | entry.permissions, entry: entry, nlink: 2)
        case .file(let contents):
            try header(
                name, inode: inode, mode: UInt32(S_IFREG) | entry.permissions, entry: entry,
                size: try Self.size32(UInt64(contents.count), name))
            try emit(contents)
            try pad()
        case .fileFrom(let path):
            try appendFile(name, inode: inode, from: path, entry: entry)
        case .symlink(let target):
            let bytes = Array(target.utf8)
            try header(
                name, inode: inode, mode: UInt32(S_IFLNK) | 0o777, entry: entry,
                size: try Self.size32(UInt64(bytes.count), name))
            try emit(bytes)
            try pad()
        case .characterDevice(let major, let minor):
            try header(
                name, inode: inode, mode: UInt32(S_IFCHR) | entry.permissions, entry: entry,
                rdev: (major, minor))
        case .blockDevice(let major, let minor):
            try header(
                name, inode: inode, mode: UInt32(S_IFBLK) | entry.permissions, entry: entry,
                rdev: (major, minor))
        case .fifo:
            try header(name, inode: inode, mode: UInt32(S_IFIFO) | entry.permissions, entry: entry)
        }
    }

    /// Appends the contents of `directory` (not the directory itself), depth first with the
    /// names of each directory in byte order, as entries owned by root:root with the files'
    /// permission bits. Names are prefixed with `prefix` ("" puts them at the archive root).
    public mutating func appendTree(directory: String, prefix: String = "") throws {
        for name in try Self.listDirectory(directory) {
            let path = directory + "/" + name
            let archiveName = prefix.isEmpty ? name : prefix + "/" + name
            var info = stat()
            try Syscall.call("lstat", path) { lstat(path, &info) }
            let permissions = UInt32(info.st_mode) & 0o7777
            let kind: CPIOEntry.Kind
            switch info.st_mode & S_IFMT {
            case S_IFDIR: kind = .directory
            case S_IFREG: kind = .fileFrom(path: path)
            case S_IFLNK: kind = .symlink(target: try FileSystem.readLink(path))
            case S_IFCHR:
                kind = .characterDevice(major: Self.major(info.st_rdev), minor: Self.minor(info.st_rdev))
            case S_IFBLK:
                kind = .blockDevice(major: Self.major(info.st_rdev), minor: Self.minor(info.st_rdev))
            case S_IFIFO: kind = .fifo
            default:
                throw HCOSError(.unsupported, "cpio: cannot archive \(path): sockets have no archive form")
            }
            try append(CPIOEntry(name: archiveName, kind: kind, permissions: permissions))
            if kind == .directory { try appendTree(directory: path, prefix: archiveName) }
        }
    }

    /// Writes the trailer and flushes. Returns the archive for an in-memory writer, and an empty
    /// array for a writer into a file.
    @discardableResult
    public mutating func finish() throws -> [UInt8] {
        guard !finished else { throw HCOSError(.invalidArgument, "cpio: finish called twice") }
        try header(Self.trailerName, inode: 0, mode: 0, entry: nil, nlink: 1)
        finished = true
        guard file != nil else { return buffer }
        try flush()
        return []
    }

    // MARK: Conveniences

    /// The archive of everything under `directory`, in memory, followed by `extra` entries
    /// (e.g. `dev/console`, which an unprivileged build cannot create in the tree).
    public static func archive(directory: String, mtime: Int, appending extra: [CPIOEntry] = [])
        throws -> [UInt8]
    {
        var writer = try CPIOWriter(mtime: mtime)
        try writer.appendTree(directory: directory)
        for entry in extra { try writer.append(entry) }
        return try writer.finish()
    }

    /// Writes the archive of everything under `directory` (then `extra`) into `file` at
    /// `offset`; returns its length in bytes.
    @discardableResult
    public static func archive(
        directory: String, mtime: Int, appending extra: [CPIOEntry] = [], to file: FileDescriptor,
        offset: UInt64 = 0
    ) throws -> UInt64 {
        var writer = try CPIOWriter(mtime: mtime, file: file, offset: offset)
        try writer.appendTree(directory: directory)
        for entry in extra { try writer.append(entry) }
        try writer.finish()
        return writer.length
    }

    /// `archive` with a character device node in front, preceded by entries for its parent
    /// directories (mode 0755) so that the kernel can create the node before the rest unpacks.
    /// The kernel unpacks concatenated archives in sequence into one tree; a parent directory
    /// repeated later in `archive` only has its mode and owner reapplied.
    public static func prepending(
        characterDevice name: String, major: UInt32, minor: UInt32, mode: UInt32, mtime: Int,
        to archive: [UInt8]
    ) throws -> [UInt8] {
        var writer = try CPIOWriter(mtime: mtime)
        let components = try normalize(name).split(separator: "/").map(String.init)
        for depth in 1..<max(components.count, 1) {
            try writer.append(.directory(components[0..<depth].joined(separator: "/")))
        }
        try writer.append(.characterDevice(name, major: major, minor: minor, permissions: mode))
        return try writer.finish() + archive
    }

    // MARK: Encoding

    private mutating func header(
        _ name: String, inode: UInt32, mode: UInt32, entry: CPIOEntry?, nlink: UInt32 = 1,
        size: UInt32 = 0,
        rdev: (UInt32, UInt32) = (0, 0)
    ) throws {
        let nameBytes = Array(name.utf8) + [0]
        var record: [UInt8] = Array("070701".utf8)
        record.reserveCapacity(110 + nameBytes.count + 3)
        let fields: [UInt32] = [
            inode, mode, entry?.uid ?? 0, entry?.gid ?? 0, nlink, entry == nil ? 0 : mtime, size,
            0, 0,  // device holding the file: meaningless in an archive
            rdev.0, rdev.1, UInt32(nameBytes.count), 0,  // c_check: only used by the "crc" format
        ]
        for field in fields { Self.appendHex(field, to: &record) }
        record += nameBytes
        try emit(record)
        try pad()
    }

    private mutating func appendFile(
        _ name: String, inode: UInt32, from path: String, entry: CPIOEntry
    ) throws {
        let source = try FileDescriptor(path: path, flags: O_RDONLY)
        let size = try source.size()
        try header(
            name, inode: inode, mode: UInt32(S_IFREG) | entry.permissions, entry: entry,
            size: try Self.size32(size, name))
        var offset: UInt64 = 0
        while offset < size {
            let chunk = try source.read(
                at: offset, count: Int(min(UInt64(Self.flushSize), size - offset)))
            guard !chunk.isEmpty else {
                throw HCOSError(
                    .io, "cpio: \(path) shrank while being archived (\(offset) of \(size) bytes)")
            }
            try emit(chunk)
            offset += UInt64(chunk.count)
        }
        try pad()
    }

    private mutating func emit(_ bytes: [UInt8]) throws {
        buffer += bytes
        length += UInt64(bytes.count)
        if file != nil && buffer.count >= Self.flushSize { try flush() }
    }

    /// Zero bytes up to the next multiple of 4 (the archive starts 4-aligned).
    private mutating func pad() throws {
        let remainder = Int(length % 4)
        if remainder != 0 { try emit([UInt8](repeating: 0, count: 4 - remainder)) }
    }

    private mutating func flush() throws {
        guard let file, !buffer.isEmpty else { return }
        try file.write(buffer, at: fileOffset + flushed)
        flushed += UInt64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }

    static func appendHex(_ value: UInt32, to out: inout [UInt8]) {
        let digits = Array("0123456789ABCDEF".utf8)
        for shift in stride(from: 28, through: 0, by: -4) {
            out.append(digits[Int((value >> UInt32(shift)) & 0xf)])
        }
    }

    static func mtime32(_ mtime: Int) throws -> UInt32 {
        guard let value = UInt32(exactly: mtime) else {
            throw HCOSError(
                .invalidArgument, "cpio: mtime \(mtime) does not fit newc's 32-bit unsigned field")
        }
        return value
    }

    static func size32(_ size: UInt64, _ name: String) throws -> UInt32 {
        guard let size = UInt32(exactly: size) else {
            throw HCOSError(
                .unsupported, "cpio: \(name) is \(size) bytes; newc cannot hold files of 4 GiB or more")
        }
        return size
    }

    /// Archive names are relative: "/bin/sh" and "./bin/sh" are stored as "bin/sh".
    static func normalize(_ name: String) throws -> String {
        var result = Substring(name)
        while true {
            if result.hasPrefix("/") {
                result = result.dropFirst()
            } else if result.hasPrefix("./") {
                result = result.dropFirst(2)
            } else {
                break
            }
        }
        guard !result.isEmpty, !result.utf8.contains(0), result != Substring(trailerName) else {
            throw HCOSError(.invalidArgument, "cpio: invalid entry name '\(name)'")
        }
        return String(result)
    }

    // MARK: File system

    /// Names in `path` except "." and "..", in byte order (independent of locale and of the
    /// order the file system returns them in).
    static func listDirectory(_ path: String) throws -> [String] {
        guard let directory = opendir(path) else {
            throw SystemError("opendir", errno: errno, subject: path)
        }
        defer { closedir(directory) }
        var names: [String] = []
        while true {
            errno = 0
            guard let entry = readdir(directory) else {
                if errno != 0 { throw SystemError("readdir", errno: errno, subject: path) }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    // glibc's dev_t encoding (gnu_dev_major / gnu_dev_minor in <sys/sysmacros.h>).
    static func major(_ device: dev_t) -> UInt32 {
        UInt32(truncatingIfNeeded: ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff))
    }

    static func minor(_ device: dev_t) -> UInt32 {
        UInt32(truncatingIfNeeded: (device & 0xff) | ((device >> 12) & ~0xff))
    }
}
