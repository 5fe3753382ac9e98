import Foundation
import HCOSCore
import Node
import Testing
import VM

/// Boots the real image in qemu (TCG here, KVM where available) and checks what a user relies
/// on: the boot reaches containerd, the root is read-only, /etc and /var persist, PERSIST grows.
@Suite("booting an hcos image", .serialized)
struct BootTests {
    @Test("boots to multi-user with containerd active, a read-only root, /etc overlay and /var on PERSIST")
    func bootsReadOnlyWithPersistentEtcAndVar() async throws {
        let directory = try SystemSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let vm = try await SystemSupport.boot(disk: try SystemSupport.disk(in: directory), directory: directory)
        try await SystemSupport.using(vm) {
            let report = try await SystemSupport.ready(vm)
            #expect(report.slot == "A")
            #expect(report.trial == false)
            #expect(report.containerdActive)
            #expect(report.failedUnits.isEmpty, "failed units: \(report.failedUnits)")
            #expect(report.rootReadOnly)
            #expect(report.mount("/")?.fsType == "squashfs")
            #expect(report.mount("/etc")?.fsType == "overlay")
            #expect(report.mount("/var")?.fsType == "ext4")
            #expect((report.timings.containerdReady ?? 0) > 0)

            let shell = try await SystemSupport.shell(vm)
            let rootWrite = try await shell.run("touch /hcos-root-write && echo wrote")
            #expect(rootWrite.status != 0)
            #expect(rootWrite.output.contains("Read-only file system"))
            let usrWrite = try await shell.run("echo x > /usr/bin/hcos-test")
            #expect(usrWrite.status != 0)
            _ = try await shell.check(
                "echo etc-survives > /etc/hcos-test && echo var-survives > /var/hcos-test && sync")

            let mark = vm.console.mark()
            try shell.send("systemctl reboot\n")
            let again = try await SystemSupport.ready(vm, after: mark)
            #expect(again.slot == "A")
            let shellAgain = try await SystemSupport.shell(vm)
            #expect(try await shellAgain.check("cat /etc/hcos-test").trimmed() == "etc-survives")
            #expect(try await shellAgain.check("cat /var/hcos-test").trimmed() == "var-survives")
        }
    }

    @Test("PERSIST grows to fill a disk enlarged before first boot, and a second boot does not grow it again")
    func persistGrowsOnceToFillTheDisk() async throws {
        let directory = try SystemSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let diskSize: UInt64 = 4 << 30
        let disk = try SystemSupport.disk(in: directory, size: diskSize)
        let vm = try await SystemSupport.boot(disk: disk, directory: directory)
        try await SystemSupport.using(vm) {
            let first = try await SystemSupport.ready(vm)
            // Everything but the first MiB (GPT), BIOS-BOOT, EFI (128 MiB), the two 1 GiB slots and
            // the backup GPT at the end belongs to PERSIST.
            let expected = diskSize - (1 + 1 + 128 + 2048) * (1 << 20)
            #expect(first.persistPartitionBytes <= expected)
            #expect(
                first.persistPartitionBytes >= expected - (1 << 20), "PERSIST is \(first.persistPartitionBytes) bytes")
            #expect(first.persistFilesystemBytes == first.persistPartitionBytes / 4096 * 4096)
            let shell = try await SystemSupport.shell(vm)
            let firstLog = try await shell.check("journalctl -b -u hcos-grow-persist --no-pager -o cat")
            #expect(firstLog.contains("growing the PERSIST partition"))
            #expect(firstLog.contains("growing the PERSIST filesystem"))
            let sectors = try await shell.check("cat /sys/class/block/vda5/size").trimmed()

            let mark = vm.console.mark()
            try shell.send("systemctl reboot\n")
            let second = try await SystemSupport.ready(vm, after: mark)
            #expect(second.persistPartitionBytes == first.persistPartitionBytes)
            #expect(second.persistFilesystemBytes == first.persistFilesystemBytes)
            let shellAgain = try await SystemSupport.shell(vm)
            let secondLog = try await shellAgain.check("journalctl -b -u hcos-grow-persist --no-pager -o cat")
            #expect(secondLog.contains("PERSIST already fills the disk"))
            #expect(!secondLog.contains("growing"))
            #expect(try await shellAgain.check("cat /sys/class/block/vda5/size").trimmed() == sectors)
        }
    }

    @Test("the same disk image boots with UEFI firmware (OVMF) as with BIOS")
    func bootsWithUEFI() async throws {
        let directory = try SystemSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let vm = try await SystemSupport.boot(
            disk: try SystemSupport.disk(in: directory), directory: directory, debugShell: false, uefi: true)
        try await SystemSupport.using(vm) {
            let report = try await SystemSupport.ready(vm)
            #expect(report.slot == "A")
            #expect(report.containerdActive)
            #expect(report.rootReadOnly)
        }
    }
}
