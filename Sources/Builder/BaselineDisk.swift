import Disk
import Foundation
import HCOSCore

/// The disk of the benchmark's "standard OS" baseline: a GPT with BIOS-BOOT, an EFI system
/// partition holding only GRUB and its grub.cfg, and one read-write ext4 ROOT that fills the
/// rest (kernel and initramfs stay in the root's /boot, as on a general-purpose cloud image).
/// Assembled like an hcos disk: partition images written at their offsets, no mounts.
public struct BaselineDisk {
    /// GRUB reads the kernel from the ext4 root, so both GRUB images also carry ext2.
    static let modules = BootPartitionBuilder.commonModules + ["ext2", "search_fs_uuid"]

    public let diskSize: UInt64
    public let espSize: UInt64
    let logger: Logger

    public init(diskSize: UInt64, espSize: UInt64, logger: Logger) {
        self.diskSize = diskSize
        self.espSize = espSize
        self.logger = logger
    }

    /// BIOS-BOOT (1 MiB), EFI, ROOT (the rest of the disk).
    public func plan(seed: String) throws -> GPTTable {
        try GPTLayout.plan(
            diskSize: diskSize,
            partitions: [
                GPTLayout.Request(name: "BIOS-BOOT", type: .biosBoot, size: .bytes(DiskLayoutPlan.biosBootSize)),
                GPTLayout.Request(name: "EFI", type: .efiSystem, size: .bytes(espSize)),
                GPTLayout.Request(name: "ROOT", type: .linuxRootX86_64, size: .rest),
            ],
            seed: seed)
    }

    /// A FAT image with GRUB for UEFI (/EFI/BOOT/BOOTX64.EFI) and `grubConfig` as /grub/grub.cfg.
    public func makeESP(output: String, grubConfig: String, volumeID: String, work: String) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: output) { try fm.removeItem(atPath: output) }
        let efi = "\(work)/BOOTX64.EFI"
        try Command(
            "grub-mkimage",
            ["-O", "x86_64-efi", "-o", efi, "-p", "/grub"] + BootPartitionBuilder.efiModules + Self.modules
        ).run()
        let config = "\(work)/grub.cfg"
        try grubConfig.write(toFile: config, atomically: true, encoding: .utf8)
        try Command("mkfs.vfat", ["-C", "-n", "EFI", "-i", volumeID, "-s", "4", output, String(espSize / 1024)]).run()
        for dir in ["/EFI", "/EFI/BOOT", "/grub"] {
            try Command("mmd", ["-i", output, "::\(dir)"]).run()
        }
        try Command("mcopy", ["-i", output, "-o", efi, "::/EFI/BOOT/BOOTX64.EFI"]).run()
        try Command("mcopy", ["-i", output, "-o", config, "::/grub/grub.cfg"]).run()
    }

    /// GRUB's BIOS core image; it finds /grub on the ESP (partition 2).
    public func biosCoreImage(work: String) throws -> [UInt8] {
        let output = "\(work)/core.img"
        try Command(
            "grub-mkimage",
            ["-O", "i386-pc", "-o", output, "-p", "(,gpt2)/grub"] + BootPartitionBuilder.biosModules + Self.modules
        ).run()
        return Array(try Data(contentsOf: URL(fileURLWithPath: output)))
    }

    /// Writes the sparse raw disk: GPT, GRUB's boot sectors, the ESP and the root image.
    public func assemble(output: String, table: GPTTable, esp: String, root: String, coreImage: [UInt8]) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: output) { try fm.removeItem(atPath: output) }
        let file = try FileDescriptor(path: output, flags: O_RDWR | O_CREAT | O_TRUNC)
        try file.truncate(to: diskSize)
        try table.write(to: file, diskSize: diskSize)
        let assembler = DiskAssembler(logger: logger)
        try assembler.copy(esp, into: file, partition: try table.partition(named: "EFI"), label: "EFI")
        try assembler.copy(root, into: file, partition: try table.partition(named: "ROOT"), label: "ROOT")
        try GrubBootSectors.install(
            bootImage: try BootPartitionBuilder.biosBootImage(), coreImage: coreImage, into: file,
            partition: try table.partition(named: "BIOS-BOOT"))
        try file.sync()
    }

    /// Bytes a (sparse) file occupies on the host file system.
    public static func allocatedSize(_ path: String) -> UInt64 { Build.allocatedSize(path) }
}
