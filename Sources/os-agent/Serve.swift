import Agent
import AgentHTTP
import Digest
import Dispatch
import Fetch
import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// `os-agent serve`: the node daemon. Reconciles its state with this boot (finishing or cleaning
/// up what a restart interrupted, starting the health gate on a trial boot), then serves the
/// API on the Unix socket until stopped.
enum Serve {
    static let socketPath = "/run/hcos/agent.sock"
    /// Free space a download must leave on PERSIST.
    static let downloadReserve: UInt64 = 64 << 20

    static func run(logger: Logger, socket: String = socketPath) throws -> Never {
        signal(SIGPIPE, SIG_IGN)
        let paths = AgentPaths()
        let actions = AgentActions(
            fetch: { source, downloads, settings, progress in
                try fetch(source, downloads: downloads, settings: settings, logger: logger, progress: progress)
            },
            reboot: { reason in reboot(reason: reason, logger: logger) },
            healthGate: { timeout, onRound in
                healthGate(paths: paths, socket: socket, timeout: timeout, onRound: onRound)
            })
        let core = try AgentCore(paths: paths, disk: try NodeDisk.running(), actions: actions, logger: logger)
        try core.reconcile()
        try FileSystem.makeDirectories(FileSystem.parent(of: socket), mode: 0o755)
        let routes = AgentRoutes(core: core)
        let server = try UnixHTTPServer(
            path: socket, mode: 0o600, logger: logger,
            authorize: { peer in peer.uid == 0 },
            handler: { request in routes.handle(request) })
        let status = core.status()
        logger.info(
            "serving on \(socket)",
            [("version", status.version), ("slot", status.bootedSlot), ("trial", String(status.trial))])
        server.serve()
        exit(0)
    }

    static func fetch(
        _ source: String, downloads: String, settings: AgentSettings, logger: Logger,
        progress: @escaping @Sendable (Progress) -> Void
    ) throws -> String {
        let parsed = try UpdateSource.parse(source)
        // The same source resumes into the same file after a restart.
        let name = SHA256.hex(try SHA256.hash(Array(source.utf8))).prefix(16)
        var fetcher = Fetcher(logger: logger, insecureRegistries: settings.insecureRegistries ?? [])
        // PERSIST also holds containerd's images and the journal: a bundle may not take its last bytes.
        fetcher.reserve = downloadReserve
        let result = try fetcher.fetch(parsed, to: "\(downloads)/\(name).bundle") { update in
            progress(Progress(done: update.done, total: update.total))
        }
        return result.path
    }

    /// A clean reboot through systemd, after the API answer has left; if systemd cannot do it
    /// within a minute, the kernel reboots directly (the file systems are synced first).
    static func reboot(reason: String, logger: Logger) {
        logger.info("rebooting: \(reason)")
        DispatchQueue.global().asyncAfter(deadline: .now() + 1) {
            var command = Command("systemctl", ["reboot"])
            command.timeout = 30
            if (try? command.run()) == nil {
                logger.warning("systemctl reboot failed; rebooting through the kernel")
                try? Syscall.rebootNow()
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + 60) {
                logger.warning("systemd did not reboot within 60 s; rebooting through the kernel")
                try? Syscall.rebootNow()
            }
        }
    }

    static func healthGate(
        paths: AgentPaths, socket: String, timeout: Int, onRound: @escaping @Sendable (HealthReport) -> Void
    ) -> HealthReport {
        let agentCheck = HealthGate.Check(name: "os-agent") {
            let client = UnixHTTPClient(socketPath: socket, timeout: 10)
            do {
                let response = try client.request("GET", "/v1/ping")
                return HealthCheckResult(
                    name: "os-agent", ok: response.status == 200, detail: "API answers with \(response.status)")
            } catch {
                return HealthCheckResult(name: "os-agent", ok: false, detail: "\(error)")
            }
        }
        let gate = HealthGate(
            checks: [HealthGate.systemd(), HealthGate.containerd(), agentCheck]
                + HealthGate.hooks(directories: paths.healthDirectories))
        let start = monotonic()
        return gate.waitForPass(
            deadline: start + Double(timeout), now: monotonic,
            pause: { seconds in usleep(UInt32(seconds * 1_000_000)) },
            onRound: onRound)
    }

    static func monotonic() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
