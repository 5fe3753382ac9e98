import Builder
import Disk
import Foundation
import HCOSCore

/// What the standard image build produced (DIR/standard/standard.json).
struct StandardBuildResult: Codable {
    /// `StandardImage.recipe` of the build; a cached image of another recipe is built again.
    var recipe: Int
    var variant: String
    var packages: [String]
    var installedPackages: Int
    var kernelVersion: String
    var initramfsSize: UInt64
    var commandLine: String
    var rootTreeSize: UInt64
    /// The ext4 ROOT partition image (as large as the partition; sparse).
    var rootImageAllocated: UInt64
    /// That ext4 image compressed with `zstd -19` (the same zstd level hcos's squashfs uses).
    var rootCompressed: String
    var rootCompressedSize: UInt64
    var diskImage: String
    var diskSize: UInt64
    var diskAllocated: UInt64
    var qcow2Image: String
    var qcow2Size: UInt64
}

/// The "standard OS" baseline: Debian bookworm as a general-purpose cloud image is made. The
/// default (debootstrap, Priority: important) package set plus systemd, openssh-server,
/// cloud-init, apt, containerd and runc, the same kernel package as hcos with Debian's own
/// initramfs (initramfs-tools builds /boot/initrd.img-* during the install), on one read-write
/// ext4 root; GRUB on a FAT ESP boots /vmlinuz and /initrd.img from that root.
struct StandardImage {
    /// Raised whenever what goes into the image changes, so a cached image is not reused.
    static let recipe = 2
    static let variant = "debootstrap"
    static let packages = [
        "systemd", "systemd-sysv", "udev", "openssh-server", "cloud-init", "apt", "containerd", "runc", "kmod",
        "initramfs-tools",
    ]
    /// cloud-init keeps its default configuration except the datasource search: with no cloud
    /// metadata service in qemu, the default list would wait minutes on network datasources.
    static let cloudInitConfig = """
        # hcos-bench: no cloud metadata service in this VM; try a local seed, then run without one.
        datasource_list: [ NoCloud, None ]

        """
    /// Units taken verbatim from the hcos image's overlay, so both images measure the same way:
    /// the HCOS-READY report and the root shell on serial1 (with `hcos.debug-shell`) the
    /// benchmark reads the settled report through.
    static let sharedUnits = ["hcos-ready.service", "hcos-debug-shell.service"]

    let config: BuildConfig
    let options: BenchOptions
    let agent: String
    /// The hcos image's overlay directory (image/overlay).
    let overlay: String
    let logger: Logger

    var directory: String { "\(options.output)/standard" }
    var summaryPath: String { "\(directory)/standard.json" }

    /// The kernel command line: hcos's console and quiet settings, Debian's root= and rw, and
    /// the debug-shell switch the benchmark also sets on hcos (through its GRUB environment).
    var commandLine: String { "root=PARTLABEL=ROOT rw \(config.cmdline) hcos.debug-shell" }

    func ensure() throws -> StandardBuildResult {
        if !options.rebuild, let data = FileManager.default.contents(atPath: summaryPath),
            let result = try? JSONDecoder().decode(StandardBuildResult.self, from: data),
            result.recipe == Self.recipe, FileManager.default.fileExists(atPath: result.diskImage)
        {
            logger.info("standard: reusing \(result.diskImage) (--rebuild to build it again)")
            return result
        }
        return try build()
    }

    func build() throws -> StandardBuildResult {
        let fm = FileManager.default
        let work = "\(directory)/.work"
        let staging = "\(work)/root"
        try fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        let log = logger.with([("image", "standard")])

        var bootstrapConfig = config
        bootstrapConfig.packages = Self.packages
        let stamp = "\(work)/root.stamp"
        let key = ([Self.variant, config.suite, config.mirror, config.kernelPackage] + Self.packages)
            .joined(separator: ",")
        if !options.rebuild, fm.fileExists(atPath: staging),
            (try? String(contentsOfFile: stamp, encoding: .utf8)) == key
        {
            log.info("[1/6] bootstrap: reusing \(staging)")
        } else {
            log.info(
                "[1/6] bootstrap: Debian \(config.suite) variant=\(Self.variant) with \(Self.packages.count) packages")
            try? fm.removeItem(atPath: stamp)
            try Bootstrap(config: bootstrapConfig, cache: options.cache, logger: log)
                .run(into: staging, variant: Self.variant, extraPackages: [])
            try key.write(toFile: stamp, atomically: true, encoding: .utf8)
        }

        log.info("[2/6] root: fstab, cloud-init datasources, os-agent and hcos-ready.service")
        let kernelVersion = try Self.kernelVersion(staging)
        let initramfs = "\(staging)/boot/initrd.img-\(kernelVersion)"
        guard fm.fileExists(atPath: initramfs) else {
            throw HCOSError(.notFound, "initramfs-tools did not generate \(initramfs) during the bootstrap")
        }
        try customize(staging)
        let treeSize = try Self.treeSize(staging)
        let installed = try Self.installedPackages(staging)
        log.info("  \(installed) packages, \(ByteSize.format(treeSize)), kernel \(kernelVersion)")

        log.info("[3/6] ROOT: ext4 (read-write) from the tree with mkfs.ext4 -d")
        let seed = "hcos-bench-standard"
        let disk = BaselineDisk(diskSize: config.diskSize, espSize: config.espSize, logger: log)
        let table = try disk.plan(seed: seed)
        let rootPartition = try table.partition(named: "ROOT")
        let rootUUID = GUID.derived(from: seed + "-root").description.lowercased()
        let rootImage = "\(work)/root.ext4"
        if fm.fileExists(atPath: rootImage) { try fm.removeItem(atPath: rootImage) }
        try Command(
            "mkfs.ext4",
            [
                "-q", "-F", "-L", "ROOT", "-U", rootUUID, "-E", "root_owner=0:0", "-d", staging, rootImage,
                "\(rootPartition.sectorCount * 512 / 1024)k",
            ]
        ).run()

        log.info("[4/6] disk: GPT (BIOS-BOOT, EFI with GRUB, ROOT) written at offsets")
        let esp = "\(work)/esp.img"
        try disk.makeESP(
            output: esp, grubConfig: grubConfig(rootUUID: rootUUID),
            volumeID: String(GUID.derived(from: seed + "-esp").description.prefix(8)), work: work)
        let image = "\(directory)/standard.img"
        try disk.assemble(
            output: image, table: table, esp: esp, root: rootImage, coreImage: try disk.biosCoreImage(work: work))

        log.info("[5/6] qcow2 image (qemu-img convert -c)")
        let qcow2 = "\(directory)/standard.qcow2"
        if fm.fileExists(atPath: qcow2) { try fm.removeItem(atPath: qcow2) }
        try Command("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", "-c", image, qcow2]).run()

        log.info("[6/6] compressed root: zstd -19 of the ext4 ROOT image")
        let compressed = "\(directory)/root.ext4.zst"
        try Command("zstd", ["-q", "-f", "-19", "-T0", rootImage, "-o", compressed]).run()
        let rootAllocated = BaselineDisk.allocatedSize(rootImage)
        try fm.removeItem(atPath: rootImage)

        let result = StandardBuildResult(
            recipe: Self.recipe, variant: Self.variant, packages: Self.packages, installedPackages: installed,
            kernelVersion: kernelVersion, initramfsSize: Build.fileSize(initramfs), commandLine: commandLine,
            rootTreeSize: treeSize, rootImageAllocated: rootAllocated, rootCompressed: compressed,
            rootCompressedSize: Build.fileSize(compressed), diskImage: image, diskSize: config.diskSize,
            diskAllocated: BaselineDisk.allocatedSize(image), qcow2Image: qcow2, qcow2Size: Build.fileSize(qcow2))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(result).write(to: URL(fileURLWithPath: summaryPath))
        return result
    }

    /// Debian's grub.cfg shape (grub-mkconfig finds the root by file system UUID), with hcos's
    /// serial console settings and no menu delay.
    func grubConfig(rootUUID: String) -> String {
        """
        set timeout=0
        serial --unit=0 --speed=115200
        terminal_input serial console
        terminal_output serial
        search --no-floppy --fs-uuid --set=root \(rootUUID)
        linux /vmlinuz \(commandLine)
        initrd /initrd.img
        boot

        """
    }

    /// What the image needs beyond the packages, as a cloud image build adds it. Idempotent: the
    /// bootstrapped tree is reused between runs.
    func customize(_ root: String) throws {
        func write(_ text: String, _ path: String, mode: Int = 0o644) throws {
            let full = root + path
            try FileManager.default.createDirectory(
                atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if FileManager.default.fileExists(atPath: full) { try FileManager.default.removeItem(atPath: full) }
            try text.write(toFile: full, atomically: false, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: full)
        }
        func link(_ path: String, to target: String) throws {
            let full = root + path
            try FileManager.default.createDirectory(
                atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if (try? FileManager.default.destinationOfSymbolicLink(atPath: full)) != nil
                || FileManager.default.fileExists(atPath: full)
            {
                try FileManager.default.removeItem(atPath: full)
            }
            try FileManager.default.createSymbolicLink(atPath: full, withDestinationPath: target)
        }
        try write("PARTLABEL=ROOT / ext4 rw,discard,errors=remount-ro 0 1\n", "/etc/fstab")
        try write("debian\n", "/etc/hostname")
        try write(
            "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\t\tlocalhost ip6-localhost ip6-loopback\n", "/etc/hosts")
        // Each instance gets its own machine ID at first boot (systemd writes it back to /etc).
        try write("", "/etc/machine-id", mode: 0o444)
        // As on Debian's cloud images: the locale is set, so systemd-firstboot has nothing to ask.
        try write("LANG=C.UTF-8\n", "/etc/default/locale")
        try link("/etc/locale.conf", to: "default/locale")
        try write(Self.cloudInitConfig, "/etc/cloud/cloud.cfg.d/99-hcos-bench.cfg")
        // The measuring unit, exactly as on hcos (os-agent stripped as hcos build strips it).
        try FileManager.default.createDirectory(atPath: "\(root)/usr/local/bin", withIntermediateDirectories: true)
        let agentPath = "\(root)/usr/local/bin/os-agent"
        if FileManager.default.fileExists(atPath: agentPath) { try FileManager.default.removeItem(atPath: agentPath) }
        try FileManager.default.copyItem(atPath: agent, toPath: agentPath)
        try Command("strip", ["--strip-unneeded", agentPath]).run()
        for unit in Self.sharedUnits {
            let source = "\(overlay)/usr/lib/systemd/system/\(unit)"
            guard let text = try? String(contentsOfFile: source, encoding: .utf8) else {
                throw HCOSError(.notFound, "cannot read \(source)")
            }
            // hcos keeps os-agent in /usr/bin; here it is a local addition.
            try write(
                text.replacingOccurrences(of: "/usr/bin/os-agent", with: "/usr/local/bin/os-agent"),
                "/etc/systemd/system/\(unit)")
            try link("/etc/systemd/system/multi-user.target.wants/\(unit)", to: "../\(unit)")
        }
    }

    static func kernelVersion(_ root: String) throws -> String {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "\(root)/boot")) ?? []
        let versions = entries.filter { $0.hasPrefix("vmlinuz-") }.map { String($0.dropFirst("vmlinuz-".count)) }
        guard versions.count == 1, let version = versions.first else {
            throw HCOSError(.notFound, "expected one kernel in \(root)/boot, found: \(versions)")
        }
        return version
    }

    static func installedPackages(_ root: String) throws -> Int {
        let output = try Command(
            "dpkg-query", ["--admindir=\(root)/var/lib/dpkg", "-W", "-f", "${db:Status-Abbrev}\\n"]
        ).run().output
        return output.split(separator: "\n").filter { $0.hasPrefix("ii") }.count
    }

    static func treeSize(_ path: String) throws -> UInt64 {
        let output = try Command("du", ["-s", "-B1", "--apparent-size", path]).run().output
        return UInt64(output.split(separator: "\t").first ?? "0") ?? 0
    }
}
