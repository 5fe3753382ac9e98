import HCOSCore

/// One entry of a GUID Partition Table (UEFI spec 2.10, section 5.3.3, "GPT Partition Entry
/// Array"). `name` is stored as up to 36 UTF-16LE code units.
public struct GPTPartition: Equatable, Sendable {
    public var type: GUID
    public var unique: GUID
    public var firstLBA: UInt64
    public var lastLBA: UInt64
    public var attributes: UInt64
    public var name: String

    public init(
        type: GUID, unique: GUID, firstLBA: UInt64, lastLBA: UInt64, attributes: UInt64 = 0,
        name: String
    ) {
        self.type = type
        self.unique = unique
        self.firstLBA = firstLBA
        self.lastLBA = lastLBA
        self.attributes = attributes
        self.name = name
    }

    public var sectorCount: UInt64 { lastLBA >= firstLBA ? lastLBA - firstLBA + 1 : 0 }
}

/// A GUID Partition Table with its protective MBR (UEFI spec 2.10, chapter 5, "GUID Partition
/// Table (GPT) Disk Layout"). Partition number N (as the kernel counts, `/dev/sdaN`) is
/// `partitions[N - 1]`: entries are written in array order from entry 0, and reading compacts
/// unused entries away.
public struct GPTTable: Equatable, Sendable {
    public static let entryCount = 128
    public static let entrySize = 128
    static let signature = Array("EFI PART".utf8)
    static let headerSize = 92

    /// Which header a table was read from.
    public enum Source: Equatable, Sendable {
        /// Not read from a disk (planned or built in memory).
        case new
        case primary
        /// The primary header or its entries were unusable; the table came from the backup.
        case backup
    }

    public var diskGUID: GUID
    public var partitions: [GPTPartition]
    public var sectorSize: UInt64

    /// Set by `read`: where the table came from and where its backup header is.
    public internal(set) var source: Source = .new
    /// The LBA of the backup header (recorded in the primary header, or where the backup was found).
    public internal(set) var backupLBA: UInt64?
    /// Sectors of the device the table was read from.
    public internal(set) var deviceSectors: UInt64?

    public init(diskGUID: GUID, partitions: [GPTPartition], sectorSize: UInt64 = 512) {
        self.diskGUID = diskGUID
        self.partitions = partitions
        self.sectorSize = sectorSize
    }

    /// True when the table read does not sit where a write for the device's current size would
    /// put it: the backup header is not in the last sector (the disk was enlarged after the image
    /// was written) or the primary copy was damaged.
    public var needsRelocation: Bool {
        guard let backupLBA, let deviceSectors else { return true }
        return source != .primary || backupLBA != deviceSectors - 1
    }

    static func entrySectors(sectorSize: UInt64) -> UInt64 {
        UInt64(entryCount * entrySize).roundedUp(to: sectorSize) / sectorSize
    }

    /// The first and last LBA a partition may use on a disk of `diskSize` bytes
    /// (34 and sectors - 34 with 512-byte sectors).
    public static func usableRange(diskSize: UInt64, sectorSize: UInt64 = 512) -> ClosedRange<UInt64>? {
        let sectors = diskSize / sectorSize
        let reserved = 1 + entrySectors(sectorSize: sectorSize)
        guard sectors > 2 * reserved + 1 else { return nil }
        return (1 + reserved)...(sectors - 1 - reserved)
    }

    // MARK: - Lookup

    /// The single partition labelled `name`; `.ambiguous` when several are, `.notFound` when none.
    public func partition(named name: String) throws -> GPTPartition {
        partitions[try index(named: name)]
    }

    /// The kernel's 1-based partition number of the partition labelled `name`.
    public func partitionNumber(named name: String) throws -> Int { try index(named: name) + 1 }

    func index(named name: String) throws -> Int {
        let matches = partitions.indices.filter { partitions[$0].name == name }
        guard let first = matches.first else {
            let names = partitions.map(\.name).joined(separator: ", ")
            throw HCOSError(.notFound, "no GPT partition is labelled '\(name)' (labels: \(names))")
        }
        guard matches.count == 1 else {
            let numbers = matches.map { String($0 + 1) }.joined(separator: ", ")
            throw HCOSError(
                .ambiguous, "\(matches.count) GPT partitions are labelled '\(name)' (numbers \(numbers))")
        }
        return first
    }

    // MARK: - Growing

    /// A table in which `name` (which must be the last partition on disk) ends at the last usable
    /// sector of a disk of `diskSize` bytes, rounded down to `alignment`, with the backup header
    /// moved to the new end. Nil when nothing would change: the partition already ends there and
    /// the table read was in place. Never shrinks the partition.
    public func growLastPartition(
        named name: String, to diskSize: UInt64, alignment: UInt64 = 1 << 20
    ) throws
        -> GPTTable?
    {
        let index = try index(named: name)
        let target = partitions[index]
        if let later = partitions.first(where: { $0 != target && $0.lastLBA >= target.firstLBA }) {
            throw HCOSError(
                .invalidArgument,
                "cannot grow '\(name)': partition '\(later.name)' lies after it (LBA \(later.firstLBA)-\(later.lastLBA))"
            )
        }
        guard let usable = GPTTable.usableRange(diskSize: diskSize, sectorSize: sectorSize) else {
            throw HCOSError(.invalidArgument, "a disk of \(diskSize) bytes cannot hold a GPT")
        }
        guard target.lastLBA <= usable.upperBound else {
            throw HCOSError(
                .invalidArgument,
                "cannot grow '\(name)': it ends at LBA \(target.lastLBA), beyond the last usable LBA "
                    + "\(usable.upperBound) of a \(diskSize)-byte disk (the disk shrank?)")
        }
        let alignSectors = max(1, alignment / sectorSize)
        let alignedEnd = (usable.upperBound + 1).roundedDown(to: alignSectors)
        let newLast = max(target.lastLBA, alignedEnd > 0 ? alignedEnd - 1 : 0)
        let sameDevice = deviceSectors == diskSize / sectorSize
        if newLast == target.lastLBA && sameDevice && !needsRelocation { return nil }
        var grown = self
        grown.partitions[index].lastLBA = newLast
        grown.source = .new
        grown.backupLBA = nil
        grown.deviceSectors = nil
        return grown
    }

    // MARK: - Writing

    /// Writes the protective MBR (keeping bytes 0..<446 of the existing LBA 0: GRUB's boot code
    /// and the disk signature), the backup entries and header at the end of the disk, then the
    /// primary header and entries, so that a crash leaves at least one consistent copy.
    public func write(to file: FileDescriptor, diskSize: UInt64) throws {
        let ss = sectorSize
        guard let usable = GPTTable.usableRange(diskSize: diskSize, sectorSize: ss) else {
            throw HCOSError(.invalidArgument, "a disk of \(diskSize) bytes is too small for a GPT")
        }
        try validate(usable: usable)
        let sectors = diskSize / ss
        let entrySectors = GPTTable.entrySectors(sectorSize: ss)
        let entries = encodeEntries()
        let entriesCRC = CRC32.checksum(entries)

        let backupEntriesLBA = sectors - 1 - entrySectors
        let backup = header(
            myLBA: sectors - 1, alternateLBA: 1, entriesLBA: backupEntriesLBA, entriesCRC: entriesCRC,
            usable: usable)
        let primary = header(
            myLBA: 1, alternateLBA: sectors - 1, entriesLBA: 2, entriesCRC: entriesCRC, usable: usable)

        try file.write(entries, at: backupEntriesLBA * ss)
        try file.write(backup, at: (sectors - 1) * ss)
        try file.sync()
        try file.write(entries, at: 2 * ss)
        try file.write(primary, at: ss)
        try file.write(
            protectiveMBR(existing: try file.read(at: 0, count: 512), sectors: sectors), at: 0)
        try file.sync()
    }

    func validate(usable: ClosedRange<UInt64>) throws {
        guard partitions.count <= GPTTable.entryCount else {
            throw HCOSError(
                .invalidArgument,
                "\(partitions.count) partitions do not fit in \(GPTTable.entryCount) GPT entries")
        }
        for p in partitions {
            guard p.firstLBA <= p.lastLBA, usable.contains(p.firstLBA), usable.contains(p.lastLBA) else {
                throw HCOSError(
                    .invalidArgument,
                    "partition '\(p.name)' (LBA \(p.firstLBA)-\(p.lastLBA)) is outside the usable LBAs \(usable)"
                )
            }
            guard p.name.utf16.count <= 36 else {
                throw HCOSError(
                    .invalidArgument, "partition name '\(p.name)' is longer than 36 UTF-16 units")
            }
            guard !p.type.isZero else {
                throw HCOSError(
                    .invalidArgument, "partition '\(p.name)' has the zero type GUID (means unused)")
            }
        }
        let sorted = partitions.sorted { $0.firstLBA < $1.firstLBA }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.lastLBA >= b.firstLBA {
            throw HCOSError(.invalidArgument, "partitions '\(a.name)' and '\(b.name)' overlap")
        }
    }

    func encodeEntries() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: GPTTable.entryCount * GPTTable.entrySize)
        for (index, p) in partitions.enumerated() {
            let base = index * GPTTable.entrySize
            bytes.replaceSubrange(base..<base + 16, with: p.type.gptBytes)
            bytes.replaceSubrange(base + 16..<base + 32, with: p.unique.gptBytes)
            bytes.writeLE(p.firstLBA, at: base + 32)
            bytes.writeLE(p.lastLBA, at: base + 40)
            bytes.writeLE(p.attributes, at: base + 48)
            for (unit, code) in p.name.utf16.prefix(36).enumerated() {
                bytes.writeLE(code, at: base + 56 + 2 * unit)
            }
        }
        return bytes
    }

    /// UEFI spec 2.10 table 5.5, "GPT Header".
    func header(
        myLBA: UInt64, alternateLBA: UInt64, entriesLBA: UInt64, entriesCRC: UInt32,
        usable: ClosedRange<UInt64>
    )
        -> [UInt8]
    {
        var h = [UInt8](repeating: 0, count: Int(sectorSize))
        h.replaceSubrange(0..<8, with: GPTTable.signature)
        h.writeLE(UInt32(0x0001_0000), at: 8)
        h.writeLE(UInt32(GPTTable.headerSize), at: 12)
        h.writeLE(myLBA, at: 24)
        h.writeLE(alternateLBA, at: 32)
        h.writeLE(usable.lowerBound, at: 40)
        h.writeLE(usable.upperBound, at: 48)
        h.replaceSubrange(56..<72, with: diskGUID.gptBytes)
        h.writeLE(entriesLBA, at: 72)
        h.writeLE(UInt32(GPTTable.entryCount), at: 80)
        h.writeLE(UInt32(GPTTable.entrySize), at: 84)
        h.writeLE(entriesCRC, at: 88)
        h.writeLE(CRC32.checksum(h[0..<GPTTable.headerSize]), at: 16)
        return h
    }

    /// UEFI spec 2.10 section 5.2.3, "Protective MBR": one partition of type 0xEE from LBA 1.
    func protectiveMBR(existing: [UInt8], sectors: UInt64) -> [UInt8] {
        var mbr = existing.padded(to: 512)
        for index in 446..<510 { mbr[index] = 0 }
        mbr.replaceSubrange(446..<454, with: [0x00, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF])
        mbr.writeLE(UInt32(1), at: 454)
        mbr.writeLE(UInt32(min(sectors - 1, 0xFFFF_FFFF)), at: 458)
        mbr[510] = 0x55
        mbr[511] = 0xAA
        return mbr
    }

    // MARK: - Reading

    struct Header {
        var myLBA: UInt64
        var alternateLBA: UInt64
        var firstUsable: UInt64
        var lastUsable: UInt64
        var diskGUID: GUID
        var entriesLBA: UInt64
        var entryCount: Int
        var entrySize: Int
        var entriesCRC: UInt32
    }

    /// Reads and checks the table of a disk (or image) of `size` bytes: signature, header CRC and
    /// entries CRC of the primary copy, else of the backup (in the last sector, or where the
    /// primary header says it is). A table whose backup is not at the end of the device (the disk
    /// was enlarged) reads fine and reports `needsRelocation`.
    public static func read(from file: FileDescriptor, size: UInt64, sectorSize: UInt64 = 512) throws
        -> GPTTable
    {
        let sectors = size / sectorSize
        guard sectors >= 3 else {
            throw HCOSError(.corrupt, "\(file.path): \(size) bytes is too small to hold a GPT")
        }
        var problems: [String] = []
        var candidates: [UInt64] = [1, sectors - 1]
        let primarySector = try file.read(at: sectorSize, count: Int(sectorSize)).padded(
            to: Int(sectorSize))
        if let primary = try? parseHeader(primarySector, at: 1, sectors: sectors),
            !candidates.contains(primary.alternateLBA)
        {
            candidates.append(primary.alternateLBA)
        }
        for lba in candidates {
            do {
                let sector = try file.read(at: lba * sectorSize, count: Int(sectorSize)).padded(
                    to: Int(sectorSize))
                let header = try parseHeader(sector, at: lba, sectors: sectors)
                let partitions = try readEntries(file, header: header, sectorSize: sectorSize)
                var table = GPTTable(
                    diskGUID: header.diskGUID, partitions: partitions, sectorSize: sectorSize)
                table.source = lba == 1 ? .primary : .backup
                table.backupLBA = lba == 1 ? header.alternateLBA : lba
                table.deviceSectors = sectors
                return table
            } catch let error as HCOSError {
                problems.append("\(lba == 1 ? "primary" : "backup") header at LBA \(lba): \(error.message)")
            }
        }
        throw HCOSError(.corrupt, "\(file.path): no valid GPT: " + problems.joined(separator: "; "))
    }

    static func parseHeader(_ h: [UInt8], at lba: UInt64, sectors: UInt64) throws -> Header {
        guard Array(h[0..<8]) == signature else { throw HCOSError(.corrupt, "no 'EFI PART' signature") }
        let size = Int(h.readLE(UInt32.self, at: 12))
        guard size >= headerSize && size <= h.count else {
            throw HCOSError(.corrupt, "bad header size \(size)")
        }
        var zeroed = Array(h[0..<size])
        zeroed.writeLE(UInt32(0), at: 16)
        let stored = h.readLE(UInt32.self, at: 16)
        guard CRC32.checksum(zeroed) == stored else { throw HCOSError(.corrupt, "header CRC mismatch") }
        let header = Header(
            myLBA: h.readLE(UInt64.self, at: 24), alternateLBA: h.readLE(UInt64.self, at: 32),
            firstUsable: h.readLE(UInt64.self, at: 40), lastUsable: h.readLE(UInt64.self, at: 48),
            diskGUID: GUID(gptBytes: h[56..<72]), entriesLBA: h.readLE(UInt64.self, at: 72),
            entryCount: Int(h.readLE(UInt32.self, at: 80)), entrySize: Int(h.readLE(UInt32.self, at: 84)),
            entriesCRC: h.readLE(UInt32.self, at: 88))
        guard header.myLBA == lba else {
            throw HCOSError(.corrupt, "header says it is at LBA \(header.myLBA)")
        }
        guard header.entrySize >= 128 && header.entrySize % 8 == 0 && header.entryCount <= 4096 else {
            throw HCOSError(
                .corrupt, "unsupported entry array (\(header.entryCount) × \(header.entrySize) bytes)")
        }
        guard
            header.lastUsable < sectors && header.entriesLBA < sectors
                && header.firstUsable <= header.lastUsable
        else {
            throw HCOSError(
                .corrupt,
                "header describes a disk larger than the device (last usable LBA \(header.lastUsable), device has \(sectors) sectors)"
            )
        }
        return header
    }

    static func readEntries(_ file: FileDescriptor, header: Header, sectorSize: UInt64) throws
        -> [GPTPartition]
    {
        let length = header.entryCount * header.entrySize
        let bytes = try file.read(at: header.entriesLBA * sectorSize, count: length)
        guard bytes.count == length else {
            throw HCOSError(.corrupt, "entry array is cut short by the end of the device")
        }
        guard CRC32.checksum(bytes) == header.entriesCRC else {
            throw HCOSError(.corrupt, "entry array CRC mismatch")
        }
        var partitions: [GPTPartition] = []
        for index in 0..<header.entryCount {
            let base = index * header.entrySize
            let type = GUID(gptBytes: bytes[base..<base + 16])
            if type.isZero { continue }
            var units: [UInt16] = []
            for unit in 0..<36 {
                let code = bytes.readLE(UInt16.self, at: base + 56 + 2 * unit)
                if code == 0 { break }
                units.append(code)
            }
            let p = GPTPartition(
                type: type, unique: GUID(gptBytes: bytes[base + 16..<base + 32]),
                firstLBA: bytes.readLE(UInt64.self, at: base + 32),
                lastLBA: bytes.readLE(UInt64.self, at: base + 40),
                attributes: bytes.readLE(UInt64.self, at: base + 48),
                name: String(decoding: units, as: UTF16.self))
            guard p.firstLBA <= p.lastLBA else {
                throw HCOSError(.corrupt, "entry \(index + 1) ('\(p.name)') ends before it starts")
            }
            partitions.append(p)
        }
        return partitions
    }
}
