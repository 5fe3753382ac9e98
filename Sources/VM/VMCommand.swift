import Dispatch
import Foundation
import HCOSCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `hcos vm IMAGE [--memory MB] [--disk-size SIZE] [--wait-ready] [--serial-log FILE]
/// [--debug-shell] [--uefi]`: boots a copy of an image (the image itself stays pristine) and
/// streams its console to standard output.
public enum VMCommand {
    public static let usage = """
        usage: hcos vm IMAGE [--memory MB] [--disk-size SIZE] [--wait-ready] [--serial-log FILE]
                             [--debug-shell] [--uefi] [--report]
          --memory MB        guest memory in MiB (default 1024)
          --disk-size SIZE   grow the VM's copy of the disk to SIZE (e.g. 8G) before booting
          --wait-ready       exit 0 once the image reports HCOS-READY (after shutting it down)
          --serial-log FILE  append the console (serial0) to FILE
          --debug-shell      ask the image for a root shell on serial1 and print how to reach it
          --uefi             boot OVMF instead of SeaBIOS
          --report           with --wait-ready: print a readable boot report instead of the console
        HCOS_ACCEL=tcg|kvm overrides the accelerator choice.
        """

    public struct Options: Sendable, Equatable {
        public var image: String
        public var memoryMiB = 1024
        public var diskSize: UInt64?
        public var waitReady = false
        public var serialLog: String?
        public var debugShell = false
        public var uefi = false
        public var report = false
        public var readyTimeout = Duration.seconds(900)

        public init(image: String) {
            self.image = image
        }
    }

    public static func parse(_ arguments: [String]) throws -> Options {
        var image: String?
        var options = Options(image: "")
        var rest = arguments[...]
        func value(_ flag: String) throws -> String {
            guard let next = rest.popFirst() else {
                throw HCOSError(.invalidArgument, "\(flag) needs a value\n\(usage)")
            }
            return next
        }
        while let argument = rest.popFirst() {
            switch argument {
            case "--memory":
                let text = try value(argument)
                guard let memory = Int(text), memory >= 64 else {
                    throw HCOSError(.invalidArgument, "--memory takes MiB (at least 64), not '\(text)'")
                }
                options.memoryMiB = memory
            case "--disk-size":
                let text = try value(argument)
                guard let size = ByteSize.parse(text), size > 0 else {
                    throw HCOSError(.invalidArgument, "--disk-size takes a size such as 8G, not '\(text)'")
                }
                options.diskSize = size
            case "--serial-log": options.serialLog = try value(argument)
            case "--wait-ready": options.waitReady = true
            case "--debug-shell": options.debugShell = true
            case "--uefi": options.uefi = true
            case "--report": options.report = true
            default:
                guard !argument.hasPrefix("-"), image == nil else {
                    throw HCOSError(.invalidArgument, "unexpected argument '\(argument)'\n\(usage)")
                }
                image = argument
            }
        }
        guard let image else { throw HCOSError(.invalidArgument, "no image given\n\(usage)") }
        if options.report && !options.waitReady {
            throw HCOSError(.invalidArgument, "--report needs --wait-ready\n\(usage)")
        }
        options.image = image
        return options
    }

    /// Runs the command; returns the process exit status.
    public static func run(
        _ arguments: [String], logger: Logger, onReady: (@Sendable (String) -> Void)? = nil
    ) async throws -> Int32 {
        try await run(parse(arguments), logger: logger, onReady: onReady)
    }

    /// `onReady` receives the JSON of the HCOS-READY line (the node's boot report).
    public static func run(
        _ options: Options, logger: Logger, onReady: (@Sendable (String) -> Void)? = nil
    ) async throws -> Int32 {
        let disk = "\(options.image).vm-\(getpid()).raw"
        logger.info("preparing VM disk", [("image", options.image), ("disk", disk)])
        try DiskImage.prepareVMDisk(from: options.image, to: disk, size: options.diskSize)
        defer { unlink(disk) }

        var config = VMConfiguration(diskPath: disk)
        config.memoryMiB = options.memoryMiB
        config.uefi = options.uefi
        config.serialLogPath = options.serialLog
        config.debugShell = options.debugShell
        let interrupted = Interrupts()
        let echo: @Sendable ([UInt8]) -> Void = { bytes in
            _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        }
        let vm = try await VirtualMachine.start(
            config, logger: logger, attachShell: false, onConsoleOutput: options.report ? nil : echo)
        logger.info(
            "VM running", [("accel", vm.accelerator.rawValue), ("pid", String(vm.processIdentifier))])
        if options.debugShell {
            logger.info("debug shell on serial1: socat -,raw,echo=0 UNIX-CONNECT:\(vm.paths.shellSocket)")
        }
        if options.waitReady {
            do {
                let ready = try await vm.console.waitForMarker("HCOS-READY", timeout: options.readyTimeout)
                if let onReady { onReady(ready) } else { logger.info("ready", [("report", ready)]) }
                await vm.stop()
                return 0
            } catch {
                await vm.stop(timeout: .seconds(10))
                throw error
            }
        }
        while vm.isRunning && !interrupted.fired {
            try await Task.sleep(for: .milliseconds(100))
        }
        if interrupted.fired { logger.info("interrupted, shutting the VM down") }
        await vm.stop()
        return 0
    }
}

/// Turns SIGINT/SIGTERM into a flag, so the VM is shut down instead of left running.
private final class Interrupts {
    private final class Flag: Sendable {
        let value = Mutex(false)
    }

    private let flag = Flag()
    private let sources: [any DispatchSourceSignal]

    init() {
        let flag = self.flag
        sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { flag.value.withLock { $0 = true } }
            source.resume()
            return source
        }
    }

    deinit {
        for source in sources { source.cancel() }
    }

    var fired: Bool { flag.value.withLock { $0 } }
}
