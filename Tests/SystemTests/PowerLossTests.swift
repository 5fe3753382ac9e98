import Agent
import Foundation
import HCOSCore
import Testing
import VM

/// Power loss during an upgrade: qemu is killed at moments spread over download, verification,
/// slot writing, arming, the reboot and the first boot of the new slot. Every time, the next
/// boot must reach a good slot, with the data written to PERSIST before the upgrades intact.
/// One disk lives through all cuts, so each cut also starts from whatever the previous one left.
@Suite(.serialized)
struct PowerLossTests {
    /// A console line that marks a moment of the upgrade, and how long after it qemu dies.
    struct CutPoint: CustomStringConvertible {
        var after: String
        var delayMilliseconds: Int
        var description: String { "\(delayMilliseconds) ms after '\(after)'" }
    }

    /// Moments of an upgrade as they show on the console (agent phases, GRUB, initramfs, agent
    /// on the new slot); each appears with a short and a longer, randomised delay.
    static let moments = [
        "upgrade phase downloading", "upgrade phase verifying", "upgrade phase writing", "upgrade phase writing",
        "upgrade phase written-verified", "upgrade phase staged", "upgrade phase rebooting", "(trial=1)",
        "watchdog armed", "health gate running",
    ]

    /// 20 distinct cut points (HCOS_POWER_CUTS raises the count for a long run; HCOS_POWER_SEED
    /// replays a run).
    static func cutPoints() -> (seed: UInt64, points: [CutPoint]) {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["HCOS_POWER_SEED"].flatMap { UInt64($0) } ?? UInt64(Date().timeIntervalSince1970)
        let count = environment["HCOS_POWER_CUTS"].flatMap { Int($0) } ?? 20
        var random = SplitMix(seed: seed)
        var points: [CutPoint] = []
        var index = 0
        while points.count < count {
            let moment = moments[index % moments.count]
            // First round: within 0.3 s of the moment; later rounds: up to 6 s after it.
            let limit: UInt64 = index < moments.count ? 300 : 6000
            points.append(CutPoint(after: moment, delayMilliseconds: Int(random.next() % limit)))
            index += 1
        }
        return (seed, points)
    }

    @Test func everyPowerCutDuringAnUpgradeLeavesANodeThatBootsAGoodSlotWithItsData() async throws {
        let (seed, points) = Self.cutPoints()
        print("power-loss cut points (HCOS_POWER_SEED=\(seed)): \(points.map(\.description).joined(separator: "; "))")
        let directory = try SystemSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let disk = try SystemSupport.disk(in: directory)
        let server = try HostFileServer(directory: try UpgradeTests.imageDirectory())
        defer { server.stop() }

        var vm = try await SystemSupport.boot(disk: disk, directory: directory)
        var mark = ConsoleMark.start
        var written = false
        for (number, point) in points.enumerated() {
            let context = "cut \(number + 1)/\(points.count) (\(point)), HCOS_POWER_SEED=\(seed)"
            do {
                let status = try await settle(vm, after: mark, context: context)
                let shell = try await SystemSupport.shell(vm)
                if !written {
                    try await shell.check(
                        "echo persist > /etc/hcos-power.conf && mkdir -p /var/lib/hcos-power && echo data > /var/lib/hcos-power/file && sync"
                    )
                    written = true
                }
                #expect(try await shell.check("cat /etc/hcos-power.conf").trimmed() == "persist", "\(context)")
                #expect(try await shell.check("cat /var/lib/hcos-power/file").trimmed() == "data", "\(context)")

                // Upgrade to the version that is not running (the agent works on in the
                // background after --no-wait answers), and cut.
                let bundle = status.version == "1.0.0" ? "hcos-2.0.0.bundle" : "hcos-1.0.0.bundle"
                let cut = vm.console.mark()
                try await shell.check("hcosctl upgrade \(server.guestURL(bundle)) --force --reboot --no-wait")
                let seen = try await vm.console.waitForMatch(
                    after: cut, timeout: UpgradeTests.upgradeTimeout, description: "'\(point.after)'"
                ) { $0.contains(point.after) }
                try await Task.sleep(for: .milliseconds(point.delayMilliseconds))
                vm.kill()
                _ = try await vm.waitForExit(timeout: .seconds(30))
                print("\(context): power cut (seen: \(seen.line.suffix(100)))")
            } catch {
                vm.kill()
                throw HCOSError(.io, "\(context): \(error)")
            }
            vm = try await SystemSupport.boot(disk: disk, directory: directory)
            mark = .start
        }
        // The last cut, too, leaves a node that boots a good slot with its data.
        try await SystemSupport.using(vm) {
            _ = try await settle(vm, after: mark, context: "after the last cut")
            let shell = try await SystemSupport.shell(vm)
            #expect(try await shell.check("cat /var/lib/hcos-power/file").trimmed() == "data")
            #expect(try await shell.check("cat /etc/hcos-power.conf").trimmed() == "persist")
        }
    }

    /// Waits for the node to be up on a good slot. A trial boot the cut left behind must first
    /// decide: commit, or reboot into the old slot (so the wait may span boots).
    func settle(_ vm: VirtualMachine, after mark: ConsoleMark, context: String) async throws -> NodeStatus {
        var from = mark
        while true {
            let event = try await vm.console.waitForMatch(
                after: from, timeout: SystemSupport.bootTimeout, description: "HCOS-READY or HCOS-BOOT"
            ) {
                SerialConsole.payload(of: "HCOS-READY", in: $0) != nil
                    || SerialConsole.payload(of: "HCOS-BOOT", in: $0) != nil
            }
            if SerialConsole.payload(of: "HCOS-BOOT", in: event.line) != nil {
                from = event.next
                continue
            }
            let shell = try await SystemSupport.shell(vm)
            let status = try await UpgradeTests.status(shell)
            if status.trial {
                let decided = try await vm.console.waitForMatch(
                    after: event.next, timeout: SystemSupport.bootTimeout, description: "the trial's decision"
                ) { $0.contains("committed: version") || SerialConsole.payload(of: "HCOS-BOOT", in: $0) != nil }
                // Committed: look at the same boot again; rebooted: follow the next boot.
                from =
                    SerialConsole.payload(of: "HCOS-BOOT", in: decided.line) != nil
                    ? decided.next : ConsoleMark(line: event.index)
                continue
            }
            let booted = status.slots.first { $0.booted }
            #expect(booted?.good == true, "\(context): booted slot \(status.bootedSlot) is not good: \(status)")
            return status
        }
    }
}
