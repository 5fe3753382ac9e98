import Foundation
import GrubEnv
import HCOSCore

/// The EFI system partition, built as a FAT image file without mounting (mkfs.vfat + mtools):
/// GRUB for UEFI, the static grub.cfg, the two GRUB environment copies, and each slot's
/// kernel + initramfs + slot.cfg under /A and /B. Also makes GRUB's BIOS core image.
public struct BootPartitionBuilder {
    /// Modules built into both GRUB images (no module directory on the ESP to keep in sync).
    static let commonModules = [
        "part_gpt", "fat", "normal", "configfile", "loadenv", "test", "echo", "linux", "search", "probe",
        "serial", "terminal", "sleep", "reboot", "halt", "cat", "ls", "minicmd",
    ]
    static let biosModules = ["biosdisk"]
    static let efiModules = ["efi_gop", "all_video"]
    /// GRUB's own directory on the ESP; BIOS GRUB finds it on partition 2 of the boot disk.
    static let espPartitionNumber = 2

    let grubConfig: String
    let logger: Logger

    public init(grubConfig: String, logger: Logger) {
        self.grubConfig = grubConfig
        self.logger = logger
    }

    public func biosCoreImage(work: String) throws -> [UInt8] {
        let output = "\(work)/core.img"
        try Command(
            "grub-mkimage",
            ["-O", "i386-pc", "-o", output, "-p", "(,gpt\(Self.espPartitionNumber))/grub"]
                + Self.biosModules + Self.commonModules
        ).run()
        return Array(try Data(contentsOf: URL(fileURLWithPath: output)))
    }

    public static func biosBootImage() throws -> [UInt8] {
        let path = "/usr/lib/grub/i386-pc/boot.img"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HCOSError(.missingTool, "\(path) is missing (install grub-pc-bin; run 'make setup')")
        }
        return Array(data)
    }

    /// The slot's boot files (kernel, initramfs, kernel arguments) as GRUB reads them.
    public struct SlotFiles {
        public var kernel: String
        public var initramfs: String
        public var commandLine: String
    }

    public static func slotConfig(commandLine: String) -> String {
        "# written with this slot's kernel; read by grub.cfg\nset hcos_args=\"\(commandLine)\"\n"
    }

    public func build(output: String, size: UInt64, volumeID: String, slotA: SlotFiles, work: String) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: output) { try fm.removeItem(atPath: output) }
        let efi = "\(work)/BOOTX64.EFI"
        try Command(
            "grub-mkimage", ["-O", "x86_64-efi", "-o", efi, "-p", "/grub"] + Self.efiModules + Self.commonModules
        ).run()
        try Command(
            "mkfs.vfat", ["-C", "-n", "HCOS-EFI", "-i", volumeID, "-s", "4", output, String(size / 1024)]
        ).run()
        let image = output
        func mkdir(_ path: String) throws { try Command("mmd", ["-i", image, "::\(path)"]).run() }
        func put(_ source: String, _ path: String) throws {
            try Command("mcopy", ["-i", image, "-o", source, "::\(path)"]).run()
        }
        for dir in ["/EFI", "/EFI/BOOT", "/grub", "/A", "/B"] { try mkdir(dir) }
        try put(efi, "/EFI/BOOT/BOOTX64.EFI")
        try put(grubConfig, "/grub/grub.cfg")
        for copy in [1, 2] {
            let path = "\(work)/grubenv\(copy)"
            try Data(try SlotState.fresh.block(copy: copy).serialized()).write(to: URL(fileURLWithPath: path))
            try put(path, copy == 1 ? "/grub/grubenv" : "/grub/grubenv2")
        }
        let slotConfig = "\(work)/slot.cfg"
        try Self.slotConfig(commandLine: slotA.commandLine).write(toFile: slotConfig, atomically: true, encoding: .utf8)
        try put(slotA.kernel, "/A/vmlinuz")
        try put(slotA.initramfs, "/A/initrd")
        try put(slotConfig, "/A/slot.cfg")
    }
}
