import Agent
import Foundation
import HCOSCore
import Testing
import VM

/// Upgrades on a real node: the test image (v1) boots in qemu and upgrades itself through
/// hcosctl to the v2 bundle `make test` built next to it, served over http from the host.
@Suite(.serialized)
struct UpgradeTests {
    static let v2Bundle = "hcos-2.0.0.bundle"
    static let upgradeTimeout = Duration.seconds(900)

    static func imageDirectory() throws -> String { FileSystem.parent(of: try SystemSupport.requireImage()) }

    static func status(_ shell: DebugShell) async throws -> NodeStatus {
        let json = try await shell.check("hcosctl --json status")
        return try JSONDecoder().decode(NodeStatus.self, from: Data(json.utf8))
    }

    @Test func anUpgradeCommitsV2KeepsEtcAndVarDataAndRollbackReturnsToV1() async throws {
        let directory = try SystemSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let disk = try SystemSupport.disk(in: directory)
        let server = try HostFileServer(directory: try Self.imageDirectory())
        defer { server.stop() }
        let vm = try await SystemSupport.boot(disk: disk, directory: directory)
        try await SystemSupport.using(vm) {
            _ = try await SystemSupport.ready(vm)
            let shell = try await SystemSupport.shell(vm)
            try await shell.check(
                "echo kept > /etc/hcos-test.conf && mkdir -p /var/lib/hcos-test && echo data > /var/lib/hcos-test/file && sync"
            )
            let before = try await Self.status(shell)
            #expect(before.version == "1.0.0")
            #expect(before.slots.map(\.state) == ["valid", "empty"])

            let mark = vm.console.mark()
            let output = try await shell.check(
                "hcosctl upgrade \(server.guestURL(Self.v2Bundle)) --expect-version 2.0.0 --reboot 2>&1",
                timeout: Self.upgradeTimeout)
            #expect(output.contains("[writing]"), "\(output)")
            #expect(output.contains("rebooting into slot B"), "\(output)")
            #expect(try await SystemSupport.bootedSlot(vm, after: mark) == "B")
            _ = try await vm.console.waitForLine(
                containing: "slot B committed", after: mark, timeout: Self.upgradeTimeout)
            try await shell.waitUntilReady(timeout: .seconds(120))
            let upgraded = try await Self.status(shell)
            #expect(upgraded.version == "2.0.0")
            #expect(upgraded.bootedSlot == "B")
            #expect(upgraded.lastResult?.outcome == "committed")
            #expect(upgraded.slots.first { $0.name == "B" }?.good == true)
            #expect(upgraded.slots.first { $0.name == "A" }?.version == "1.0.0")
            #expect(upgraded.slots.first { $0.name == "A" }?.state == "valid")
            #expect(try await shell.check("cat /etc/hcos-test.conf").trimmed() == "kept")
            #expect(try await shell.check("cat /var/lib/hcos-test/file").trimmed() == "data")

            let back = vm.console.mark()
            let rollback = try await shell.check("hcosctl rollback")
            #expect(rollback.contains("slot A (version 1.0.0) is the default again"))
            #expect(try await SystemSupport.bootedSlot(vm, after: back) == "A")
            _ = try await SystemSupport.ready(vm, after: back)
            try await shell.waitUntilReady(timeout: .seconds(120))
            let rolledBack = try await Self.status(shell)
            #expect(rolledBack.version == "1.0.0")
            #expect(rolledBack.slots.first { $0.name == "B" }?.state == "valid")
            #expect(try await shell.check("cat /etc/hcos-test.conf").trimmed() == "kept")
            #expect(try await shell.check("cat /var/lib/hcos-test/file").trimmed() == "data")
        }
    }
}

/// Bad images roll back by themselves: after the upgrade command nothing is done inside the VM.
@Suite(.serialized)
struct BadImageTests {
    /// Boots v1, upgrades to `bundle` with --reboot, then only watches: the node must come back
    /// on v1, committed, with 2.0.0 recorded as failed and refused the next time.
    func rollsBackByItself(bundle: (String) throws -> String, healthTimeout: Int? = nil) async throws {
        let directory = try SystemSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let served = "\(directory)/served"
        try FileManager.default.createDirectory(atPath: served, withIntermediateDirectories: true)
        let name = URL(fileURLWithPath: try bundle(served)).lastPathComponent
        let disk = try SystemSupport.disk(in: directory)
        let server = try HostFileServer(directory: served)
        defer { server.stop() }
        let vm = try await SystemSupport.boot(disk: disk, directory: directory)
        try await SystemSupport.using(vm) {
            _ = try await SystemSupport.ready(vm)
            let shell = try await SystemSupport.shell(vm)
            if let healthTimeout { try await shell.check("hcosctl settings --health-timeout \(healthTimeout)") }
            let mark = vm.console.mark()
            let output = try await shell.check(
                "hcosctl upgrade \(server.guestURL(name)) --expect-version 2.0.0 --reboot 2>&1",
                timeout: UpgradeTests.upgradeTimeout)
            #expect(output.contains("rebooting into slot B"), "\(output)")
            // No action from here on: GRUB tries B once (a panicking kernel never reaches the
            // initramfs, so GRUB's own line marks the try), then falls back to A.
            let trial = try await vm.console.waitForMatch(
                after: mark, timeout: .seconds(300), description: "GRUB trying slot B"
            ) { $0.contains("booting slot B (trial=1)") }
            let fallback = try await vm.console.waitForMatch(
                after: trial.next, timeout: UpgradeTests.upgradeTimeout, description: "the boot of slot A"
            ) { SerialConsole.payload(of: "HCOS-BOOT", in: $0)?.hasPrefix("slot=A") == true }
            _ = try await SystemSupport.ready(vm, after: fallback.next)
            try await shell.waitUntilReady(timeout: .seconds(120))
            let status = try await UpgradeTests.status(shell)
            #expect(status.version == "1.0.0")
            #expect(status.bootedSlot == "A")
            #expect(status.slots.first { $0.name == "A" }?.good == true)
            #expect(status.slots.first { $0.name == "B" }?.state == "failed")
            #expect(status.lastResult?.outcome == "rolled-back")
            #expect(status.failedVersions["2.0.0"] != nil)
            let again = try await shell.run("hcosctl upgrade \(server.guestURL(name)) --expect-version 2.0.0 2>&1")
            #expect(again.status != 0)
            #expect(again.output.contains("version 2.0.0 failed on this node before"), "\(again.output)")
        }
    }

    @Test func aKernelThatPanicsRollsBackByItself() async throws {
        try await rollsBackByItself(bundle: TestBundles.panickingKernel)
    }

    @Test func aRootWhoseInitFailsRollsBackByItself() async throws {
        try await rollsBackByItself(bundle: TestBundles.failingInit)
    }

    @Test func aRootThatFailsItsHealthGateRollsBackByItself() async throws {
        try await rollsBackByItself(bundle: TestBundles.failingHealth, healthTimeout: 30)
    }
}
