import Disk
import Foundation
import HCOSCore

/// The GPT layout of an hcos disk and the assembly of the disk image file from partition
/// images written at their offsets (no loop devices).
public enum DiskLayoutPlan {
    public static let biosBootSize: UInt64 = 1 << 20
    /// GPT structures and 1 MiB alignment at both ends.
    static let overhead: UInt64 = 2 << 20

    public static func requests(config: BuildConfig) -> [GPTLayout.Request] {
        [
            GPTLayout.Request(name: "BIOS-BOOT", type: .biosBoot, size: .bytes(biosBootSize)),
            GPTLayout.Request(name: "EFI", type: .efiSystem, size: .bytes(config.espSize)),
            GPTLayout.Request(name: "ROOT-A", type: .linuxRootX86_64, size: .bytes(config.slotSize)),
            GPTLayout.Request(name: "ROOT-B", type: .linuxRootX86_64, size: .bytes(config.slotSize)),
            GPTLayout.Request(name: "PERSIST", type: .linuxFilesystem, size: .rest),
        ]
    }

    public static func minimumDiskSize(config: BuildConfig) -> UInt64 {
        biosBootSize + config.espSize + 2 * config.slotSize + config.persistSize + overhead
    }
}

public struct DiskAssembler {
    let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    /// Writes a sparse raw disk image: GPT, GRUB boot sectors, and each partition's content.
    public func assemble(
        output: String, config: BuildConfig, seed: String, contents: [String: String], persist: String,
        bootImage: [UInt8], coreImage: [UInt8]
    ) throws -> GPTTable {
        let fm = FileManager.default
        if fm.fileExists(atPath: output) { try fm.removeItem(atPath: output) }
        let table = try GPTLayout.plan(
            diskSize: config.diskSize, partitions: DiskLayoutPlan.requests(config: config), seed: seed)
        let file = try FileDescriptor(path: output, flags: O_RDWR | O_CREAT | O_TRUNC)
        try file.truncate(to: config.diskSize)
        try table.write(to: file, diskSize: config.diskSize)
        let persistPartition = try table.partition(named: "PERSIST")
        for (name, source) in contents.sorted(by: { $0.key < $1.key }) {
            let partition = try table.partition(named: name)
            try copy(source, into: file, partition: partition, label: name)
        }
        try copy(persist, into: file, partition: persistPartition, label: "PERSIST")
        try GrubBootSectors.install(
            bootImage: bootImage, coreImage: coreImage, into: file, partition: try table.partition(named: "BIOS-BOOT"))
        try file.sync()
        return table
    }

    /// Copies a file into a partition, leaving all-zero chunks as holes (the image stays sparse).
    func copy(_ source: String, into disk: FileDescriptor, partition: GPTPartition, label: String) throws {
        let input = try FileDescriptor(path: source, flags: O_RDONLY)
        let size = try input.size()
        let capacity = partition.sectorCount * 512
        guard size <= capacity else {
            throw HCOSError(
                .noSpace,
                "\(label) content (\(ByteSize.format(size))) does not fit its partition (\(ByteSize.format(capacity)))")
        }
        let base = partition.firstLBA * 512
        let chunk = 1 << 20
        var offset: UInt64 = 0
        while offset < size {
            let bytes = try input.read(at: offset, count: chunk)
            if bytes.isEmpty { break }
            if bytes.contains(where: { $0 != 0 }) {
                try disk.write(bytes, at: base + offset)
            }
            offset += UInt64(bytes.count)
        }
    }
}
