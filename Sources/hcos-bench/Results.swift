import Builder
import Foundation
import HCOSCore
import Node

/// Everything one benchmark run measured (DIR/results.json).
struct BenchResults: Codable {
    var date: String
    var accelerator: String
    var hcos: BuildResult
    /// The boot comparison (section `boot`); nil when the run left it out.
    var standard: StandardBuildResult?
    var boots: [BootMeasurement]
    /// Section `slot-write`: os-agent's slot writer against dd on the build host.
    var slotWrite: [SlotWriteMeasurement]?
    /// Section `upgrade`: reboot-to-commit downtime and the agent's memory in a VM.
    var upgrade: UpgradeBenchResult?

    func measurement(_ system: String, boot: Int) -> BootMeasurement? {
        boots.first { $0.system == system && $0.boot == boot }
    }
}

/// A goal for hcos: at most `limit`, either absolute or as a ratio hcos/standard.
struct Target {
    var text: String
    var limit: Double

    func verdict(_ value: Double?) -> String {
        guard let value else { return "not measured" }
        return value <= limit ? "met" : "NOT MET"
    }

    static let compressedRoot = Target(text: "≤ 48 MiB", limit: 48 * 1_048_576)
    static let containerdRatio = Target(text: "≤ 40 % of standard", limit: 0.40)
    static let memoryRatio = Target(text: "≤ 50 % of standard", limit: 0.50)
    /// 80 MB read as 80 × 10^6 bytes, the stricter of the two readings (76.3 MiB).
    static let memoryAbsolute = Target(text: "≤ 80 MB (76.3 MiB)", limit: 80_000_000)
    /// dd's throughput over the agent's: at most 1/0.9, i.e. the agent writes at ≥ 0.9 × dd.
    static let slotWrite = Target(text: "≥ 0.9 × dd", limit: 1 / 0.9)
    static let downtime = Target(text: "≤ 1.1 × a plain reboot", limit: 1.1)
    /// 50 MB read as 50 × 10^6 bytes, in KiB.
    static let agentMemory = Target(text: "≤ 50 MB (47.7 MiB)", limit: 50_000_000 / 1024)
}

/// Renders the results as a markdown table (printed, and written to results.md).
struct ResultsTable {
    let results: BenchResults

    static func mib(_ bytes: UInt64) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
    static func mib(kib: UInt64) -> String { String(format: "%.1f MiB", Double(kib) / 1024) }
    static func seconds(_ value: Double?) -> String { value.map { String(format: "%.1f s", $0) } ?? "–" }
    static func percent(_ value: Double?) -> String { value.map { String(format: "%.1f %%", $0 * 100) } ?? "–" }

    static func ratio(_ a: Double?, _ b: Double?) -> Double? {
        guard let a, let b, b > 0 else { return nil }
        return a / b
    }

    static func row(_ cells: [String]) -> String { "| " + cells.joined(separator: " | ") + " |" }

    func render() -> String {
        var lines: [String] = []
        if let standard = results.standard {
            lines += comparison(standard)
        } else {
            lines.append("# hcos benchmark")
            lines.append("")
            lines.append(
                "\(results.date) · kernel \(results.hcos.kernelVersion) · qemu \(results.accelerator.uppercased()), "
                    + "\(BootRunner.cpus) vCPU, \(BootRunner.memoryMiB) MiB")
            lines.append("")
        }
        if let slotWrite = results.slotWrite { lines += slotWriteTable(slotWrite) }
        if let upgrade = results.upgrade { lines += upgradeTable(upgrade) }
        return lines.joined(separator: "\n") + "\n"
    }

    /// hcos against the standard image: sizes, then boots, then the method.
    func comparison(_ standard: StandardBuildResult) -> [String] {
        let hcos = results.hcos
        var lines: [String] = []
        lines.append("# hcos vs a standard Debian cloud-style image")
        lines.append("")
        lines.append(
            "\(results.date) · kernel \(hcos.kernelVersion) in both · qemu \(results.accelerator.uppercased()), "
                + "\(BootRunner.cpus) vCPU, \(BootRunner.memoryMiB) MiB, q35, virtio disk and network, same settings for both"
        )
        lines.append("")
        lines.append("## Images")
        lines.append("")
        lines.append(Self.row(["metric", "hcos", "standard", "hcos/standard", "target (hcos)", "result"]))
        lines.append(Self.row(Array(repeating: "---", count: 6)))
        func sizeRow(_ name: String, _ a: UInt64, _ b: UInt64, target: Target? = nil) {
            let ratio = Self.ratio(Double(a), Double(b))
            lines.append(
                Self.row([
                    name, Self.mib(a), Self.mib(b), Self.percent(ratio), target?.text ?? "",
                    target?.verdict(Double(a)) ?? "",
                ]))
        }
        let compression = hcos.rootCompression == "zstd" ? "zstd -19" : hcos.rootCompression
        sizeRow(
            "compressed root image (hcos: \(hcos.rootFormat) \(compression); standard: ext4 ROOT, zstd -19)",
            hcos.rootSize, standard.rootCompressedSize, target: .compressedRoot)
        sizeRow("root file tree (uncompressed, apparent size)", hcos.rootTreeSize, standard.rootTreeSize)
        sizeRow(
            "raw disk image, allocated bytes (both \(Self.mib(hcos.diskSize)) apparent)", hcos.diskAllocated,
            standard.diskAllocated)
        sizeRow("qcow2 image (qemu-img convert -c)", hcos.qcow2Size ?? 0, standard.qcow2Size)
        sizeRow("initramfs", hcos.initramfsSize, standard.initramfsSize)
        lines.append("")

        lines.append(contentsOf: bootTable())
        lines.append("")
        lines.append("## How it was measured")
        lines.append("")
        lines.append(contentsOf: notes(standard).map { "- " + $0 })
        lines.append("")
        return lines
    }

    /// One metric of the boot table: how to read it from a boot, how to show it, its target.
    struct BootRow {
        var name: String
        var value: (BootMeasurement) -> Double?
        var format: (Double) -> String
        var target: Target?
        /// The target bounds hcos's own value (scaled by `targetScale`), not the ratio.
        var absolute = false
        var targetScale = 1.0
    }

    static func bootRows() -> [BootRow] {
        let settle = "\(BootRunner.settleTime.components.seconds) s after HCOS-READY"
        let mib: (Double) -> String = { String(format: "%.1f MiB", $0 / 1024) }
        let count: (Double) -> String = { String(Int($0)) }
        var rows = [
            BootRow(
                name: "systemd ready (multi-user.target active), since kernel start",
                value: { $0.report.timings.systemdReady }, format: { seconds($0) }),
            BootRow(
                name: "containerd ready (containerd.service active), since kernel start",
                value: { $0.report.timings.containerdReady }, format: { seconds($0) }, target: .containerdRatio),
            BootRow(
                name: "HCOS-READY line, host wall clock from qemu start (incl. firmware, GRUB)",
                value: { $0.hostSecondsToReady }, format: { seconds($0) }),
        ]
        let moments: [(String, (BootMeasurement) -> ReadyReport?)] = [
            ("at HCOS-READY", { $0.report }), (settle, { $0.settled }),
        ]
        for (moment, report) in moments {
            rows += [
                BootRow(
                    name: "memory in use (MemTotal − MemAvailable), \(moment)",
                    value: { report($0).map { Double($0.memory.usedKiB) } }, format: mib, target: .memoryRatio),
                BootRow(
                    name: "memory in use without page cache, \(moment)",
                    value: { report($0).map { Double($0.memory.usedWithoutCacheKiB) } }, format: mib,
                    target: .memoryRatio),
                BootRow(
                    name: "memory in use without page cache, \(moment): hcos absolute",
                    value: { report($0).map { Double($0.memory.usedWithoutCacheKiB) } }, format: mib,
                    target: .memoryAbsolute, absolute: true, targetScale: 1024),
            ]
        }
        for (moment, report) in moments {
            rows += [
                BootRow(
                    name: "processes (incl. kernel threads), \(moment)",
                    value: { report($0).map { Double($0.processes) } }, format: count),
                BootRow(
                    name: "running units, \(moment)", value: { report($0).map { Double($0.runningUnits) } },
                    format: count),
                BootRow(
                    name: "failed units, \(moment)", value: { report($0).map { Double($0.failedUnits.count) } },
                    format: count),
            ]
        }
        return rows
    }

    /// Metrics down, boots across: hcos, standard and their ratio for each boot.
    func bootTable() -> [String] {
        let pairs = Set(results.boots.map(\.boot)).sorted().compactMap {
            boot -> (Int, BootMeasurement, BootMeasurement)? in
            guard let h = results.measurement("hcos", boot: boot), let s = results.measurement("standard", boot: boot)
            else { return nil }
            return (boot, h, s)
        }
        let name: (Int) -> String = { $0 == 1 ? "boot 1 (first)" : "boot \($0)" }
        var header = ["metric"]
        for (boot, _, _) in pairs {
            header += ["hcos, \(name(boot))", "standard, \(name(boot))", "hcos/standard, \(name(boot))"]
        }
        header += ["target (hcos)", "result"]
        var lines = ["## Boot", "", Self.row(header), Self.row(Array(repeating: "---", count: header.count))]
        for row in Self.bootRows() {
            var cells = [row.name]
            var verdicts: [String] = []
            for (boot, h, s) in pairs {
                let a = row.value(h)
                let b = row.value(s)
                let ratio = Self.ratio(a, b)
                cells += [a.map(row.format) ?? "–", b.map(row.format) ?? "–", row.absolute ? "" : Self.percent(ratio)]
                if let target = row.target {
                    let verdict = row.absolute ? target.verdict(a.map { $0 * row.targetScale }) : target.verdict(ratio)
                    verdicts.append(pairs.count > 1 ? "boot \(boot): \(verdict)" : verdict)
                }
            }
            cells += [row.target?.text ?? "", verdicts.joined(separator: ", ")]
            lines.append(Self.row(cells))
        }
        return lines
    }

    func notes(_ standard: StandardBuildResult) -> [String] {
        var notes = [
            "hcos: the default image (image/hcos.conf) built by `Build` into build/bench/hcos; root = the "
                + "\(results.hcos.rootFormat) image written to slot A.",
            "standard: Debian \(standard.variant) variant (Essential + Priority required and important, as "
                + "debootstrap installs) plus \(standard.packages.joined(separator: ", ")) and "
                + "\(results.hcos.kernelVersion) — \(standard.installedPackages) packages; one read-write ext4 ROOT "
                + "made with `mkfs.ext4 -d`; Debian's own initramfs (initramfs-tools); GRUB on a FAT ESP loads "
                + "/vmlinuz and /initrd.img from ROOT; kernel command line `\(standard.commandLine)`.",
            "Both bootstraps use the same mmdebstrap options (no Recommends; /usr/share/doc, man and locale not "
                + "installed) and the same apt cache, which makes the standard image smaller than a real cloud "
                + "image: the comparison is conservative.",
            "cloud-init keeps its default configuration except `datasource_list: [ NoCloud, None ]` "
                + "(/etc/cloud/cloud.cfg.d/99-hcos-bench.cfg): there is no metadata service in qemu, and the default "
                + "list would wait minutes on network datasources. Its first boot (SSH host keys, network "
                + "configuration) is counted in boot 1.",
            "Compressed root: hcos = the squashfs root image itself; standard = its ext4 ROOT partition image "
                + "compressed with `zstd -19` (the level hcos uses for squashfs).",
            "Measuring unit: the same `os-agent report --marker HCOS-READY` oneshot (hcos-ready.service, "
                + "After=multi-user.target containerd.service, copied from the hcos overlay) in both images; it "
                + "prints one JSON line on the console. Boot times are systemd's ActiveEnterTimestampMonotonic of "
                + "multi-user.target and containerd.service (seconds since the kernel started); memory, processes "
                + "and units are read by that unit right after both are active. The second reading is the same "
                + "`os-agent report`, run through the root shell on serial1 exactly "
                + "\(BootRunner.settleTime.components.seconds) s after the HCOS-READY line, in both systems.",
            "Both images run hcos's debug-shell unit (a root `sh` on ttyS1, kernel argument hcos.debug-shell) for "
                + "that second reading and for a clean `systemctl poweroff`: one extra process and unit in each.",
            "Boots alternate hcos, standard, hcos, standard on fresh copies of the images, each started once no "
                + "other VM runs on the host (waiting up to \(BootRunner.idleWait)); a boot during which another VM "
                + "ran for over 10 % of the time or other processes used over half a core is measured again (at most "
                + "\(BootRunner.maximumRetries) times); between boots the guest "
                + "is powered off from the shell (`sync; systemctl poweroff || systemctl --force --force poweroff`; qemu "
                + "is ended if it is still running after "
                + "\(BootRunner.shutdownTimeout)).",
        ]
        for measurement in results.boots {
            if !measurement.cleanShutdown {
                notes.append(
                    "\(measurement.system) boot \(measurement.boot) did not power off "
                        + "within \(BootRunner.shutdownTimeout) and was ended with QMP quit.")
            }
            if measurement.contention > 0 || measurement.otherCores >= 0.2 {
                let vm = String(format: "%.0f %%", measurement.contention * 100)
                let cores = String(format: "%.2f", measurement.otherCores)
                notes.append(
                    "\(measurement.system) boot \(measurement.boot): another VM ran for \(vm) of the boot and other "
                        + "processes used \(cores) cores on average\(measurement.disturbed ? " (its times are inflated)" : "")."
                )
            }
            if measurement.retries > 0 {
                notes.append(
                    "\(measurement.system) boot \(measurement.boot) was measured again \(measurement.retries) time(s) "
                        + "because other load on the host disturbed the earlier attempt(s).")
            }
            if !measurement.report.failedUnits.isEmpty {
                notes.append(
                    "\(measurement.system) boot \(measurement.boot) failed units: "
                        + measurement.report.failedUnits.joined(separator: ", "))
            }
        }
        notes.append("Console logs: \(results.boots.map(\.consoleLog).joined(separator: ", ")).")
        return notes
    }
}

extension ResultsTable {
    static func rate(_ bytesPerSecond: Double?) -> String {
        bytesPerSecond.map { String(format: "%.0f MiB/s", $0 / 1_048_576) } ?? "–"
    }

    /// Slot write throughput: os-agent's writer against dd, per payload.
    func slotWriteTable(_ measurements: [SlotWriteMeasurement]) -> [String] {
        var lines = [
            "## Slot write (build host)", "",
            Self.row([
                "payload", "dd bs=4M conv=fsync", "os-agent write (SHA-256, fsync)", "os-agent/dd", "target",
                "result", "os-agent write + read-back verification",
            ]),
            Self.row(Array(repeating: "---", count: 7)),
        ]
        for measurement in measurements {
            let ratio = Self.ratio(measurement.writeRate, measurement.ddRate)
            let inverse = Self.ratio(measurement.ddRate, measurement.writeRate)
            lines.append(
                Self.row([
                    "\(measurement.payload) (\(Self.mib(measurement.bytes)))", Self.rate(measurement.ddRate),
                    Self.rate(measurement.writeRate), ratio.map { String(format: "%.2f ×", $0) } ?? "–",
                    Target.slotWrite.text, Target.slotWrite.verdict(inverse), Self.rate(measurement.writeAndVerifyRate),
                ]))
        }
        lines += [
            "",
            "- Both write the same file (already in the page cache) into ROOT-B of a copy of the hcos disk image, "
                + "at the partition's offset, in 4 MiB writes ending with fsync; the slot's pages are dropped from "
                + "the page cache before each run, a first untimed write allocates the sparse file's blocks, and "
                + "\(SlotWriteBench.rounds) rounds alternate which writer goes first (medians shown).",
            "- The os-agent column is `SlotWriter.copy`, the code a node runs: it also computes the SHA-256 of the "
                + "stream. The last column adds `SlotWriter.verify`, which reads the slot back from the disk and "
                + "hashes it again, as every upgrade does before arming a slot.",
            "",
        ]
        return lines
    }

    /// Upgrade downtime against plain reboots, and the agent's memory during a 1 GiB upgrade.
    func upgradeTable(_ upgrade: UpgradeBenchResult) -> [String] {
        func median(_ timings: [RebootTiming], _ value: (RebootTiming) -> Double?) -> Double? {
            SlotWriteMeasurement.median(timings.compactMap(value))
        }
        let plainDown = median(upgrade.plain) { $0.downtime }
        let upgradeDown = median(upgrade.upgrades) { $0.downtime }
        let ratio = Self.ratio(upgradeDown, plainDown)
        var lines = [
            "## Upgrade (in qemu, \(BootRunner.cpus) vCPU, \(BootRunner.memoryMiB) MiB)", "",
            Self.row(["metric", "value", "target", "result"]), Self.row(Array(repeating: "---", count: 4)),
            Self.row([
                "plain reboot: agent's reboot line → HCOS-READY (median of \(upgrade.plain.count))",
                Self.seconds(plainDown), "", "",
            ]),
            Self.row([
                "upgrade: agent's reboot line → new slot committed (median of \(upgrade.upgrades.count))",
                Self.seconds(upgradeDown), "", "",
            ]),
            Self.row([
                "upgrade downtime / plain reboot", ratio.map { String(format: "%.2f ×", $0) } ?? "–",
                Target.downtime.text, Target.downtime.verdict(ratio),
            ]),
            Self.row([
                "upgrade: HCOS-READY → committed (health gate after containerd is up, median)",
                Self.seconds(median(upgrade.upgrades) { t in t.toCommittedSeconds.map { $0 - t.toReadySeconds } }), "",
                "",
            ]),
        ]
        if let large = upgrade.large {
            lines.append(
                Self.row([
                    "os-agent peak RSS (VmHWM) during a \(Self.mib(large.rootBytes)) root image upgrade",
                    Self.mib(kib: large.peakRSSKiB), Target.agentMemory.text,
                    Target.agentMemory.verdict(Double(large.peakRSSKiB)),
                ]))
            if let before = large.peakRSSBeforeKiB {
                lines.append(
                    Self.row([
                        "os-agent peak RSS (VmHWM) before that upgrade started", Self.mib(kib: before), "", "",
                    ]))
            }
            lines.append(
                Self.row([
                    "os-agent largest sampled VmRSS during it (\(large.samples) samples)",
                    Self.mib(kib: large.sampledMaxRSSKiB), "", "",
                ]))
            for phase in ["downloading", "verifying", "writing"] {
                guard let seconds = large.phaseSeconds[phase], seconds > 0 else { continue }
                lines.append(
                    Self.row([
                        "1 GiB upgrade, \(phase) (in the VM, TCG)",
                        "\(Self.seconds(seconds)), \(Self.rate(Double(large.bundleBytes) / seconds))", "", "",
                    ]))
            }
        }
        lines += [""]
        lines.append(contentsOf: upgradeNotes(upgrade).map { "- " + $0 })
        lines.append("")
        return lines
    }

    func upgradeNotes(_ upgrade: UpgradeBenchResult) -> [String] {
        let commands: [String] = upgrade.reboots.map { timing in
            let command = timing.command.replacingOccurrences(of: "http://10.0.2.2", with: "…")
            return "`" + command + "`"
        }
        let sequence: String = commands.joined(separator: ", ")
        let disk: String = ByteSize.format(UpgradeBench.diskSize)
        var notes: [String] = [
            "One VM of the hcos image (disk grown to \(disk)) runs, in order: \(sequence)"
                + ". The bundles carry the image's own kernel, initramfs and root under new version numbers, so an "
                + "upgrade's boot differs from a plain one only by what the upgrade adds: the trial, the health gate "
                + "and the commit. Upgrades after the first find their root already in slot B and do not rewrite it.",
            "Times are host clock readings of console lines (each line is stamped when it arrives): from "
                + "os-agent's `rebooting:` line, to HCOS-READY (plain), or to `slot B committed` (upgrade). Both "
                + "include the shutdown, firmware, GRUB, kernel and userspace.",
            "The 1 GiB upgrade (a bundle whose root payload is the real root image padded with random bytes to "
                + "1 GiB) runs without reboot from slot B to slot A; /proc/PID/status of os-agent and `hcosctl "
                + "status` are read through the debug shell every \(UpgradeBench.samplingInterval) until it is "
                + "staged. VmHWM is the kernel's record of the agent's largest resident set since it started. Phase "
                + "rates divide the bundle's size by the phase's duration (writing includes the read-back).",
        ]
        for timing in upgrade.reboots {
            let command: String = timing.command.split(separator: " ").prefix(2).joined(separator: " ")
            var note = "\(timing.kind) `\(command)`: "
            if let grub = timing.toGrubSeconds { note += "GRUB's line after \(Self.seconds(grub)), " }
            note += "boot line after \(Self.seconds(timing.toBootSeconds)), "
            note += "HCOS-READY after \(Self.seconds(timing.toReadySeconds))"
            if let committed = timing.toCommittedSeconds { note += ", committed after \(Self.seconds(committed))" }
            notes.append(note + ".")
        }
        return notes
    }
}
