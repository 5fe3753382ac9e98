import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// The `/etc` overlay's upper layers on PERSIST (`/persist/etc`). `active` names the committed
/// upper directory ("upper" when the file is absent). A trial boot's initramfs copies the active
/// layer to a fresh `trial-XXXXXXXX`, names it in `trial` and mounts it, so nothing a trial does
/// to `/etc` reaches the layer the old slot uses; committing the trial names that copy in
/// `active` (one atomic rename). Normal boots remove layers of finished trials.
/// Files the user never changed are not in any upper layer, so they follow the new image; files
/// the user changed stay (DESIGN §2, the three-way rule).
public struct EtcLayers: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public var activeFile: String { "\(directory)/active" }

    public func active() -> String {
        let name = ((try? FileSystem.readString(activeFile)) ?? "").trimmed()
        return name.isEmpty ? "upper" : name
    }

    /// Makes the trial's layer the committed one, if this boot mounted one.
    public func commitTrial() throws {
        let trial = ((try? FileSystem.readString("\(directory)/trial")) ?? "").trimmed()
        guard trial.hasPrefix("trial-"), !trial.contains("/"), FileSystem.isDirectory("\(directory)/\(trial)") else {
            return
        }
        // The copy the initramfs made must be on disk before `active` points at it.
        sync()
        try FileSystem.writeDurably(trial + "\n", to: activeFile)
    }
}

/// The boot watchdog a trial boot's initramfs arms (softdog): if the trial hangs before the
/// agent decides, the kernel reboots by itself. Opening the device, writing the magic 'V' and
/// closing stops it.
public struct Watchdog: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// Restarts the countdown (the trial is still making progress); the watchdog keeps running.
    public func pet() {
        guard FileSystem.exists(path) else { return }
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        var byte: UInt8 = UInt8(ascii: "1")
        _ = write(fd, &byte, 1)
        close(fd)
    }

    public func disarm(logger: Logger) {
        guard FileSystem.exists(path) else { return }
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            logger.warning("cannot open \(path) to stop the trial watchdog: \(String(cString: strerror(errno)))")
            return
        }
        var magic: UInt8 = UInt8(ascii: "V")
        _ = write(fd, &magic, 1)
        close(fd)
        logger.info("trial watchdog stopped")
    }
}
