import HCOSCore

/// Plans a GPT whose partitions start and end on `alignment` boundaries (1 MiB by default, the
/// convention of parted, sgdisk and fdisk, good for any underlying erase-block or RAID geometry).
public enum GPTLayout {
    public enum Size: Equatable, Sendable {
        case bytes(UInt64)
        /// Everything left up to the end of the disk; only the last partition may ask for it.
        case rest
    }

    public struct Request: Equatable, Sendable {
        public var name: String
        public var type: GUID
        public var size: Size
        public var attributes: UInt64

        public init(name: String, type: GUID, size: Size, attributes: UInt64 = 0) {
            self.name = name
            self.type = type
            self.size = size
            self.attributes = attributes
        }
    }

    /// Partitions in request order. With a `seed`, the disk and partition GUIDs derive from it
    /// (reproducible images); without, they are random.
    public static func plan(
        diskSize: UInt64, partitions requests: [Request], alignment: UInt64 = 1 << 20,
        sectorSize: UInt64 = 512,
        seed: String? = nil
    ) throws -> GPTTable {
        guard alignment >= sectorSize && alignment % sectorSize == 0 else {
            throw HCOSError(
                .invalidArgument,
                "alignment \(alignment) is not a multiple of the sector size \(sectorSize)")
        }
        if let index = requests.firstIndex(where: { $0.size == .rest }), index != requests.count - 1 {
            throw HCOSError(
                .invalidArgument,
                "only the last partition may take the rest of the disk ('\(requests[index].name)' is not last)"
            )
        }
        let names = requests.map(\.name)
        if let duplicate = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
            throw HCOSError(.invalidArgument, "two partitions are labelled '\(duplicate)'")
        }
        let alignSectors = alignment / sectorSize
        let backupSectors = 1 + GPTTable.entrySectors(sectorSize: sectorSize)
        var next = alignSectors  // the first aligned LBA after the primary table
        var fixedEnd = next
        var partitions: [GPTPartition] = []
        for request in requests {
            let sectors: UInt64
            switch request.size {
            case .bytes(let bytes):
                guard bytes > 0 else {
                    throw HCOSError(.invalidArgument, "partition '\(request.name)' has size 0")
                }
                sectors = bytes.roundedUp(to: alignment) / sectorSize
                fixedEnd = next + sectors
            case .rest:
                let end = (diskSize / sectorSize).subtractingClamped(backupSectors).roundedDown(
                    to: alignSectors)
                sectors = end.subtractingClamped(next)
            }
            partitions.append(
                GPTPartition(
                    type: request.type,
                    unique: seed.map { GUID.derived(from: "\($0)/partition/\(request.name)") } ?? .random(),
                    firstLBA: next, lastLBA: next + sectors - 1, attributes: request.attributes,
                    name: request.name))
            next += sectors
        }
        // The last partition must end before the backup table; `rest` needs at least one unit.
        let needsRest = requests.last?.size == .rest
        let required = (fixedEnd + (needsRest ? alignSectors : 0) + backupSectors) * sectorSize
        let lastIsEmpty = needsRest && (partitions.last?.sectorCount ?? 0) < alignSectors
        guard diskSize >= required && !lastIsEmpty,
            let usable = GPTTable.usableRange(diskSize: diskSize, sectorSize: sectorSize),
            partitions.allSatisfy({ $0.lastLBA <= usable.upperBound })
        else {
            let minimum = required.roundedUp(to: 1 << 20)
            throw HCOSError(
                .noSpace,
                "a disk of \(diskSize) bytes (\(ByteSize.format(diskSize))) is too small for partitions "
                    + "\(names.joined(separator: ", ")): it needs at least \(minimum) bytes (\(ByteSize.format(minimum)))"
            )
        }
        let diskGUID = seed.map { GUID.derived(from: "\($0)/disk") } ?? .random()
        return GPTTable(diskGUID: diskGUID, partitions: partitions, sectorSize: sectorSize)
    }
}

extension UInt64 {
    fileprivate func subtractingClamped(_ other: UInt64) -> UInt64 { self > other ? self - other : 0 }
}
