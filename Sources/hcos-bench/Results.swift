import Builder
import Foundation
import Node

/// Everything one benchmark run measured (DIR/results.json).
struct BenchResults: Codable {
    var date: String
    var accelerator: String
    var hcos: BuildResult
    var standard: StandardBuildResult
    var boots: [BootMeasurement]

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
        let hcos = results.hcos
        let standard = results.standard
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
        lines.append(contentsOf: notes().map { "- " + $0 })
        return lines.joined(separator: "\n") + "\n"
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

    func notes() -> [String] {
        let standard = results.standard
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
