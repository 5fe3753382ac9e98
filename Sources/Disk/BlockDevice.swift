import CShim
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// The block-device ioctls the node needs (BLKGETSIZE64, BLKPG), through CShim.
public enum BlockDevice {
    public static func isBlockDevice(_ file: FileDescriptor) throws -> Bool {
        var st = stat()
        try Syscall.call("fstat", file.path) { fstat(file.fd, &st) }
        return (st.st_mode & S_IFMT) == S_IFBLK
    }

    /// Size in bytes of a block device (BLKGETSIZE64) or of a regular file (fstat).
    public static func size(of file: FileDescriptor) throws -> UInt64 {
        guard try isBlockDevice(file) else { return try file.size() }
        var bytes: UInt64 = 0
        try Syscall.call("ioctl BLKGETSIZE64", file.path) { hcos_block_size(file.fd, &bytes) }
        return bytes
    }

    /// Tells the kernel that partition `partitionNumber` of the disk open as `file` now spans
    /// `lengthBytes` from `startBytes` (BLKPG_RESIZE_PARTITION; works while it is mounted).
    public static func resizePartition(
        _ file: FileDescriptor, partitionNumber: Int, startBytes: UInt64, lengthBytes: UInt64
    ) throws {
        guard let partno = Int32(exactly: partitionNumber), let start = Int64(exactly: startBytes),
            let length = Int64(exactly: lengthBytes)
        else {
            throw HCOSError(
                .invalidArgument,
                "partition \(partitionNumber) at \(startBytes)+\(lengthBytes) is out of range")
        }
        try Syscall.call("ioctl BLKPG_RESIZE_PARTITION", file.path) {
            hcos_blkpg_resize_partition(file.fd, partno, start, length)
        }
    }

    /// Drops the kernel's buffer cache of the device (BLKFLSBUF), after writing behind its back.
    public static func flushBuffers(_ file: FileDescriptor) throws {
        try Syscall.call("ioctl BLKFLSBUF", file.path) { hcos_block_flush(file.fd) }
    }
}
