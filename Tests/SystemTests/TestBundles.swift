import Bundle
import Foundation
import HCOSCore
import Testing

/// Update bundles for the upgrade tests, signed with the test key: the v2 bundle `make test`
/// built, and deliberately broken variants of it (all labelled 2.0.0).
enum TestBundles {
    static let version = "2.0.0"

    /// The v2 build's payload files (kernel, initramfs, root image) next to the test image.
    static func v2Payloads() throws -> (kernel: String, initramfs: String, rootfs: String, commandLine: String) {
        let directory = FileSystem.parent(of: try SystemSupport.requireImage())
        let base = "\(directory)/hcos-\(version)"
        guard FileManager.default.fileExists(atPath: "\(base).rootfs.squashfs") else {
            Issue.record("\(base).rootfs.squashfs is missing: 'make test' builds v2 next to the test image")
            throw HCOSError(.notFound, "no v2 build")
        }
        let head = try UpdateBundle.readManifestUnverified(try FileDescriptor(path: "\(base).bundle", flags: O_RDONLY))
        return ("\(base).vmlinuz", "\(base).initrd", "\(base).rootfs.squashfs", head.commandLine ?? "")
    }

    static func write(
        name: String, in directory: String, kernel: String, initramfs: String, rootfs: String, commandLine: String
    ) throws -> String {
        let path = "\(directory)/\(name).bundle"
        _ = try UpdateBundle.write(
            manifest: BundleManifest(
                format: 1, version: version, architecture: "amd64", kernelVersion: "test", rootFormat: "squashfs",
                minimumAgentVersion: "1.0.0", commandLine: commandLine),
            payloads: [("kernel", kernel), ("initramfs", initramfs), ("rootfs", rootfs)],
            privateKey: try AgentEngineTests.privateKey(), to: path)
        return path
    }

    /// A kernel that panics at boot: with no initramfs init it finds no root device.
    static func panickingKernel(in directory: String) throws -> String {
        let v2 = try v2Payloads()
        return try write(
            name: "bad-kernel", in: directory, kernel: v2.kernel, initramfs: v2.initramfs, rootfs: v2.rootfs,
            commandLine: v2.commandLine + " rdinit=/hcos-no-such-init")
    }

    /// A root whose init exits at once (busybox started as "systemd" knows no such applet), so
    /// PID 1 dies and the kernel panics.
    static func failingInit(in directory: String) throws -> String {
        let v2 = try v2Payloads()
        let tree = "\(directory)/bad-init-root"
        for dir in ["usr/lib/systemd", "etc", "var", "persist", "dev", "proc", "sys", "run", "tmp"] {
            try FileManager.default.createDirectory(atPath: "\(tree)/\(dir)", withIntermediateDirectories: true)
        }
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: "\(tree)/usr/lib/systemd/systemd")
        let image = "\(directory)/bad-init.squashfs"
        try Command("mksquashfs", [tree, image, "-comp", "zstd", "-noappend", "-quiet", "-all-root"]).run()
        return try write(
            name: "bad-init", in: directory, kernel: v2.kernel, initramfs: v2.initramfs, rootfs: image,
            commandLine: v2.commandLine)
    }

    /// v2's root plus a health hook that always fails: it boots, and never passes the gate.
    static func failingHealth(in directory: String) throws -> String {
        let v2 = try v2Payloads()
        let tree = "\(directory)/bad-health-root"
        try Command("unsquashfs", ["-quiet", "-no-progress", "-d", tree, v2.rootfs]).run()
        let hooks = "\(tree)/usr/lib/hcos/health.d"
        try FileManager.default.createDirectory(atPath: hooks, withIntermediateDirectories: true)
        try "#!/bin/sh\necho 'this image fails its health check on purpose'\nexit 1\n".write(
            toFile: "\(hooks)/90-always-fails", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: "\(hooks)/90-always-fails")
        let image = "\(directory)/bad-health.squashfs"
        try Command(
            "mksquashfs",
            [tree, image, "-comp", "zstd", "-Xcompression-level", "3", "-b", "1M", "-noappend", "-quiet"]
        ).run()
        try? FileManager.default.removeItem(atPath: tree)
        return try write(
            name: "bad-health", in: directory, kernel: v2.kernel, initramfs: v2.initramfs, rootfs: image,
            commandLine: v2.commandLine)
    }
}
