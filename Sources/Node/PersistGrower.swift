import CShim
import Disk
import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// First-boot growth of PERSIST: when the disk is larger than the GPT says (an image written to
/// a bigger disk, or a disk enlarged by the cloud), move the backup GPT to the end, extend the
/// PERSIST entry, tell the kernel the new partition size (BLKPG, the partition stays mounted)
/// and grow ext4 online (EXT4_IOC_RESIZE_FS). Each step compares the actual state first, so a
/// second run, or a run after an interrupted one, does only what is left.
public struct PersistGrower {
    public struct Outcome: Sendable, Equatable {
        public var partitionGrown: Bool
        public var filesystemGrown: Bool
        public var partitionBytes: UInt64
        public var filesystemBytes: UInt64
    }

    let mountPoint: String
    let sysfs: String
    let devices: String
    let logger: Logger

    public init(mountPoint: String = "/persist", sysfs: String = "/sys", devices: String = "/dev", logger: Logger) {
        self.mountPoint = mountPoint
        self.sysfs = sysfs
        self.devices = devices
        self.logger = logger
    }

    public func run() throws -> Outcome {
        let mounts = try MountInfo.current()
        guard let mount = MountInfo.at(mountPoint, in: mounts), mount.fsType == "ext4" else {
            throw HCOSError(.notFound, "\(mountPoint) is not an ext4 mount; PERSIST was not mounted at boot")
        }
        // /sys/dev/block/MAJ:MIN -> …/block/vda/vda5
        let partitionLink = "\(sysfs)/dev/block/\(mount.majorMinor)"
        guard let resolved = realpath(partitionLink, nil) else {
            throw HCOSError(.notFound, "cannot resolve \(partitionLink)", cause: SystemError("realpath", errno: errno))
        }
        let partitionPath = String(cString: resolved)
        free(resolved)
        let partitionName = partitionPath.split(separator: "/").last.map(String.init) ?? ""
        let diskName = partitionPath.split(separator: "/").dropLast().last.map(String.init) ?? ""
        guard let number = Int(try FileSystem.readString("\(partitionPath)/partition").trimmed()) else {
            throw HCOSError(.notFound, "\(partitionName) is not a partition")
        }

        let disk = try FileDescriptor(path: "\(devices)/\(diskName)", flags: O_RDWR)
        let diskSize = try BlockDevice.size(of: disk)
        let table = try GPTTable.read(from: disk, size: diskSize)
        let persist = try table.partition(named: "PERSIST")
        guard try table.partitionNumber(named: "PERSIST") == number else {
            throw HCOSError(
                .ambiguous, "\(mountPoint) is partition \(number) of \(diskName), but PERSIST is another partition")
        }
        var partitionGrown = false
        var current = persist
        if let grown = try table.growLastPartition(named: "PERSIST", to: diskSize) {
            let updated = try grown.partition(named: "PERSIST")
            logger.info(
                "growing the PERSIST partition",
                [
                    ("disk", diskName), ("from", ByteSize.format(persist.sectorCount * 512)),
                    ("to", ByteSize.format(updated.sectorCount * 512)),
                ])
            try grown.write(to: disk, diskSize: diskSize)
            try disk.sync()
            try BlockDevice.resizePartition(
                disk, partitionNumber: number, startBytes: updated.firstLBA * 512,
                lengthBytes: updated.sectorCount * 512)
            current = updated
            partitionGrown = true
        } else if try partitionSectors(partitionPath) < current.sectorCount {
            // The GPT was grown by an earlier, interrupted run; the kernel still has the old size.
            try BlockDevice.resizePartition(
                disk, partitionNumber: number, startBytes: current.firstLBA * 512,
                lengthBytes: current.sectorCount * 512)
            partitionGrown = true
        }

        let partitionBytes = current.sectorCount * 512
        let superblock = try Ext4Superblock.read(device: "\(devices)/\(partitionName)")
        var filesystemBytes = superblock.blockCount * superblock.blockSize
        var filesystemGrown = false
        let targetBlocks = partitionBytes / superblock.blockSize
        if targetBlocks > superblock.blockCount {
            logger.info(
                "growing the PERSIST filesystem online",
                [
                    ("from", ByteSize.format(filesystemBytes)),
                    ("to", ByteSize.format(targetBlocks * superblock.blockSize)),
                ])
            let directory = try FileDescriptor(path: mountPoint, flags: O_RDONLY | O_DIRECTORY)
            try Syscall.call("ioctl(EXT4_IOC_RESIZE_FS)", mountPoint) { hcos_ext4_resize(directory.fd, targetBlocks) }
            filesystemBytes = targetBlocks * superblock.blockSize
            filesystemGrown = true
        }
        if !partitionGrown && !filesystemGrown {
            logger.info("PERSIST already fills the disk", [("size", ByteSize.format(filesystemBytes))])
        }
        return Outcome(
            partitionGrown: partitionGrown, filesystemGrown: filesystemGrown, partitionBytes: partitionBytes,
            filesystemBytes: filesystemBytes)
    }

    func partitionSectors(_ sysPath: String) throws -> UInt64 {
        UInt64(try FileSystem.readString("\(sysPath)/size").trimmed()) ?? 0
    }
}

/// The fields of the ext4 superblock we need (kernel Documentation/filesystems/ext4, "Super Block").
public struct Ext4Superblock: Sendable {
    public var blockCount: UInt64
    public var blockSize: UInt64

    public static func read(device: String) throws -> Ext4Superblock {
        let file = try FileDescriptor(path: device, flags: O_RDONLY)
        return try parse(try file.read(at: 1024, count: 1024))
    }

    public static func parse(_ bytes: [UInt8]) throws -> Ext4Superblock {
        guard bytes.count >= 0x160, bytes[0x38] == 0x53, bytes[0x39] == 0xEF else {
            throw HCOSError(.corrupt, "not an ext4 superblock (bad magic)")
        }
        func le32(_ offset: Int) -> UInt64 {
            (0..<4).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
        }
        let incompat = le32(0x60)
        var blocks = le32(0x4)
        if incompat & 0x80 != 0 { blocks |= le32(0x150) << 32 }  // INCOMPAT_64BIT
        return Ext4Superblock(blockCount: blocks, blockSize: 1024 << le32(0x18))
    }
}
