import Disk
import Foundation
import GrubEnv
import HCOSCore
import Node
import Testing
import VM

/// GRUB's slot choice and boot counting, exercised at the boot-loader level: the test edits the
/// GRUB environment in the image file and resets the VM from outside (no action inside it).
@Suite("GRUB boot counting", .serialized)
struct BootCountingTests {
    /// Makes slot B a bootable copy of slot A: ROOT-A's bytes into ROOT-B, and A's kernel,
    /// initramfs and slot.cfg into /B on the EFI partition (mtools on the image, no mount).
    static func fillSlotB(disk: String, scratch: String) throws {
        let file = try FileDescriptor(path: disk, flags: O_RDWR)
        let table = try GPTTable.read(from: file, size: try file.size())
        let rootA = try table.partition(named: "ROOT-A")
        let rootB = try table.partition(named: "ROOT-B")
        let chunk: UInt64 = 4 << 20
        var offset: UInt64 = 0
        while offset < rootA.sectorCount * 512 {
            let bytes = try file.read(at: rootA.firstLBA * 512 + offset, count: Int(chunk))
            try file.write(bytes, at: rootB.firstLBA * 512 + offset)
            offset += chunk
        }
        try file.sync()
        let esp = "\(disk)@@\(try table.partition(named: "EFI").firstLBA * 512)"
        for name in ["vmlinuz", "initrd", "slot.cfg"] {
            try Command("mcopy", ["-n", "-i", esp, "::/A/\(name)", "\(scratch)/\(name)"]).run()
            try Command("mcopy", ["-o", "-i", esp, "\(scratch)/\(name)", "::/B/\(name)"]).run()
        }
    }

    @Test("a slot with one try and no good flag boots once; after a reset GRUB falls back to the good slot")
    func trialSlotBootsOnceThenFallsBack() async throws {
        let directory = try SystemSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let disk = try SystemSupport.disk(in: directory)
        // A fresh image: A good, B empty and never booted.
        #expect(try DiskImage.bootState(disk: disk) == SlotState.fresh)
        try Self.fillSlotB(disk: disk, scratch: directory)
        try DiskImage.editBootState(disk: disk) { state in
            state.order = [.b, .a]
            state.b = SlotState.SlotInfo(good: false, triesLeft: 1)
        }

        let vm = try await SystemSupport.boot(disk: disk, directory: directory)
        try await SystemSupport.using(vm) {
            #expect(try await SystemSupport.bootedSlot(vm) == "B")
            let trial = try await SystemSupport.ready(vm)
            #expect(trial.slot == "B")
            #expect(trial.trial)
            // GRUB spent the try before starting the kernel.
            let during = try DiskImage.bootState(disk: disk)
            #expect(during.b.triesLeft == 0)
            #expect(during.b.good == false)

            // B is never marked good: a reset from outside must bring back A by itself.
            let mark = vm.console.mark()
            try vm.reset()
            #expect(try await SystemSupport.bootedSlot(vm, after: mark) == "A")
            let fallback = try await SystemSupport.ready(vm, after: mark)
            #expect(fallback.slot == "A")
            #expect(fallback.trial == false)
        }
    }

    @Test("a torn first copy of the GRUB environment still boots the good slot from the second copy")
    func tornEnvironmentFallsBackToSecondCopy() async throws {
        let directory = try SystemSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let disk = try SystemSupport.disk(in: directory)
        let file = try FileDescriptor(path: disk, flags: O_RDWR)
        let store = try DiskImage.grubEnvStore(of: file)
        let copy1 = try #require(store.copy1Offset)
        // Half a block of garbage where copy 1 starts: what a torn in-place write could leave.
        try file.write([UInt8](repeating: 0x5A, count: 512), at: copy1)
        try file.sync()

        // No debug shell: it would be switched on through the very environment under test.
        let vm = try await SystemSupport.boot(disk: disk, directory: directory, debugShell: false)
        let poweredOff = try await SystemSupport.using(vm) {
            #expect(try await SystemSupport.bootedSlot(vm) == "A")
            let report = try await SystemSupport.ready(vm)
            #expect(report.slot == "A")
        }
        // No shell here: the ACPI power button alone must power the node off cleanly.
        #expect(poweredOff, "the node did not power off on the power button")
    }
}
