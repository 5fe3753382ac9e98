import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// The checks a trial boot must pass before its slot is committed (DESIGN §3 step 5): systemd
/// reached its default target, containerd answers, the agent's API answers, and every
/// executable hook in the health directories exits 0.
public struct HealthGate: Sendable {
    public struct Check: Sendable {
        public var name: String
        public var run: @Sendable () -> HealthCheckResult

        public init(name: String, run: @escaping @Sendable () -> HealthCheckResult) {
            self.name = name
            self.run = run
        }
    }

    public var checks: [Check]

    public init(checks: [Check]) { self.checks = checks }

    /// Runs every check once.
    public func evaluate() -> HealthReport {
        let results = checks.map { $0.run() }
        return HealthReport(passed: results.allSatisfy(\.ok), checks: results, at: Timestamp.now())
    }

    /// Evaluates until all checks pass or `deadline` (monotonic seconds) passes; `pause` waits
    /// between rounds (a real sleep on a node: the checks poll the system).
    public func waitForPass(
        deadline: Double, now: () -> Double, pause: (Double) -> Void, onRound: (HealthReport) -> Void
    ) -> HealthReport {
        while true {
            let report = evaluate()
            onRound(report)
            if report.passed || now() >= deadline { return report }
            pause(min(3, max(0, deadline - now())))
        }
    }

    // MARK: the node's checks

    /// systemd finished starting (running, or degraded with the failed units named). The check
    /// waits up to `wait` seconds for the startup to end instead of failing at once: the gate
    /// then passes as soon as the boot is done, not at its next round (the commit, and with it
    /// the upgrade's downtime, no longer waits for a poll), and no round of the other checks
    /// competes with the boot for the CPU. Short enough for the gate to pet the watchdog.
    public static func systemd(wait: Double = 30) -> Check {
        Check(name: "systemd") {
            var command = Command("systemctl", ["is-system-running", "--wait"])
            command.timeout = wait
            guard let result = try? command.run(check: false) else {
                return HealthCheckResult(name: "systemd", ok: false, detail: "systemctl cannot run")
            }
            if result.timedOut {
                return HealthCheckResult(
                    name: "systemd", ok: false, detail: "still starting after \(Int(wait)) s")
            }
            let state = result.output.trimmed()
            switch state {
            case "running":
                return HealthCheckResult(name: "systemd", ok: true, detail: "running")
            case "degraded":
                var failed = Command("systemctl", ["--failed", "--plain", "--no-legend"])
                failed.timeout = 20
                let units = ((try? failed.run(check: false))?.output ?? "").split(separator: "\n")
                    .compactMap { $0.split(separator: " ").first.map(String.init) }
                return HealthCheckResult(
                    name: "systemd", ok: true, detail: "degraded (failed: \(units.joined(separator: ", ")))")
            default:
                return HealthCheckResult(
                    name: "systemd", ok: false, detail: "not up yet: \(state.isEmpty ? "no answer" : state)")
            }
        }
    }

    /// containerd answers on its socket (`ctr version` asks the daemon for its version).
    public static func containerd(socket: String = "/run/containerd/containerd.sock") -> Check {
        Check(name: "containerd") {
            var command = Command("ctr", ["--address", socket, "--timeout", "10s", "version"])
            command.timeout = 20
            guard let result = try? command.run(check: false) else {
                return HealthCheckResult(name: "containerd", ok: false, detail: "ctr is not installed")
            }
            guard result.status == 0, result.output.contains("Server:") else {
                let reason = result.errorOutput.trimmed().split(separator: "\n").last.map(String.init) ?? ""
                return HealthCheckResult(name: "containerd", ok: false, detail: "no answer: \(reason)")
            }
            return HealthCheckResult(name: "containerd", ok: true, detail: "answers on \(socket)")
        }
    }

    /// Executable files in `directories` (sorted by name); each must exit 0 within `timeout` s.
    public static func hooks(directories: [String], timeout: Double = 60) -> [Check] {
        var checks: [Check] = []
        for directory in directories {
            for name in (try? FileManagerLite.list(directory)) ?? [] where !name.hasPrefix(".") {
                let path = "\(directory)/\(name)"
                guard access(path, X_OK) == 0, !FileSystem.isDirectory(path) else { continue }
                let label = "hook:\(path)"
                checks.append(
                    Check(name: label) {
                        var command = Command(path, [])
                        command.timeout = timeout
                        guard let result = try? command.run(check: false) else {
                            return HealthCheckResult(name: label, ok: false, detail: "cannot run")
                        }
                        if result.timedOut {
                            return HealthCheckResult(
                                name: label, ok: false, detail: "timed out after \(Int(timeout)) s")
                        }
                        let output = (result.output + result.errorOutput).trimmed()
                        let tail = output.split(separator: "\n").suffix(3).joined(separator: " | ")
                        return HealthCheckResult(
                            name: label, ok: result.status == 0,
                            detail: "exit \(result.status)\(tail.isEmpty ? "" : ": \(tail)")")
                    })
            }
        }
        return checks
    }
}
