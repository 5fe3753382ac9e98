import Foundation
import HCOSCore
import Node
import Synchronization
import VM

/// The fields of os-agent's boot report (`Node.BootReport`) the benchmark reads. Decoding only
/// these keeps the benchmark working with images whose agent reports other fields too.
struct ReadyReport: Codable {
    var version: String
    var kernel: String
    var timings: BootReport.Timings
    var memory: BootReport.Memory
    var processes: Int
    var runningUnits: Int
    var failedUnits: [String]
    var containerdActive: Bool
}

/// One boot of one image: the node's own report from its HCOS-READY line, plus what the host saw.
struct BootMeasurement: Codable {
    var system: String
    var boot: Int
    /// Taken by the HCOS-READY unit right after containerd and multi-user.target are active.
    var report: ReadyReport
    /// Taken through the debug shell `BootRunner.settleTime` after the HCOS-READY line.
    var settled: ReadyReport?
    /// From qemu's start (paused, then `cont`) to the HCOS-READY line: firmware, GRUB, kernel,
    /// initramfs and userspace, as the host's wall clock sees it.
    var hostSecondsToReady: Double
    /// The guest powered itself off (else qemu was ended).
    var cleanShutdown: Bool
    var consoleLog: String
    /// Share of the boot (sampled each second) during which another qemu ran on this host.
    var contention: Double
    /// CPU used on the host by anything but this VM during the boot, in cores (average).
    var otherCores: Double
    /// Earlier attempts of this boot thrown away because the host was busy.
    var retries: Int = 0

    /// Other load on the host was large enough to slow this boot down noticeably.
    var disturbed: Bool { contention > 0.1 || otherCores > 0.5 }
}

extension UInt64 {
    fileprivate func subtractingClamped(_ other: UInt64) -> UInt64 { self > other ? self - other : 0 }
}

/// Watches the host for other load while a VM boots: other qemu processes (another VM competes
/// for the same cores and slows a TCG guest down) and CPU time used by anything but our qemu.
final class ContentionSampler: Sendable {
    private struct State {
        var samples = 0
        var busy = 0
        var first: (host: CPUTimes, vm: UInt64)?
        var last: (host: CPUTimes, vm: UInt64)?
    }

    /// Jiffies from the first line of /proc/stat (all CPUs together).
    struct CPUTimes {
        var busy: UInt64
        var total: UInt64

        static func read() -> CPUTimes? {
            guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
                let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
            else { return nil }
            // user nice system idle iowait irq softirq steal (guest time is already in user)
            let fields = line.split(separator: " ").dropFirst().prefix(8).compactMap { UInt64($0) }
            guard fields.count == 8 else { return nil }
            let total = fields.reduce(0, +)
            return CPUTimes(busy: total - fields[3] - fields[4], total: total)
        }
    }

    private let state = Mutex(State())
    private let ownProcess: Int32
    private let cpuCount = Double(max(1, ProcessInfo.processInfo.activeProcessorCount))

    init(ownProcess: Int32) {
        self.ownProcess = ownProcess
    }

    func sample() {
        let busy = !Self.otherVMs(excluding: ownProcess).isEmpty
        let now = CPUTimes.read().map { (host: $0, vm: Self.processJiffies(ownProcess)) }
        state.withLock { state in
            state.samples += 1
            if busy { state.busy += 1 }
            if state.first == nil { state.first = now }
            if now != nil { state.last = now }
        }
    }

    /// Share of the samples during which another qemu ran.
    var otherVMFraction: Double {
        state.withLock { $0.samples == 0 ? 0 : Double($0.busy) / Double($0.samples) }
    }

    /// CPU used by everything but our qemu, in cores (averaged over the boot).
    var otherCores: Double {
        state.withLock { state in
            guard let first = state.first, let last = state.last, last.host.total > first.host.total else { return 0 }
            let elapsedPerCPU = Double(last.host.total - first.host.total) / cpuCount
            let others =
                Double(last.host.busy.subtractingClamped(first.host.busy))
                - Double(last.vm.subtractingClamped(first.vm))
            return max(0, others / elapsedPerCPU)
        }
    }

    /// utime + stime of a process (all its threads), in jiffies.
    static func processJiffies(_ pid: Int32) -> UInt64 {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        // After "(comm)": state is field 3; utime and stime are fields 14 and 15 (proc(5)).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return 0 }
        return user + system
    }

    /// Live qemu-system processes other than `excluding` (by /proc/PID/stat: name, not a zombie).
    static func otherVMs(excluding: Int32 = 0) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard pid != excluding, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
            else { return false }
            let name = stat[stat.index(after: open)..<close]
            let state = stat[stat.index(after: close)...].split(separator: " ").first
            return name.hasPrefix("qemu-system") && state != "Z" && state != "X"
        }
    }
}

/// Boots images under one and the same qemu configuration (VirtualMachine defaults: q35,
/// virtio disk and network, `-cpu max` under TCG), memory and vCPUs fixed for both.
struct BootRunner {
    static let memoryMiB = 1024
    static let cpus = 1
    /// The guest gets this long to power off (`systemctl poweroff` from the shell, else the ACPI
    /// button) before qemu is ended.
    static let shutdownTimeout = Duration.seconds(60)
    /// A boot disturbed by other load on the host is measured again at most this often.
    static let maximumRetries = 2
    /// The same fixed wait after HCOS-READY for both systems before the settled report.
    static let settleTime = Duration.seconds(30)

    /// The longest wait for other VMs on this host to end before a boot.
    static let idleWait = Duration.seconds(600)

    let directory: String
    let timeout: Duration
    let logger: Logger

    /// Waits (up to `idleWait`) until no other qemu runs, so that boots are timed on a quiet host.
    func waitForIdleHost() async {
        let clock = ContinuousClock()
        let deadline = clock.now + Self.idleWait
        var announced = false
        while !ContentionSampler.otherVMs().isEmpty {
            if clock.now >= deadline {
                logger.warning("other VMs still running on this host; booting anyway (timings will show it)")
                return
            }
            if !announced {
                logger.info("waiting for other VMs on this host to finish before timing a boot")
                announced = true
            }
            try? await Task.sleep(for: .seconds(2))
        }
    }

    /// A fresh sparse copy of `image` that all boots of `system` share (boot 1 is a first boot).
    func prepareDisk(system: String, image: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let disk = "\(directory)/\(system).raw"
        try DiskImage.prepareVMDisk(from: image, to: disk)
        return disk
    }

    /// Boots `disk` once with the root shell on serial1: waits for HCOS-READY (the report taken
    /// right after containerd and multi-user.target are active), lets the system settle for
    /// `settleTime`, reads a second report through the shell, then powers the guest off from the
    /// shell. `shellViaGrubenv` asks an hcos image for its shell (the standard image always has it).
    func boot(system: String, disk: String, number: Int, shellViaGrubenv: Bool) async throws -> BootMeasurement {
        let log = "\(directory)/\(system)-boot\(number).console.log"
        try? FileManager.default.removeItem(atPath: log)
        try? FileManager.default.removeItem(atPath: log + ".shell")
        var config = VMConfiguration(diskPath: disk)
        config.memoryMiB = Self.memoryMiB
        config.cpus = Self.cpus
        config.serialLogPath = log
        config.debugShell = shellViaGrubenv
        await waitForIdleHost()
        logger.info("booting", [("system", system), ("boot", String(number)), ("console", log)])
        let clock = ContinuousClock()
        let started = clock.now
        let vm = try await VirtualMachine.start(config, logger: logger)
        let sampler = ContentionSampler(ownProcess: vm.processIdentifier)
        let sampling = Task {
            while !Task.isCancelled {
                sampler.sample()
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { sampling.cancel() }
        let report: ReadyReport
        let readyAt: ContinuousClock.Instant
        do {
            let payload = try await vm.console.waitForMarker("HCOS-READY", timeout: timeout)
            readyAt = clock.now
            report = try Self.decode(payload, what: "\(system) boot \(number): the HCOS-READY report")
        } catch {
            await vm.stop(timeout: .seconds(10))
            throw error
        }
        sampler.sample()
        let contention = sampler.otherVMFraction
        let otherCores = sampler.otherCores
        let settled: ReadyReport?
        do {
            try await Task.sleep(until: readyAt + Self.settleTime)
            guard let shell = vm.shell else { throw HCOSError(.notFound, "the VM has no debug shell") }
            try await shell.waitUntilReady(timeout: .seconds(120))
            let output = try await shell.check("os-agent report", timeout: .seconds(120))
            settled = try Self.decode(output, what: "\(system) boot \(number): the settled report")
        } catch {
            logger.warning("no settled report", [("system", system), ("reason", "\(error)".prefix(300).description)])
            settled = nil
        }
        if let shell = vm.shell, shell.hasAnswered {
            // Where systemctl cannot reach systemd (no D-Bus), power off forcibly after a sync
            // rather than wait for qemu to be ended.
            try? shell.send("\u{15}sync; systemctl poweroff || systemctl --force --force poweroff\n")
        }
        let clean = await vm.stop(timeout: Self.shutdownTimeout)
        let elapsed = readyAt - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        logger.info(
            "measured",
            [
                ("system", system), ("boot", String(number)), ("host_s", String(format: "%.1f", seconds)),
                ("containerd_s", report.timings.containerdReady.map { String(format: "%.1f", $0) } ?? "-"),
                ("clean_shutdown", String(clean)), ("other_vm", String(format: "%.0f%%", contention * 100)),
                ("other_cpu", String(format: "%.2f", otherCores)),
            ])
        return BootMeasurement(
            system: system, boot: number, report: report, settled: settled, hostSecondsToReady: seconds,
            cleanShutdown: clean, consoleLog: log, contention: contention, otherCores: otherCores)
    }

    /// The JSON object on the marker line (console noise may follow it on the same line).
    static func decode(_ text: String, what: String) throws -> ReadyReport {
        guard let start = text.firstIndex(of: "{"), let end = text.lastIndex(of: "}") else {
            throw HCOSError(.io, "\(what) holds no JSON object:\n\(text.prefix(2000))")
        }
        do {
            return try JSONDecoder().decode(ReadyReport.self, from: Data(text[start...end].utf8))
        } catch {
            throw HCOSError(.io, "\(what) cannot be decoded: \(error)\n\(text.prefix(2000))")
        }
    }
}
