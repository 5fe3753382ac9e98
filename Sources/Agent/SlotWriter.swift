import Digest
import Disk
import Dispatch
import FoundationEssentials
import HCOSCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Streams a root image into a slot partition and proves it landed: write in fixed chunks
/// (bounded memory, whatever the image size), fsync, drop the cached pages, read the bytes back
/// from the disk and compare their SHA-256 with the signed manifest's.
public struct SlotWriter: Sendable {
    public static let chunkSize = 4 << 20

    public let target: PartitionRef

    public init(target: PartitionRef) { self.target = target }

    /// True when the slot already holds exactly the `size` bytes at `offset` of `source`, whose
    /// digest is `digest` (a retried upgrade skips the write). The first and the last chunk are
    /// compared before the slot is hashed whole: a slot holding another image (the usual case)
    /// is told apart in two reads instead of a read of the whole image, which on a slow disk
    /// costs as much as the write.
    public func holds(
        digest: String, size: UInt64, source: FileDescriptor, offset: UInt64, progress: (UInt64) -> Void = { _ in }
    ) -> Bool {
        guard size > 0, size <= target.size, let device = try? FileDescriptor(path: target.path, flags: O_RDONLY)
        else { return false }
        let chunk = UInt64(Self.chunkSize)
        for start in Set([0, size > chunk ? size - chunk : 0]) {
            let count = Int(min(chunk, size - start))
            guard let mine = try? device.read(at: target.offset + start, count: count),
                let theirs = try? source.read(at: offset + start, count: count), mine == theirs
            else { return false }
        }
        guard let actual = try? readBackDigest(size: size, progress: progress) else { return false }
        return actual == digest
    }

    /// Copies `size` bytes at `offset` of `source` into the slot, then verifies them.
    public func write(
        from source: FileDescriptor, offset: UInt64, size: UInt64, digest expected: String,
        progress: (UInt64) -> Void
    ) throws {
        try copy(from: source, offset: offset, size: size, digest: expected, progress: progress)
        try verify(size: size, digest: expected)
    }

    /// The write itself: fixed chunks, hashed as they stream (a source that changed since it
    /// was verified is caught here), then fsync.
    public func copy(
        from source: FileDescriptor, offset: UInt64, size: UInt64, digest expected: String,
        progress: (UInt64) -> Void
    ) throws {
        guard size <= target.size else {
            throw HCOSError(
                .noSpace,
                "the root image (\(ByteSize.format(size))) does not fit \(target) (\(ByteSize.format(target.size)))")
        }
        let device = try FileDescriptor(path: target.path, flags: O_RDWR)
        let writer = ChunkWriter(device: device, target: target, size: size)
        // However this ends, no write is left running behind the caller's back.
        defer { try? writer.wait() }
        var hash = try SHA256()
        var done: UInt64 = 0
        while done < size {
            let count = Int(min(UInt64(Self.chunkSize), size - done))
            let chunk = try source.read(at: offset + done, count: count)
            guard chunk.count == count else {
                throw HCOSError(
                    .corrupt,
                    "\(source.path) is truncated: the root image ends at byte \(done + UInt64(chunk.count)) of \(size)")
            }
            // The previous chunk is written before this one starts: the slot fills in order.
            try writer.wait()
            writer.write(chunk, at: done)
            try hash.update(chunk)
            progress(done)
            done += UInt64(count)
        }
        try writer.wait()
        progress(done)
        let streamed = try hash.finalizeHex()
        guard streamed == expected else {
            throw HCOSError(
                .corrupt, "the root image's digest is sha256:\(streamed), the signed manifest says sha256:\(expected)")
        }
        do {
            try device.sync()
        } catch let error as SystemError {
            throw HCOSError(.io, "cannot flush \(target) to the disk", cause: error)
        }
    }

    /// Reads the slot back from the disk (not the page cache) and compares it with the digest.
    public func verify(size: UInt64, digest expected: String, progress: (UInt64) -> Void = { _ in }) throws {
        let readBack = try readBackDigest(size: size, progress: progress)
        guard readBack == expected else {
            throw HCOSError(
                .io, "\(target) read back sha256:\(readBack) after writing sha256:\(expected): the disk lost the write")
        }
    }

    /// SHA-256 of the slot's first `size` bytes as stored on the disk (page cache dropped first).
    public func readBackDigest(size: UInt64, progress: (UInt64) -> Void) throws -> String {
        let device = try FileDescriptor(path: target.path, flags: O_RDONLY)
        if (try? BlockDevice.isBlockDevice(device)) == true {
            try BlockDevice.flushBuffers(device)
        } else {
            device.dropCache(at: target.offset, count: size)
        }
        var hash = try SHA256()
        var done: UInt64 = 0
        while done < size {
            let count = Int(min(UInt64(Self.chunkSize), size - done))
            let chunk = try device.read(at: target.offset + done, count: count)
            guard chunk.count == count else {
                throw HCOSError(.io, "\(target) ends before byte \(size)")
            }
            try hash.update(chunk)
            done += UInt64(count)
            progress(done)
        }
        return try hash.finalizeHex()
    }
}

/// Writes one chunk at a time on a thread of its own while the caller reads and hashes the
/// next, and keeps the disk busy all along: with the hash, the write and one fsync at the end
/// in a row on one thread, the slot writer ran at two thirds of dd's speed on the same disk.
private final class ChunkWriter: Sendable {
    let device: FileDescriptor
    let target: PartitionRef
    let size: UInt64
    private let queue = DispatchQueue(label: "hcos.slot-writer")
    private let group = DispatchGroup()
    private let failure = Mutex<HCOSError?>(nil)
    /// Chunks written but not yet waited for (32 MiB).
    static let window: UInt64 = 8

    init(device: FileDescriptor, target: PartitionRef, size: UInt64) {
        self.device = device
        self.target = target
        self.size = size
    }

    /// Queues `chunk` for the slot's byte `position`; a failure surfaces in the next `wait`.
    func write(_ chunk: [UInt8], at position: UInt64) {
        queue.async(group: group) { [self] in
            guard failure.withLock({ $0 == nil }) else { return }
            do {
                let start = target.offset + position
                try device.write(chunk, at: start)
                // The disk starts on this chunk now, and the chunk `window` behind is waited
                // for: the disk works while the caller reads and hashes (not only in the final
                // fsync), with a queue deep enough to keep it busy, and a node's page cache
                // holds `window` chunks of the image, not all of it.
                let chunkSize = UInt64(SlotWriter.chunkSize)
                try writeBack(at: start, count: UInt64(chunk.count), wait: false)
                if position >= Self.window * chunkSize {
                    let behind = start - Self.window * chunkSize
                    try writeBack(at: behind, count: chunkSize, wait: true)
                    device.dropCache(at: behind, count: chunkSize)
                }
            } catch {
                let errno = (error as? SystemError)?.errno
                let failed = HCOSError(
                    errno == ENOSPC ? .noSpace : .io, "cannot write \(target) at byte \(position) of \(size)",
                    cause: error)
                failure.withLock { $0 = failed }
            }
        }
    }

    /// Early writeback is a means to speed, not to safety (the final fsync is): a file system
    /// that does not do it (EINVAL, EOPNOTSUPP) is fine; a disk error is not.
    private func writeBack(at offset: UInt64, count: UInt64, wait: Bool) throws {
        do {
            try device.writeBack(at: offset, count: count, wait: wait)
        } catch let error as SystemError where error.errno != EIO && error.errno != ENOSPC {
            return
        }
    }

    /// Waits until every queued chunk is written; throws the first write that failed.
    func wait() throws {
        group.wait()
        if let failed = failure.withLock({ $0 }) { throw failed }
    }
}
