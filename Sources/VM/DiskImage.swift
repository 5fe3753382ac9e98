import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// Disk files for VMs: a fresh sparse copy of a built image per VM, grown to the size asked for
/// (the image's first boot then grows PERSIST into the new space).
public enum DiskImage {
    public enum Format: String, Sendable {
        case raw
        case qcow2
    }

    /// qcow2 files start with "QFI\xfb" (qemu docs/interop/qcow2.txt); anything else is raw.
    public static func format(of path: String) throws -> Format {
        let file = try FileDescriptor(path: path, flags: O_RDONLY)
        return try file.read(at: 0, count: 4) == [0x51, 0x46, 0x49, 0xFB] ? .qcow2 : .raw
    }

    /// Makes `path` a raw copy of `image` (sparse; a qcow2 image is converted) and grows it to
    /// `size` bytes when given. The copy is assembled under a temporary name, so a failure never
    /// leaves a half-copied disk at `path`.
    public static func prepareVMDisk(from image: String, to path: String, size: UInt64? = nil) throws {
        guard FileSystem.exists(image) else {
            throw HCOSError(.notFound, "image \(image) does not exist")
        }
        if let size, size % 512 != 0 {
            throw HCOSError(.invalidArgument, "disk size \(size) is not a multiple of 512 bytes")
        }
        let temporary = "\(path).partial.\(getpid())"
        unlink(temporary)
        do {
            switch try format(of: image) {
            case .qcow2:
                try Command("qemu-img", ["convert", "-q", "-O", "raw", image, temporary]).run()
            case .raw:
                try Command("cp", ["--sparse=always", "--reflink=auto", "--", image, temporary]).run()
            }
            if let size { try grow(temporary, to: size, displayName: path) }
            try Syscall.call("rename", path) { rename(temporary, path) }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Extends a raw disk file to `size` bytes (a sparse hole); refuses to shrink it.
    public static func grow(_ path: String, to size: UInt64) throws {
        try grow(path, to: size, displayName: path)
    }

    private static func grow(_ path: String, to size: UInt64, displayName: String) throws {
        let file = try FileDescriptor(path: path, flags: O_RDWR)
        let current = try file.size()
        guard size >= current else {
            throw HCOSError(
                .invalidArgument,
                "refusing to shrink \(displayName): the image is \(current) bytes (\(ByteSize.format(current))), the requested size is \(size) bytes (\(ByteSize.format(size)))"
            )
        }
        if size > current { try file.truncate(to: size) }
    }
}
