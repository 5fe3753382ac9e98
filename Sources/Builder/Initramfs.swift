import Archive
import Foundation
import HCOSCore

/// Makes the initramfs: busybox (static, from the bootstrapped Debian tree), the hcos /init
/// glue, the modules that reach the disks, as a deterministic zstd-compressed newc cpio.
public struct InitramfsBuilder {
    /// busybox applets /init uses.
    static let applets = [
        "sh", "mount", "umount", "mkdir", "cat", "echo", "grep", "sed", "tr", "readlink", "dirname", "basename",
        "sleep", "modprobe", "od", "dd", "switch_root", "reboot", "head", "sync", "ls", "dmesg",
    ]

    let staging: String
    let initScript: String
    let logger: Logger

    public init(staging: String, initScript: String, logger: Logger) {
        self.staging = staging
        self.initScript = initScript
        self.logger = logger
    }

    public func build(
        modules: KernelModules, moduleNames: [String], rootFormat: String, work: String,
        output: String, epoch: Int
    ) throws {
        let fm = FileManager.default
        let tree = "\(work)/initramfs"
        if fm.fileExists(atPath: tree) { try fm.removeItem(atPath: tree) }
        for dir in ["bin", "etc/hcos", "proc", "sys", "dev", "run", "sysroot", "lib/modules"] {
            try fm.createDirectory(atPath: "\(tree)/\(dir)", withIntermediateDirectories: true)
        }
        let busybox = "\(staging)/usr/bin/busybox"
        guard fm.fileExists(atPath: busybox) else {
            throw HCOSError(.notFound, "busybox is missing from the bootstrapped tree (package busybox-static)")
        }
        try fm.copyItem(atPath: busybox, toPath: "\(tree)/bin/busybox")
        for applet in InitramfsBuilder.applets {
            try fm.createSymbolicLink(atPath: "\(tree)/bin/\(applet)", withDestinationPath: "busybox")
        }
        try fm.copyItem(atPath: initScript, toPath: "\(tree)/init")
        try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: "\(tree)/init")

        let selected = try modules.closure(of: moduleNames, listName: "initramfs-modules")
        try modules.install(selected, into: tree, moduleBase: "lib/modules")
        // Load order for /init: the named modules (modprobe pulls their dependencies).
        try (moduleNames.joined(separator: "\n") + "\n").write(
            toFile: "\(tree)/etc/hcos/modules", atomically: true, encoding: .utf8)
        try (rootFormat + "\n").write(toFile: "\(tree)/etc/hcos/rootfstype", atomically: true, encoding: .utf8)

        var writer = try CPIOWriter(mtime: epoch)
        try writer.appendTree(directory: tree)
        // The kernel opens /dev/console before running /init (no devtmpfs yet).
        try writer.append(CPIOEntry.characterDevice("dev/console", major: 5, minor: 1))
        let archive = try writer.finish()
        let cpio = "\(work)/initramfs.cpio"
        try Data(archive).write(to: URL(fileURLWithPath: cpio))
        try Command("zstd", ["-q", "-f", "-19", "-T1", cpio, "-o", output]).run()
        logger.info("initramfs: \(selected.count) modules, \(ByteSize.format(Build.fileSize(output)))")
    }
}
