import HCOSCore

/// The two copies of the hcos GRUB environment (`/grub/grubenv` with `HCOS_COPY=1` and
/// `/grub/grubenv2` with `HCOS_COPY=2`, 1024-byte files on the FAT EFI partition), found and
/// rewritten in place on the raw disk without mounting it, as GRUB's `save_env` does.
public final class GrubEnvStore: @unchecked Sendable {
    public let file: FileDescriptor
    public let region: Range<UInt64>
    /// Absolute byte offsets of copy 1 and copy 2; nil when the copy could not be identified.
    public let copy1Offset: UInt64?
    public let copy2Offset: UInt64?

    static let chunkSize = 1 << 20
    static let sector = 512

    /// Scans `region` (the EFI partition's bytes) at every 512-byte boundary, in 1 MiB reads.
    /// `.ambiguous` if a copy marker appears twice; `.notFound` if neither copy appears. A missing
    /// single copy is tolerated here (`load` falls back) but `save` refuses to run without both.
    public init(file: FileDescriptor, region: Range<UInt64>) throws {
        self.file = file
        self.region = region
        var found: [Int: [UInt64]] = [1: [], 2: []]
        let header = GrubEnvBlock.header
        var chunkStart = region.lowerBound
        while chunkStart < region.upperBound {
            let length = Int(min(UInt64(GrubEnvStore.chunkSize), region.upperBound - chunkStart))
            let chunk = try file.read(at: chunkStart, count: length)
            var offset = 0
            while offset + header.count <= chunk.count {
                if chunk[offset] == header[0] && chunk[offset..<offset + header.count].elementsEqual(header) {
                    let absolute = chunkStart + UInt64(offset)
                    if absolute + UInt64(GrubEnvBlock.size) <= region.upperBound,
                        let copy = try GrubEnvStore.copyMarker(file: file, at: absolute)
                    {
                        found[copy, default: []].append(absolute)
                    }
                }
                offset += GrubEnvStore.sector
            }
            if chunk.count < length { break }
            chunkStart += UInt64(length)
        }
        for copy in [1, 2] where (found[copy] ?? []).count > 1 {
            let offsets = (found[copy] ?? []).map(String.init).joined(separator: ", ")
            throw HCOSError(
                .ambiguous,
                "\(file.path): GRUB environment copy \(copy) found at several offsets: \(offsets)")
        }
        copy1Offset = found[1]?.first
        copy2Offset = found[2]?.first
        if copy1Offset == nil && copy2Offset == nil {
            throw HCOSError(
                .notFound,
                "\(file.path): no hcos GRUB environment block (HCOS_COPY=1 or 2) in bytes \(region.lowerBound)..<\(region.upperBound)"
            )
        }
    }

    /// Which copy a block at `offset` claims to be: the line `HCOS_COPY=1` or `=2` within the
    /// first sector, found without requiring the rest of the block to be valid.
    static func copyMarker(file: FileDescriptor, at offset: UInt64) throws -> Int? {
        let sector = try file.read(at: offset, count: sector)
        let lines = sector.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .dropLast()
        for line in lines {
            switch String(decoding: line, as: UTF8.self) {
            case "HCOS_COPY=1": return 1
            case "HCOS_COPY=2": return 2
            default: continue
            }
        }
        return nil
    }

    public struct Loaded: Sendable {
        public var state: SlotState
        /// The copy the state came from (1 or 2).
        public var copy: Int
        /// Why the other copy was not used, if it was not (damaged or missing).
        public var problems: [String]
    }

    /// The state from copy 1 if it is valid, else from copy 2.
    public func load() throws -> Loaded {
        var problems: [String] = []
        for (copy, offset) in [(1, copy1Offset), (2, copy2Offset)] {
            guard let offset else {
                problems.append("copy \(copy) not found")
                continue
            }
            do {
                let block = try GrubEnvBlock(parsing: try file.read(at: offset, count: GrubEnvBlock.size))
                guard block["HCOS_COPY"] == String(copy) else {
                    throw HCOSError(.corrupt, "HCOS_COPY is '\(block["HCOS_COPY"] ?? "")'")
                }
                return Loaded(state: try SlotState(block: block), copy: copy, problems: problems)
            } catch let error as HCOSError {
                problems.append("copy \(copy) at byte \(offset): \(error.message)")
            }
        }
        throw HCOSError(
            .corrupt, "\(file.path): no valid GRUB environment copy: " + problems.joined(separator: "; "))
    }

    /// Rewrites copy 1, fsync, then copy 2, fsync: at any instant one copy is whole.
    public func save(_ state: SlotState) throws {
        guard let copy1Offset, let copy2Offset else {
            let missing = copy1Offset == nil ? 1 : 2
            throw HCOSError(
                .notFound,
                "\(file.path): GRUB environment copy \(missing) was not found; cannot save both copies")
        }
        for (copy, offset) in [(1, copy1Offset), (2, copy2Offset)] {
            let bytes = try state.block(copy: copy).serialized()
            try file.write(bytes, at: offset)
            try file.sync()
            guard try file.read(at: offset, count: bytes.count) == bytes else {
                throw HCOSError(
                    .io,
                    "\(file.path): GRUB environment copy \(copy) at byte \(offset) did not read back as written"
                )
            }
        }
    }
}
