import Foundation
import HCOSCore
import Testing

@testable import Disk

/// A scratch image file, removed when the value goes away.
private final class ScratchImage {
    let directory: String
    let path: String

    init(size: UInt64, name: String = "disk.img") throws {
        var template = Array((NSTemporaryDirectory() + "/hcos-test-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw HCOSError(.io, "mkdtemp failed") }
        directory = String(cString: made)
        path = directory + "/" + name
        let file = try open()
        try file.truncate(to: size)
    }

    func open() throws -> FileDescriptor { try FileDescriptor(path: path, flags: O_RDWR | O_CREAT) }

    func truncate(to size: UInt64) throws { try open().truncate(to: size) }

    deinit { try? FileManager.default.removeItem(atPath: directory) }
}

private struct SfdiskPartition: Equatable {
    var start: UInt64
    var size: UInt64
    var type: String
    var uuid: String
    var name: String
}

/// The table as util-linux sfdisk sees it: an independent reader of what we wrote.
private func sfdisk(_ path: String) throws -> (lastLBA: UInt64, partitions: [SfdiskPartition]) {
    let result = try Command("sfdisk", ["--json", path]).run()
    let json = try JSONSerialization.jsonObject(with: Data(result.stdout)) as? [String: Any]
    let table = try #require(json?["partitiontable"] as? [String: Any])
    #expect(table["label"] as? String == "gpt")
    let parts = (table["partitions"] as? [[String: Any]] ?? []).map { p in
        SfdiskPartition(
            start: (p["start"] as? NSNumber)?.uint64Value ?? 0,
            size: (p["size"] as? NSNumber)?.uint64Value ?? 0,
            type: p["type"] as? String ?? "", uuid: p["uuid"] as? String ?? "",
            name: p["name"] as? String ?? "")
    }
    return ((table["lastlba"] as? NSNumber)?.uint64Value ?? 0, parts)
}

private let mib: UInt64 = 1 << 20

/// The absolute path of a host tool the test needs (the build host has GRUB's tools installed).
func requireHostTool(_ name: String) throws -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"
    let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
    let found = directories.map { "\($0)/\(name)" }.first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    return try #require(found, "\(name) is not installed")
}

private let hcosLayout: [GPTLayout.Request] = [
    .init(name: "BIOS-BOOT", type: .biosBoot, size: .bytes(mib)),
    .init(name: "EFI", type: .efiSystem, size: .bytes(8 * mib)),
    .init(name: "ROOT-A", type: .linuxRootX86_64, size: .bytes(4 * mib)),
    .init(name: "ROOT-B", type: .linuxRootX86_64, size: .bytes(4 * mib)),
    .init(name: "PERSIST", type: .linuxFilesystem, size: .rest),
]

@Suite("Disk")
struct DiskTests {
    @Test("GUIDs parse, format and use GPT's mixed-endian encoding")
    func guidEncoding() throws {
        let esp = try #require(GUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"))
        #expect(esp == GUID.efiSystem)
        #expect(esp.description == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
        #expect(
            esp.gptBytes == [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9,
                0x3B,
            ])
        #expect(GUID(gptBytes: esp.gptBytes[...]) == esp)
        #expect(GUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93") == nil)
        #expect(GUID("C12A7328F81F-11D2-BA4B-00A0C93EC93B0") == nil)
        #expect(GUID("Z12A7328-F81F-11D2-BA4B-00A0C93EC93B") == nil)
        #expect(GUID.biosBoot.description == "21686148-6449-6E6F-744E-656564454649")
        #expect(GUID.linuxRootX86_64.description == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")
        #expect(GUID.linuxFilesystem.description == "0FC63DAF-8483-4772-8E79-3D69D8477DE4")
    }

    @Test("derived GUIDs are deterministic, distinct and shaped like version 4")
    func derivedGUIDs() {
        let one = GUID.derived(from: "image/ROOT-A")
        #expect(one == GUID.derived(from: "image/ROOT-A"))
        let many = Set((0..<1000).map { GUID.derived(from: "seed\($0)") })
        #expect(many.count == 1000)
        for guid in many.prefix(50) + [GUID.random()] {
            #expect(guid.bytes[6] >> 4 == 4)
            #expect(guid.bytes[8] & 0xC0 == 0x80)
        }
        #expect(GUID.random() != GUID.random())
    }

    @Test("a planned table is 1 MiB aligned and reads back identically, also through sfdisk")
    func writeReadRoundTrip() throws {
        let size = 64 * mib
        let image = try ScratchImage(size: size)
        let table = try GPTLayout.plan(diskSize: size, partitions: hcosLayout, seed: "test")
        #expect(table.partitions.map(\.firstLBA) == [2048, 4096, 20480, 28672, 36864])
        #expect(table.partitions.allSatisfy { ($0.lastLBA + 1) % 2048 == 0 })
        let file = try image.open()
        try table.write(to: file, diskSize: size)

        let read = try GPTTable.read(from: file, size: size)
        #expect(read.partitions == table.partitions)
        #expect(read.diskGUID == table.diskGUID)
        #expect(read.source == .primary)
        #expect(read.backupLBA == size / 512 - 1)
        #expect(!read.needsRelocation)

        let seen = try sfdisk(image.path)
        #expect(seen.lastLBA == size / 512 - 34)
        #expect(
            seen.partitions
                == table.partitions.map {
                    SfdiskPartition(
                        start: $0.firstLBA, size: $0.sectorCount, type: $0.type.description,
                        uuid: $0.unique.description, name: $0.name)
                })
        let verify = try Command("sgdisk", ["-v", image.path]).run()
        #expect(verify.output.contains("No problems found"))
    }

    @Test("writing the table keeps the boot code in the first 440 bytes of LBA 0")
    func keepsBootCode() throws {
        let size = 32 * mib
        let image = try ScratchImage(size: size)
        let file = try image.open()
        let bootCode = (0..<440).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        try file.write(bootCode, at: 0)
        try GPTLayout.plan(diskSize: size, partitions: hcosLayout.prefix(2) + [hcosLayout[4]]).write(
            to: file, diskSize: size)
        let sector0 = try file.read(at: 0, count: 512)
        #expect(Array(sector0[0..<440]) == bootCode)
        #expect(sector0[450] == 0xEE)
        #expect(sector0.readLE(UInt32.self, at: 454) == 1)
        #expect(sector0.readLE(UInt32.self, at: 458) == UInt32(size / 512 - 1))
        #expect(sector0[510] == 0x55 && sector0[511] == 0xAA)
    }

    @Test("planning for a disk that is too small says how big it must be")
    func tooSmall() throws {
        let error = #expect(throws: HCOSError.self) {
            try GPTLayout.plan(diskSize: 16 * mib, partitions: hcosLayout)
        }
        #expect(error?.code == .noSpace)
        // 1 MiB before the first partition, 17 MiB of fixed partitions, 1 MiB for PERSIST, backup table.
        #expect(error?.message.contains("needs at least 20971520 bytes") == true)
        #expect(throws: HCOSError.self) {
            try GPTLayout.plan(
                diskSize: 64 * mib,
                partitions: [.init(name: "X", type: .linuxFilesystem, size: .rest), hcosLayout[0]])
        }
    }

    @Test("a damaged primary header falls back to the backup, and both damaged is a clear error")
    func backupFallback() throws {
        let size = 32 * mib
        let image = try ScratchImage(size: size)
        let file = try image.open()
        let table = try GPTLayout.plan(
            diskSize: size, partitions: hcosLayout.prefix(2) + [hcosLayout[4]], seed: "x")
        try table.write(to: file, diskSize: size)
        try file.write([0xFF, 0xFF], at: 512 + 40)  // header CRC now wrong
        let read = try GPTTable.read(from: file, size: size)
        #expect(read.source == .backup)
        #expect(read.partitions == table.partitions)
        #expect(read.needsRelocation)

        try file.write([0xFF], at: (size / 512 - 33) * 512 + 60)  // backup entries CRC now wrong
        let error = #expect(throws: HCOSError.self) { try GPTTable.read(from: file, size: size) }
        #expect(error?.code == .corrupt)
        #expect(error?.message.contains("header CRC mismatch") == true)
        #expect(error?.message.contains("entry array CRC mismatch") == true)
    }

    @Test("a damaged entry array of the primary copy falls back to the backup")
    func entriesFallback() throws {
        let size = 32 * mib
        let image = try ScratchImage(size: size)
        let file = try image.open()
        let table = try GPTLayout.plan(
            diskSize: size, partitions: hcosLayout.prefix(2) + [hcosLayout[4]], seed: "x")
        try table.write(to: file, diskSize: size)
        try file.write([0x41], at: 2 * 512 + 56)
        let read = try GPTTable.read(from: file, size: size)
        #expect(read.source == .backup)
        #expect(read.partitions == table.partitions)
    }

    @Test(
        "growing the last partition after the disk was enlarged moves the backup; a second grow changes nothing"
    )
    func growAfterTruncate() throws {
        let small = 48 * mib
        let big = 100 * mib + 12345
        let image = try ScratchImage(size: small)
        try GPTLayout.plan(diskSize: small, partitions: hcosLayout, seed: "g").write(
            to: try image.open(), diskSize: small)
        try image.truncate(to: big)

        let file = try image.open()
        let old = try GPTTable.read(from: file, size: big)
        #expect(old.source == .primary)
        #expect(old.backupLBA == small / 512 - 1)
        #expect(old.needsRelocation)
        #expect(throws: HCOSError.self) { try old.growLastPartition(named: "ROOT-B", to: big) }

        let grown = try #require(try old.growLastPartition(named: "PERSIST", to: big))
        let persist = try grown.partition(named: "PERSIST")
        // 100 MiB + 12345 bytes: the backup table takes the last 33 sectors, so PERSIST ends at 99 MiB.
        #expect(persist.lastLBA == 99 * 2048 - 1)
        try grown.write(to: file, diskSize: big)

        let reread = try GPTTable.read(from: file, size: big)
        #expect(!reread.needsRelocation)
        #expect(reread.partitions == grown.partitions)
        #expect(try reread.growLastPartition(named: "PERSIST", to: big) == nil)

        let seen = try sfdisk(image.path)
        #expect(seen.lastLBA == big / 512 - 34)
        #expect(seen.partitions.last?.start == persist.firstLBA)
        #expect(seen.partitions.last?.size == persist.sectorCount)
        #expect(try Command("sgdisk", ["-v", image.path]).run().output.contains("No problems found"))
    }

    @Test(
        "a partition ending at the old last usable sector is never shrunk, only its table relocated")
    func growWithoutAlignmentGain() throws {
        let size = 40 * mib
        let image = try ScratchImage(size: size)
        var table = try GPTLayout.plan(diskSize: size, partitions: hcosLayout, seed: "n")
        table.partitions[4].lastLBA = size / 512 - 34
        try table.write(to: image.open(), diskSize: size)
        let bigger = size + 4096
        try image.truncate(to: bigger)
        let read = try GPTTable.read(from: try image.open(), size: bigger)
        let moved = try #require(try read.growLastPartition(named: "PERSIST", to: bigger))
        #expect(moved.partitions == read.partitions)
        try moved.write(to: try image.open(), diskSize: bigger)
        #expect(
            try GPTTable.read(from: try image.open(), size: bigger).growLastPartition(
                named: "PERSIST", to: bigger) == nil)
    }

    @Test("looking up a label that two partitions share is refused as ambiguous")
    func ambiguousNames() throws {
        var table = try GPTLayout.plan(diskSize: 64 * mib, partitions: hcosLayout)
        table.partitions[3].name = "ROOT-A"
        let error = #expect(throws: HCOSError.self) { try table.partition(named: "ROOT-A") }
        #expect(error?.code == .ambiguous)
        let missing = #expect(throws: HCOSError.self) { try table.partition(named: "ROOT-C") }
        #expect(missing?.code == .notFound)
        #expect(try table.partitionNumber(named: "PERSIST") == 5)
        #expect(throws: HCOSError.self) {
            try GPTLayout.plan(diskSize: 64 * mib, partitions: [hcosLayout[0], hcosLayout[0]])
        }
    }

    @Test(
        "GRUB boot sectors get the core LBA, drive fields and blocklist grub-bios-setup would write")
    func grubBootSectors() throws {
        let boot = try FileSystem.readBytes("/usr/lib/grub/i386-pc/boot.img")
        let diskboot = try FileSystem.readBytes("/usr/lib/grub/i386-pc/diskboot.img")
        let core = diskboot + [UInt8](repeating: 0xAB, count: 100 * 512 + 7)  // 102 sectors once padded
        var existing = [UInt8](repeating: 0x11, count: 512)
        existing[450] = 0xEE

        let patched = try GrubBootSectors.patch(
            bootImage: boot, coreImage: core, existingSector0: existing, coreLBA: 2048)
        let s0 = patched.sector0
        #expect(s0.readLE(UInt64.self, at: 0x5C) == 2048)
        #expect(s0[0x64] == 0xFF)
        #expect(s0[0x66] == 0x90 && s0[0x67] == 0x90)
        #expect(Array(s0[0x1B8..<0x1FE]) == Array(existing[0x1B8..<0x1FE]))
        #expect(Array(s0[0x03..<0x5A]) == Array(existing[0x03..<0x5A]))
        #expect(Array(s0[0x68..<0x1B8]) == Array(boot[0x68..<0x1B8]))
        #expect(s0[510] == 0x55 && s0[511] == 0xAA)

        let c = patched.core
        #expect(c.count == 102 * 512)
        #expect(c.readLE(UInt64.self, at: 500) == 2049)
        #expect(c.readLE(UInt16.self, at: 508) == 101)
        #expect(c.readLE(UInt16.self, at: 510) == 0x820)
        #expect(Array(c[488..<500]) == [UInt8](repeating: 0, count: 12))
        #expect(Array(c[512..<(512 + 100 * 512 + 7)]) == Array(core[512...]))

        let image = try ScratchImage(size: 8 * mib)
        let file = try image.open()
        try GrubBootSectors.install(
            bootImage: boot, coreImage: core, into: file, coreLBA: 2048, capacitySectors: 2048)
        // On an all-zero image the written sector is the one patched against a zero sector.
        let onZeros = try GrubBootSectors.patch(
            bootImage: boot, coreImage: core, existingSector0: [], coreLBA: 2048)
        #expect(try file.read(at: 0, count: 512) == onZeros.sector0)
        #expect(try file.read(at: 2048 * 512, count: c.count) == c)
        let error = #expect(throws: HCOSError.self) {
            try GrubBootSectors.install(
                bootImage: boot, coreImage: core, into: file, coreLBA: 2048, capacitySectors: 101)
        }
        #expect(error?.code == .noSpace)
    }

    @Test("a core.img from grub-mkimage is accepted and its blocklist points after its first sector")
    func grubMkimageCore() throws {
        let grubMkimage = try requireHostTool("grub-mkimage")
        let image = try ScratchImage(size: 0, name: "core.img")
        try Command(
            grubMkimage,
            ["-O", "i386-pc", "-p", "/grub", "-o", image.path, "biosdisk", "part_gpt", "fat", "search"]
        ).run()
        let core = try FileSystem.readBytes(image.path)
        let boot = try FileSystem.readBytes("/usr/lib/grub/i386-pc/boot.img")
        let patched = try GrubBootSectors.patch(
            bootImage: boot, coreImage: core, existingSector0: [], coreLBA: 34)
        #expect(patched.core.readLE(UInt64.self, at: 500) == 35)
        #expect(Int(patched.core.readLE(UInt16.self, at: 508)) == (core.count + 511) / 512 - 1)
    }

    @Test("the size of a regular file is its length")
    func blockDeviceSizeOfFile() throws {
        let image = try ScratchImage(size: 3 * mib + 512)
        let file = try image.open()
        #expect(try BlockDevice.size(of: file) == 3 * mib + 512)
        #expect(try !BlockDevice.isBlockDevice(file))
    }
}
