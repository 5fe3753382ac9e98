import HCOSCore

/// Installs GRUB's i386-pc boot sectors into a GPT disk or image without grub-install, doing
/// what GRUB 2.06 `grub-bios-setup` does when it embeds core.img in a BIOS boot partition
/// (util/setup.c, `SETUP` with `--no-rs-codes`: core.img is written as is, without the
/// Reed-Solomon redundancy sectors).
///
/// Offsets, from include/grub/i386/pc/boot.h and grub-core/boot/i386/pc/{boot,diskboot}.S:
/// - boot.img `kernel_sector` at 0x5C (8 bytes LE): LBA of core.img's first sector;
/// - boot.img `boot_drive` at 0x64: 0xFF means "use the drive number the BIOS passed in %dl";
/// - boot.img `boot_drive_check` at 0x66: a 2-byte `jmp` that setup.c replaces with two NOPs on
///   hard disks (workaround for BIOSes that pass 0x00/0x01 when booting from 0x80);
/// - boot.img 0x03..<0x5A is a BPB area copied from the existing sector, and 0x1B8..<0x1FE (disk
///   signature and partition table) is kept from the existing sector;
/// - core.img's first sector (diskboot.img) ends with `struct grub_boot_blocklist { uint64 start;
///   uint16 len; uint16 segment; }` (packed, 12 bytes) at 512 - 12; diskboot.S loads `len` sectors
///   from `start` to `segment`:0 and walks backwards until an entry with len 0. setup.c stores
///   start = first sector + 1, len = sectors - 1, segment = 0x820 (kernel segment 0x800 + 512/16)
///   and zeroes the entry before it as terminator.
public enum GrubBootSectors {
    static let kernelSectorOffset = 0x5C
    static let bootDriveOffset = 0x64
    static let driveCheckOffset = 0x66
    static let bpb = 0x03..<0x5A
    static let windowsNTMagic = 0x1B8
    static let partitionTableEnd = 0x1FE
    static let blocklistSize = 12
    static let firstBlocklist = 512 - blocklistSize
    static let coreSegment: UInt16 = 0x820

    /// The patched LBA 0 and core.img (padded to whole sectors), given the current LBA 0.
    public static func patch(
        bootImage: [UInt8], coreImage: [UInt8], existingSector0: [UInt8], coreLBA: UInt64
    )
        throws -> (sector0: [UInt8], core: [UInt8])
    {
        guard bootImage.count == 512 else {
            throw HCOSError(.invalidArgument, "boot.img must be 512 bytes, not \(bootImage.count)")
        }
        guard bootImage[510] == 0x55 && bootImage[511] == 0xAA else {
            throw HCOSError(.invalidArgument, "boot.img lacks the 0x55AA boot signature")
        }
        guard coreImage.count >= 1024 else {
            throw HCOSError(.invalidArgument, "core.img of \(coreImage.count) bytes is too small")
        }
        let sectors = (coreImage.count + 511) / 512
        guard sectors <= 0xFFFF else {
            throw HCOSError(.invalidArgument, "core.img is too large (\(sectors) sectors)")
        }
        let existing = existingSector0.padded(to: 512)

        var boot = bootImage
        boot.replaceSubrange(bpb, with: existing[bpb])
        boot.replaceSubrange(
            windowsNTMagic..<partitionTableEnd, with: existing[windowsNTMagic..<partitionTableEnd])
        boot.writeLE(coreLBA, at: kernelSectorOffset)
        boot[bootDriveOffset] = 0xFF
        boot[driveCheckOffset] = 0x90
        boot[driveCheckOffset + 1] = 0x90

        var core = coreImage.padded(to: sectors * 512)
        let terminator = firstBlocklist - blocklistSize
        guard core.readLE(UInt16.self, at: firstBlocklist + 10) == coreSegment else {
            throw HCOSError(
                .invalidArgument,
                "core.img does not start with diskboot.img (no blocklist with segment 0x820 at 500)")
        }
        core.writeLE(coreLBA + 1, at: firstBlocklist)
        core.writeLE(UInt16(sectors - 1), at: firstBlocklist + 8)
        core.writeLE(coreSegment, at: firstBlocklist + 10)
        for index in terminator..<firstBlocklist { core[index] = 0 }
        return (boot, core)
    }

    /// Writes core.img at `coreLBA` and the patched boot sector at LBA 0, then fsyncs. core.img
    /// must fit in `capacitySectors` (the size of the BIOS boot partition).
    public static func install(
        bootImage: [UInt8], coreImage: [UInt8], into file: FileDescriptor, coreLBA: UInt64,
        capacitySectors: UInt64
    ) throws {
        let needed = UInt64((coreImage.count + 511) / 512)
        guard needed <= capacitySectors else {
            throw HCOSError(
                .noSpace,
                "core.img needs \(needed) sectors but the BIOS boot partition has \(capacitySectors) (\(capacitySectors * 512) bytes)"
            )
        }
        let existing = try file.read(at: 0, count: 512)
        let patched = try patch(
            bootImage: bootImage, coreImage: coreImage, existingSector0: existing, coreLBA: coreLBA)
        try file.write(patched.core, at: coreLBA * 512)
        try file.sync()
        try file.write(patched.sector0, at: 0)
        try file.sync()
    }

    /// Installs into the partition `partition` (normally the one of type `GUID.biosBoot`).
    public static func install(
        bootImage: [UInt8], coreImage: [UInt8], into file: FileDescriptor, partition: GPTPartition
    )
        throws
    {
        try install(
            bootImage: bootImage, coreImage: coreImage, into: file, coreLBA: partition.firstLBA,
            capacitySectors: partition.sectorCount)
    }
}
