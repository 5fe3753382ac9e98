import Foundation
import HCOSCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One qemu process booting an hcos disk, with its system console (serial0), the debug shell
/// (serial1) and QMP. Start it with `VirtualMachine.start`; always end it with `stop()` (deinit
/// kills a qemu that is still running, but only an explicit stop waits for a clean shutdown).
///
///     let vm = try await VirtualMachine.start(config)
///     let ready = try await vm.console.waitForMarker("HCOS-READY", timeout: .seconds(300))
///     let mark = vm.console.mark()
///     try vm.reset()
///     _ = try await vm.console.waitForMarker("HCOS-BOOT", after: mark, timeout: .seconds(300))
///     await vm.stop()
public final class VirtualMachine: Sendable {
    public let configuration: VMConfiguration
    public let paths: VMPaths
    public let accelerator: Accelerator
    public let arguments: [String]
    /// serial0: kernel and system console, marker lines.
    public let console: SerialConsole
    /// serial1: nil when the VM was started with `attachShell: false` (then the socket at
    /// `paths.shellSocket` is free for another client, e.g. `socat - UNIX-CONNECT:...`).
    public let shell: DebugShell?
    public let qmp: QMPClient
    private let process: Process
    private let ownsDirectory: Bool
    private let logger: Logger
    private let finished = Mutex(false)

    private init(
        configuration: VMConfiguration, paths: VMPaths, accelerator: Accelerator, arguments: [String],
        console: SerialConsole, shell: DebugShell?, qmp: QMPClient, process: Process,
        ownsDirectory: Bool,
        logger: Logger
    ) {
        self.configuration = configuration
        self.paths = paths
        self.accelerator = accelerator
        self.arguments = arguments
        self.console = console
        self.shell = shell
        self.qmp = qmp
        self.process = process
        self.ownsDirectory = ownsDirectory
        self.logger = logger
    }

    deinit {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        cleanUp()
    }

    /// Launches qemu paused, connects QMP, the console and (if `attachShell`) the debug shell,
    /// then lets the guest run, so no console byte is lost. `onConsoleOutput` sees every console
    /// byte as it arrives (the `hcos vm` command streams it to the terminal).
    public static func start(
        _ configuration: VMConfiguration, logger: Logger = .silent, attachShell: Bool = true,
        startupTimeout: Duration = .seconds(30), onConsoleOutput: (@Sendable ([UInt8]) -> Void)? = nil
    ) async throws -> VirtualMachine {
        guard FileSystem.exists(configuration.diskPath) else {
            throw HCOSError(.notFound, "VM disk \(configuration.diskPath) does not exist")
        }
        guard let qemu = Command.resolve(configuration.qemuBinary) else {
            throw HCOSError(
                .missingTool, "'\(configuration.qemuBinary)' is not installed (not found in PATH)")
        }
        let accelerator = try configuration.accelerator ?? Accelerator.detect()
        if configuration.debugShell {
            // The image reads extra kernel arguments from its GRUB environment (hcos_cmdline).
            try DiskImage.addKernelArgument("hcos.debug-shell", disk: configuration.diskPath)
        }
        let (paths, ownsDirectory) = try makeWorkDirectory(configuration.workDirectory)
        var process: Process?
        do {
            for socket in [paths.consoleSocket, paths.shellSocket, paths.qmpSocket] { unlink(socket) }
            // Socket paths are checked before qemu sees them, for a clear error.
            for socket in [paths.consoleSocket, paths.shellSocket, paths.qmpSocket] {
                _ = try UnixSocket.makeAddress(socket)
            }
            if configuration.uefi {
                for file in [configuration.firmware.code, configuration.firmware.variables]
                where !FileSystem.exists(file) {
                    throw HCOSError(
                        .notFound, "UEFI firmware \(file) does not exist (install the ovmf package)")
                }
                try Command("cp", ["--", configuration.firmware.variables, paths.uefiVariables]).run()
            }
            let arguments = QEMUArguments.make(configuration, paths: paths, accelerator: accelerator)
            logger.info(
                "starting qemu",
                [
                    ("disk", configuration.diskPath), ("accel", accelerator.rawValue),
                    ("dir", paths.directory),
                ])
            logger.debug("qemu command", [("args", arguments.joined(separator: " "))])

            let launched = Process()
            launched.executableURL = URL(fileURLWithPath: qemu)
            launched.arguments = arguments
            guard FileManager.default.createFile(atPath: paths.qemuLog, contents: nil),
                let log = FileHandle(forWritingAtPath: paths.qemuLog)
            else { throw HCOSError(.io, "cannot create \(paths.qemuLog)") }
            launched.standardInput = FileHandle.nullDevice
            launched.standardOutput = log
            launched.standardError = log
            try launched.run()
            try? log.close()
            process = launched

            let diagnostics: @Sendable () -> String = { diagnose(launched, paths) }
            let qmp = try await connect(launched, paths, timeout: startupTimeout) {
                try QMPClient(path: paths.qmpSocket)
            }
            let consolePort = try SerialPort(
                name: "console", connectingTo: paths.consoleSocket, logPath: configuration.serialLogPath,
                onOutput: onConsoleOutput)
            var shell: DebugShell?
            if attachShell {
                shell = DebugShell(
                    port: try SerialPort(
                        name: "shell", connectingTo: paths.shellSocket,
                        logPath: configuration.serialLogPath.map { $0 + ".shell" }))
            }
            try qmp.execute("cont")
            return VirtualMachine(
                configuration: configuration, paths: paths, accelerator: accelerator, arguments: arguments,
                console: SerialConsole(port: consolePort, diagnostics: diagnostics), shell: shell, qmp: qmp,
                process: launched, ownsDirectory: ownsDirectory, logger: logger)
        } catch {
            if let process, process.isRunning {
                Glibc.kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            let detail = process.map { diagnose($0, paths) } ?? ""
            VirtualMachine.removeWorkFiles(paths, ownsDirectory: ownsDirectory)
            if detail.isEmpty { throw error }
            throw HCOSError(.toolFailed, "cannot start the VM: \(error)\n\(detail)")
        }
    }

    /// qemu creates its sockets during start-up; retry until they answer or qemu has died.
    private static func connect<T>(
        _ process: Process, _ paths: VMPaths, timeout: Duration, _ attempt: () throws -> T
    ) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        while true {
            do {
                return try attempt()
            } catch {
                guard process.isRunning else {
                    throw HCOSError(.toolFailed, "qemu exited during start-up")
                }
                if ContinuousClock.now >= deadline {
                    throw HCOSError(.timeout, "qemu's QMP socket did not answer within \(timeout): \(error)")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    // MARK: Control

    public var processIdentifier: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// A hard reset (QMP `system_reset`): the guest gets no say, like pressing the reset button.
    public func reset() throws { try qmp.execute("system_reset") }

    /// The ACPI power button (QMP `system_powerdown`); a booted guest shuts down cleanly.
    public func powerdown() throws { try qmp.execute("system_powerdown") }

    /// Ends qemu immediately (QMP `quit`); the guest does not shut down.
    public func quit() throws {
        do {
            try qmp.execute("quit")
        } catch let error as HCOSError where error.code == .io {
            // qemu may close the connection before the reply.
        }
    }

    /// SIGKILL to qemu: power loss for the guest (writes still in the host page cache survive;
    /// with cache=writeback, what the guest had not flushed may be lost, as on real hardware).
    public func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }

    /// Waits for qemu to exit and returns its status (128+N for signal N).
    @discardableResult
    public func waitForExit(timeout: Duration) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                throw HCOSError(.timeout, console.failure("qemu did not exit within \(timeout)"))
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return VirtualMachine.exitStatus(process)
    }

    /// Shuts the guest down and never leaves qemu behind: `systemctl poweroff` through the debug
    /// shell when it has answered, else the ACPI power button; after `timeout`, QMP `quit`, then
    /// SIGKILL. Removes the work files. Returns true when the guest shut down by itself.
    @discardableResult
    public func stop(timeout: Duration = .seconds(90)) async -> Bool {
        var clean = false
        if process.isRunning {
            do {
                if let shell, shell.hasAnswered {
                    try shell.send("\u{15}systemctl poweroff\n")
                } else {
                    try powerdown()
                }
                try await waitForExit(timeout: timeout)
                clean = true
            } catch {
                logger.warning(
                    "VM did not shut down cleanly, ending qemu",
                    [("reason", "\(error)".prefix(200).description)])
            }
        } else {
            clean = true
        }
        if process.isRunning {
            try? quit()
            _ = try? await waitForExit(timeout: .seconds(5))
        }
        if process.isRunning {
            kill()
            process.waitUntilExit()
        }
        cleanUp()
        return clean
    }

    private func cleanUp() {
        let first = finished.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        console.port.shutdown()
        shell?.port.shutdown()
        VirtualMachine.removeWorkFiles(paths, ownsDirectory: ownsDirectory)
    }

    // MARK: Helpers

    private static func makeWorkDirectory(_ requested: String?) throws -> (VMPaths, Bool) {
        if let requested {
            try FileSystem.makeDirectories(requested)
            return (VMPaths(directory: requested), false)
        }
        var template = Array("/tmp/hcos-vm.XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress.flatMap { mkdtemp($0) }
        }
        guard created != nil else {
            throw HCOSError(
                .io, "cannot create a VM work directory", cause: SystemError("mkdtemp", errno: errno))
        }
        let path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return (VMPaths(directory: path), true)
    }

    private static func removeWorkFiles(_ paths: VMPaths, ownsDirectory: Bool) {
        if ownsDirectory {
            try? FileManager.default.removeItem(atPath: paths.directory)
        } else {
            for file in [paths.consoleSocket, paths.shellSocket, paths.qmpSocket, paths.uefiVariables] {
                unlink(file)
            }
        }
    }

    private static func exitStatus(_ process: Process) -> Int32 {
        process.terminationReason == .uncaughtSignal
            ? 128 + process.terminationStatus : process.terminationStatus
    }

    /// qemu's own messages and exit status, for errors.
    private static func diagnose(_ process: Process, _ paths: VMPaths) -> String {
        var lines: [String] = []
        if !process.isRunning { lines.append("qemu exited with status \(exitStatus(process))") }
        if let log = try? FileSystem.readString(paths.qemuLog) {
            let tail = log.split(separator: "\n").suffix(15)
            if !tail.isEmpty {
                lines.append("qemu said:\n" + tail.map { "  " + $0 }.joined(separator: "\n"))
            }
        }
        return lines.joined(separator: "\n")
    }
}
