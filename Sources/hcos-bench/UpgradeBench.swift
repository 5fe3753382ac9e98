import Agent
import Bundle
import Builder
import Foundation
import HCOSCore
import VM

/// One reboot as the host saw it on the console: from os-agent's "rebooting:" line to the boot's
/// end (HCOS-READY on a plain boot, the commit on an upgrade's trial boot).
struct RebootTiming: Codable {
    var kind: String
    var command: String
    /// Agent's reboot line → GRUB's "hcos: booting slot" line (shutdown, firmware, GRUB's
    /// environment; a trial boot also saves its decremented try there). nil in older results.
    var toGrubSeconds: Double?
    /// Agent's reboot line → the initramfs's HCOS-BOOT line (shutdown, firmware, GRUB, kernel).
    var toBootSeconds: Double
    /// Agent's reboot line → HCOS-READY (containerd and multi-user.target active).
    var toReadySeconds: Double
    /// Agent's reboot line → "slot X committed" (upgrades only: the health gate passed).
    var toCommittedSeconds: Double?

    /// The downtime of this reboot: until the node is back in service.
    var downtime: Double { toCommittedSeconds ?? toReadySeconds }
}

/// os-agent's memory while it installs a 1 GiB root image, and how long each phase took.
struct LargeUpgradeMeasurement: Codable {
    var rootBytes: UInt64
    var bundleBytes: UInt64
    /// The kernel's high-water mark of the agent's resident set (VmHWM) after the upgrade.
    var peakRSSKiB: UInt64
    /// VmHWM just before the upgrade started (boot, health gate, commit, earlier upgrades):
    /// tells whether the peak belongs to the 1 GiB upgrade. nil in older results.
    var peakRSSBeforeKiB: UInt64?
    /// The largest VmRSS seen while sampling during the upgrade.
    var sampledMaxRSSKiB: UInt64
    var samples: Int
    /// Host seconds spent in each phase, from the first sample that saw it to the next phase.
    var phaseSeconds: [String: Double]
    var finalPhase: String
}

struct UpgradeBenchResult: Codable {
    var reboots: [RebootTiming]
    var large: LargeUpgradeMeasurement?

    var plain: [RebootTiming] { reboots.filter { $0.kind == "plain" } }
    var upgrades: [RebootTiming] { reboots.filter { $0.kind == "upgrade" } }
}

/// The upgrade section of `make bench`, in one VM of the hcos image: plain reboots and upgrades,
/// `rounds` of each, timed from the console, then a 1 GiB upgrade with the agent's memory sampled.
/// The bundles carry the image's own kernel, initramfs and root under new version numbers, so
/// an upgrade's boot differs from a plain one only by what the upgrade adds (trial, health gate).
struct UpgradeBench {
    /// Room on PERSIST for the 1 GiB bundle's download.
    static let diskSize: UInt64 = 5 << 30
    static let largeRootSize: UInt64 = 1 << 30
    static let samplingInterval = Duration.seconds(1)
    /// Plain reboots and upgrades measured each (boots under TCG vary by a few seconds).
    static let rounds = 3

    let directory: String
    let timeout: Duration
    let logger: Logger

    func run(hcos: BuildResult, signingKey: String) async throws -> UpgradeBenchResult {
        let served = "\(directory)/served"
        try? FileManager.default.removeItem(atPath: served)
        try FileManager.default.createDirectory(atPath: served, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: served) }
        let key = try BundleKeys.read(signingKey, kind: "private")
        let upgradeVersion = "\(hcos.version).1"
        let largeVersion = "\(hcos.version).2"
        let bundle = try writeBundle(hcos, version: upgradeVersion, rootImage: hcos.rootImage, key: key, in: served)
        let large = try writeLargeBundle(hcos, version: largeVersion, key: key, in: served)

        let disk = "\(directory)/disk.raw"
        try DiskImage.prepareVMDisk(from: hcos.diskImage, to: disk, size: Self.diskSize)
        defer { unlink(disk) }
        let server = try HostFileServer(directory: served)
        defer { server.stop() }
        var config = VMConfiguration(diskPath: disk)
        config.memoryMiB = BootRunner.memoryMiB
        config.cpus = BootRunner.cpus
        config.serialLogPath = "\(directory)/console.log"
        try? FileManager.default.removeItem(atPath: config.serialLogPath ?? "")
        config.debugShell = true
        logger.info("upgrade bench: booting", [("console", config.serialLogPath ?? "")])
        let vm = try await VirtualMachine.start(config, logger: logger)
        do {
            _ = try await vm.console.waitForMarkerMatch("HCOS-READY", timeout: timeout)
            guard let shell = vm.shell else { throw HCOSError(.notFound, "the VM has no debug shell") }
            try await shell.waitUntilReady(timeout: .seconds(120))
            let url = server.guestURL(URL(fileURLWithPath: bundle).lastPathComponent)
            var reboots: [RebootTiming] = []
            // Rounds after the first go back to slot A first; slot B still holds the same root, so
            // their upgrades skip the write and the reboot is the same.
            for round in 1...Self.rounds {
                let plain = round == 1 ? "hcosctl reboot" : "hcosctl rollback"
                reboots.append(try await reboot(vm, shell, kind: "plain", command: plain))
                reboots.append(
                    try await reboot(
                        vm, shell, kind: "upgrade",
                        command: "hcosctl upgrade \(url) --expect-version \(upgradeVersion) --reboot",
                        commits: "B"))
            }
            let largeURL = server.guestURL(URL(fileURLWithPath: large.path).lastPathComponent)
            let measurement = try await largeUpgrade(
                shell, url: largeURL, version: largeVersion, rootBytes: large.rootBytes, bundleBytes: large.bundleBytes)
            try? shell.send("\u{15}sync; systemctl poweroff\n")
            await vm.stop(timeout: BootRunner.shutdownTimeout)
            return UpgradeBenchResult(reboots: reboots, large: measurement)
        } catch {
            logger.error("upgrade bench failed; last console lines:\n" + vm.console.tail(25).joined(separator: "\n"))
            await vm.stop(timeout: .seconds(10))
            throw error
        }
    }

    /// Runs `command` (which makes the agent reboot the node) and times the reboot from the
    /// agent's "rebooting:" console line to the next boot's HCOS-READY, and for an upgrade to
    /// the commit of slot `commits`.
    func reboot(
        _ vm: VirtualMachine, _ shell: DebugShell, kind: String, command: String, commits slot: String? = nil
    ) async throws -> RebootTiming {
        logger.info("upgrade bench: \(command)")
        let mark = vm.console.mark()
        let result = try await shell.run(command + " 2>&1", timeout: timeout)
        guard result.status == 0 else {
            throw HCOSError(.toolFailed, "'\(command)' exited with status \(result.status):\n\(result.output)")
        }
        let rebooting = try await vm.console.waitForMatch(
            after: mark, timeout: .seconds(120), description: "os-agent's 'rebooting:' line"
        ) { $0.contains("os-agent: rebooting: ") }
        let grub = try await vm.console.waitForMatch(
            after: rebooting.next, timeout: timeout, description: "GRUB's 'hcos: booting slot' line"
        ) { $0.contains("hcos: booting slot") }
        let boot = try await vm.console.waitForMatch(
            after: grub.next, timeout: timeout, description: "the next boot's HCOS-BOOT line"
        ) { SerialConsole.payload(of: "HCOS-BOOT", in: $0) != nil }
        let ready = try await vm.console.waitForMatch(
            after: boot.next, timeout: timeout, description: "HCOS-READY"
        ) { SerialConsole.payload(of: "HCOS-READY", in: $0) != nil }
        var committed: ConsoleMatch?
        if let slot {
            committed = try await vm.console.waitForMatch(
                after: boot.next, timeout: timeout, description: "the commit of slot \(slot)"
            ) { $0.contains("slot \(slot) committed") }
        }
        try await shell.waitUntilReady(timeout: .seconds(120))
        let timing = RebootTiming(
            kind: kind, command: command, toGrubSeconds: Self.seconds(grub.at - rebooting.at),
            toBootSeconds: Self.seconds(boot.at - rebooting.at),
            toReadySeconds: Self.seconds(ready.at - rebooting.at),
            toCommittedSeconds: committed.map { Self.seconds($0.at - rebooting.at) })
        logger.info(
            "upgrade bench: reboot measured",
            [
                ("kind", kind), ("to_ready_s", String(format: "%.1f", timing.toReadySeconds)),
                ("downtime_s", String(format: "%.1f", timing.downtime)),
            ])
        return timing
    }

    /// Starts the 1 GiB upgrade without reboot and samples the agent's memory and the
    /// operation's phase until it is staged (or failed).
    func largeUpgrade(
        _ shell: DebugShell, url: String, version: String, rootBytes: UInt64, bundleBytes: UInt64
    ) async throws -> LargeUpgradeMeasurement {
        let pid = try await shell.check("systemctl show -p MainPID --value hcos-agent").trimmed()
        guard Int(pid) ?? 0 > 0 else { throw HCOSError(.notFound, "hcos-agent has no main process (MainPID=\(pid))") }
        logger.info("upgrade bench: 1 GiB upgrade", [("agent_pid", pid)])
        let before = Self.memoryFields(try await shell.check("cat /proc/\(pid)/status"))
        _ = try await shell.check("hcosctl upgrade \(url) --expect-version \(version) --no-wait")
        let clock = ContinuousClock()
        var phases: [(String, ContinuousClock.Instant)] = []
        var maxRSS: UInt64 = 0
        var samples = 0
        let deadline = clock.now + timeout
        var final = ""
        while clock.now < deadline {
            let memory = Self.memoryFields(try await shell.check("cat /proc/\(pid)/status"))
            maxRSS = max(maxRSS, memory["VmRSS"] ?? 0)
            samples += 1
            let json = try await shell.check("hcosctl --json status")
            let status = try JSONDecoder().decode(NodeStatus.self, from: Data(json.utf8))
            guard let operation = status.operation else { throw HCOSError(.notFound, "the agent reports no operation") }
            let phase = operation.phase.rawValue
            if phases.last?.0 != phase { phases.append((phase, clock.now)) }
            if operation.phase == .staged || operation.phase.isFinal {
                if operation.phase != .staged {
                    throw HCOSError(.toolFailed, "the 1 GiB upgrade ended \(phase): \(operation.error ?? "")")
                }
                final = phase
                break
            }
            try await Task.sleep(for: Self.samplingInterval)
        }
        guard !final.isEmpty else { throw HCOSError(.timeout, "the 1 GiB upgrade did not finish within \(timeout)") }
        let memory = Self.memoryFields(try await shell.check("cat /proc/\(pid)/status"))
        var durations: [String: Double] = [:]
        for (index, (phase, start)) in phases.enumerated() where index + 1 < phases.count {
            durations[phase] = Self.seconds(phases[index + 1].1 - start)
        }
        return LargeUpgradeMeasurement(
            rootBytes: rootBytes, bundleBytes: bundleBytes, peakRSSKiB: memory["VmHWM"] ?? 0,
            peakRSSBeforeKiB: before["VmHWM"],
            sampledMaxRSSKiB: max(maxRSS, memory["VmRSS"] ?? 0), samples: samples, phaseSeconds: durations,
            finalPhase: final)
    }

    /// "VmRSS:   12345 kB" lines of /proc/PID/status, in KiB.
    static func memoryFields(_ status: String) -> [String: UInt64] {
        var fields: [String: UInt64] = [:]
        for line in status.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, words[0].hasSuffix(":"), let value = UInt64(words[1]) else { continue }
            fields[String(words[0].dropLast())] = value
        }
        return fields
    }

    func writeBundle(
        _ hcos: BuildResult, version: String, rootImage: String, key: [UInt8], in served: String
    ) throws -> String {
        guard let built = hcos.bundle else {
            throw HCOSError(.notFound, "the hcos image was built without --sign: no bundle to take the manifest from")
        }
        let base = try UpdateBundle.readManifestUnverified(try FileDescriptor(path: built, flags: O_RDONLY))
        var manifest = base
        manifest.version = version
        let path = "\(served)/hcos-\(version).bundle"
        _ = try UpdateBundle.write(
            manifest: manifest,
            payloads: [("kernel", hcos.kernel), ("initramfs", hcos.initramfs), ("rootfs", rootImage)],
            privateKey: key, to: path)
        return path
    }

    /// A bundle whose root payload is 1 GiB: the real root image followed by random bytes (a
    /// squashfs image ignores what follows it), so every step handles a full-size slot.
    func writeLargeBundle(_ hcos: BuildResult, version: String, key: [UInt8], in served: String) throws -> (
        path: String, rootBytes: UInt64, bundleBytes: UInt64
    ) {
        let root = "\(directory)/large-root.img"
        try Command("cp", ["--", hcos.rootImage, root]).run()
        defer { unlink(root) }
        let file = try FileDescriptor(path: root, flags: O_RDWR)
        let random = try FileDescriptor(path: "/dev/urandom", flags: O_RDONLY)
        var size = try file.size()
        while size < Self.largeRootSize {
            let chunk = try random.read(at: 0, count: Int(min(UInt64(4 << 20), Self.largeRootSize - size)))
            try file.write(chunk, at: size)
            size += UInt64(chunk.count)
        }
        try file.sync()
        let path = try writeBundle(hcos, version: version, rootImage: root, key: key, in: served)
        return (path, size, try FileDescriptor(path: path, flags: O_RDONLY).size())
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
