import Foundation
import HCOSCore

/// `hcos demo IMAGE --bundle BUNDLE`: the A/B upgrade, end to end, on a copy of IMAGE in qemu.
/// Boots v1, upgrades it through hcosctl inside the VM to BUNDLE (served over http from the
/// host), lets the new slot pass its health gate and commit, then rolls back. Every command
/// run inside the VM is printed with its output.
public enum UpgradeDemo {
    public static let usage = """
        usage: hcos demo IMAGE --bundle BUNDLE [--disk-size SIZE] [--memory MB] [--serial-log FILE]
          boots IMAGE, upgrades it with hcosctl to BUNDLE (served over http from this host),
          shows the new version committed, then rolls back to the old one
        """

    public struct Options: Sendable {
        public var image = ""
        public var bundle = ""
        public var diskSize: UInt64?
        public var memoryMiB = 1024
        public var serialLog: String?
    }

    public static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            func value() throws -> String {
                guard let next = rest.popFirst() else {
                    throw HCOSError(.invalidArgument, "\(argument) needs a value\n\(usage)")
                }
                return next
            }
            switch argument {
            case "--bundle": options.bundle = try value()
            case "--serial-log": options.serialLog = try value()
            case "--disk-size":
                let text = try value()
                guard let size = ByteSize.parse(text), size > 0 else {
                    throw HCOSError(.invalidArgument, "--disk-size takes a size such as 8G, not '\(text)'")
                }
                options.diskSize = size
            case "--memory":
                let text = try value()
                guard let memory = Int(text), memory >= 64 else {
                    throw HCOSError(.invalidArgument, "--memory takes MiB (at least 64), not '\(text)'")
                }
                options.memoryMiB = memory
            default:
                guard !argument.hasPrefix("-"), options.image.isEmpty else {
                    throw HCOSError(.invalidArgument, "unexpected argument '\(argument)'\n\(usage)")
                }
                options.image = argument
            }
        }
        guard !options.image.isEmpty, !options.bundle.isEmpty else {
            throw HCOSError(.invalidArgument, "an IMAGE and --bundle are needed\n\(usage)")
        }
        for path in [options.image, options.bundle] where !FileManager.default.fileExists(atPath: path) {
            throw HCOSError(.notFound, "\(path) does not exist")
        }
        return options
    }

    /// Runs the demo; `onReady` gets the first boot's HCOS-READY report (JSON).
    public static func run(_ options: Options, logger: Logger, onReady: (String) -> Void) async throws -> Int32 {
        let disk = "\(options.image).demo-\(getpid()).raw"
        try DiskImage.prepareVMDisk(from: options.image, to: disk, size: options.diskSize)
        defer { unlink(disk) }
        let bundleURL = URL(fileURLWithPath: options.bundle)
        let server = try HostFileServer(directory: bundleURL.deletingLastPathComponent().path)
        defer { server.stop() }

        var config = VMConfiguration(diskPath: disk)
        config.memoryMiB = options.memoryMiB
        config.serialLogPath = options.serialLog
        config.debugShell = true
        let vm = try await VirtualMachine.start(config, logger: logger)
        do {
            let timeout = Duration.seconds(900)
            let first = try await vm.console.waitForMarkerMatch("HCOS-READY", timeout: timeout)
            onReady(first.payload)
            guard let shell = vm.shell else { throw HCOSError(.notFound, "the VM has no debug shell") }
            try await shell.waitUntilReady(timeout: .seconds(120))

            func step(_ title: String, _ command: String, timeout: Duration = .seconds(120)) async throws {
                print("\n== \(title)\n$ \(command)")
                let result = try await shell.run(command + " 2>&1", timeout: timeout)
                print(result.output.trimmingCharacters(in: .newlines))
                guard result.status == 0 else {
                    throw HCOSError(.toolFailed, "'\(command)' exited with status \(result.status)")
                }
            }

            try await step("1. the node runs its first version, on slot A", "hcosctl status")
            let upgrade = vm.console.mark()
            try await step(
                "2. upgrade: the bundle is served over http by this host (10.0.2.2 inside the VM)",
                "hcosctl upgrade \(server.guestURL(bundleURL.lastPathComponent)) --reboot", timeout: timeout)
            let trial = try await vm.console.waitForMarkerMatch("HCOS-BOOT", after: upgrade, timeout: timeout)
            print("\n   (rebooted: \(trial.payload.split(separator: " ").first ?? ""), a trial boot)")
            let committed = try await vm.console.waitForLine(
                containing: "committed: version", after: trial.next, timeout: timeout)
            print("   (agent: \(committed.components(separatedBy: "os-agent: ").last ?? committed))")
            try await shell.waitUntilReady(timeout: .seconds(120))
            try await step("3. the new version runs on slot B, committed; slot A keeps the old one", "hcosctl status")
            let rollback = vm.console.mark()
            try await step("4. roll back to slot A", "hcosctl rollback")
            let back = try await vm.console.waitForMarkerMatch("HCOS-BOOT", after: rollback, timeout: timeout)
            _ = try await vm.console.waitForMarkerMatch("HCOS-READY", after: back.next, timeout: timeout)
            try await shell.waitUntilReady(timeout: .seconds(120))
            try await step("5. back on the old version; slot B still holds the new one", "hcosctl status")
            print("")
            await vm.stop()
            return 0
        } catch {
            logger.error("demo failed; last console lines:\n" + vm.console.tail(25).joined(separator: "\n"))
            await vm.stop(timeout: .seconds(10))
            throw error
        }
    }
}
