import Bundle
import Digest
import Disk
import Foundation
import HCOSCore

/// What `hcos build` produced.
public struct BuildResult: Codable, Sendable {
    public var version: String
    public var kernelVersion: String
    public var rootFormat: String
    public var rootCompression: String
    public var rootImage: String
    public var rootDigest: String
    public var rootSize: UInt64
    public var rootTreeSize: UInt64
    public var kernel: String
    public var initramfs: String
    public var initramfsSize: UInt64
    public var diskImage: String
    public var diskSize: UInt64
    public var diskAllocated: UInt64
    public var qcow2Image: String?
    public var qcow2Size: UInt64?
    public var keptFiles: Int
    public var bundle: String?
    /// With a bundle: the OCI image layout holding it as an artifact (push with skopeo).
    public var ociLayout: String?
}

/// `hcos build`: Debian packages → trimmed root → read-only image → kernel + initramfs → ESP →
/// GPT disk image (raw and qcow2), each step printing its progress.
public struct Build {
    /// Default SOURCE_DATE_EPOCH (fixed mtimes) when the caller sets none: 2025-01-01.
    public static let defaultEpoch = 1_735_689_600

    public struct Options: Sendable {
        public var output: String
        public var cache: String
        public var agentBinary: String
        public var imageDirectory: String
        public var qcow2 = true
        /// Bootstrap again even when the staging tree of the same package set is cached.
        public var refresh = false
        /// Private key file (`hcos keygen`): sign an update bundle, and trust its public key in the image.
        public var signingKey: String?
        public init(output: String, cache: String, agentBinary: String, imageDirectory: String) {
            self.output = output
            self.cache = cache
            self.agentBinary = agentBinary
            self.imageDirectory = imageDirectory
        }
    }

    /// Where downloads are cached: $HCOS_CACHE, else $XDG_CACHE_HOME/hcos, else ~/.cache/hcos.
    public static func defaultCacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment)
        -> String
    {
        if let cache = environment["HCOS_CACHE"], !cache.isEmpty { return cache }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return "\(xdg)/hcos" }
        return "\(NSHomeDirectory())/.cache/hcos"
    }

    /// Tools a build needs, with the Debian package that provides each.
    static func requiredTools(_ config: BuildConfig) -> [(String, String)] {
        var tools = [
            ("mmdebstrap", "mmdebstrap"), ("tar", "tar"), ("depmod", "kmod"), ("zstd", "zstd"),
            ("mkfs.vfat", "dosfstools"), ("mmd", "mtools"), ("mcopy", "mtools"), ("mkfs.ext4", "e2fsprogs"),
            ("grub-mkimage", "grub-common"), ("qemu-img", "qemu-utils"), ("strip", "binutils"),
        ]
        tools.append(config.rootFormat == .squashfs ? ("mksquashfs", "squashfs-tools") : ("mkfs.erofs", "erofs-utils"))
        return tools
    }

    let config: BuildConfig
    let options: Options
    let logger: Logger

    public init(config: BuildConfig, options: Options, logger: Logger) {
        self.config = config
        self.options = options
        self.logger = logger
    }

    public static func fileSize(_ path: String) -> UInt64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.uint64Value ?? 0
    }

    static func allocatedSize(_ path: String) -> UInt64 {
        var info = stat()
        guard stat(path, &info) == 0 else { return 0 }
        return UInt64(info.st_blocks) * 512
    }

    func preflight() throws {
        let missing = Self.requiredTools(config).filter { !Command.exists($0.0) }
        if !missing.isEmpty {
            let list = missing.map { "\($0.0) (package \($0.1))" }.joined(separator: ", ")
            throw HCOSError(.missingTool, "missing tools: \(list); run 'make setup' or apt-get install them")
        }
        guard FileManager.default.isExecutableFile(atPath: options.agentBinary) else {
            throw HCOSError(
                .notFound,
                "os-agent binary not found at \(options.agentBinary) (build it: swift build -c release --static-swift-stdlib)"
            )
        }
        for (key, path) in [
            ("keep-list", config.keepList), ("modules", config.modules), ("initramfs-modules", config.initramfsModules),
            ("overlay", config.overlay),
        ] where !FileManager.default.fileExists(atPath: config.resolve(path)) {
            throw HCOSError(.invalidConfig, "\(key): \(config.resolve(path)) does not exist")
        }
        do {
            try FileManager.default.createDirectory(atPath: options.output, withIntermediateDirectories: true)
        } catch {
            throw HCOSError(
                .invalidArgument, "cannot create output directory \(options.output): \(error.localizedDescription)")
        }
        guard access(options.output, W_OK) == 0 else {
            throw HCOSError(.invalidArgument, "output directory \(options.output) is not writable")
        }
    }

    public func run() throws -> BuildResult {
        try preflight()
        // Parse the keep-list before spending minutes on the bootstrap.
        var keepList = try KeepList.parse(
            try String(contentsOfFile: config.resolve(config.keepList), encoding: .utf8), source: config.keepList)
        let signingKey = try options.signingKey.map { try BundleKeys.read($0, kind: "private") }
        let rootModules = try KernelModules.readList(config.resolve(config.modules))
        let initramfsModules = try KernelModules.readList(config.resolve(config.initramfsModules))

        let epoch = Int(ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"] ?? "") ?? Self.defaultEpoch
        let fm = FileManager.default
        let work = "\(options.output)/.work"
        try fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        let staging = "\(work)/staging"
        let tree = "\(work)/root"
        let name = "hcos-\(config.version)"
        let total = 8
        var step = 0
        func phase(_ text: String) {
            step += 1
            logger.info("[\(step)/\(total)] \(text)")
        }

        phase("bootstrap: Debian \(config.suite) packages with mmdebstrap (cached in \(options.cache))")
        // The bootstrapped tree is reused while the package set is the same (--refresh redoes it).
        let stamp = "\(work)/staging.stamp"
        let key =
            [config.suite, config.mirror, config.architecture, config.kernelPackage]
            .joined(separator: "|") + "|" + (config.packages + ["busybox-static"]).joined(separator: ",")
        if !options.refresh, fm.fileExists(atPath: staging),
            (try? String(contentsOfFile: stamp, encoding: .utf8)) == key
        {
            logger.info("  reusing the bootstrapped tree in \(staging) (same packages; --refresh to redo)")
        } else {
            try? fm.removeItem(atPath: stamp)
            try Bootstrap(config: config, cache: options.cache, logger: logger)
                .run(into: staging, extraPackages: ["busybox-static"])
            try key.write(toFile: stamp, atomically: true, encoding: .utf8)
        }

        phase("rootfs: applying the keep-list and resolving shared libraries")
        if fm.fileExists(atPath: tree) { try fm.removeItem(atPath: tree) }
        // os-agent joins the tree first, so that the libraries it links are kept like any other's.
        try FileManager.default.createDirectory(atPath: "\(staging)/usr/bin", withIntermediateDirectories: true)
        let stagedAgent = "\(staging)/usr/bin/os-agent"
        if fm.fileExists(atPath: stagedAgent) { try fm.removeItem(atPath: stagedAgent) }
        try fm.copyItem(atPath: options.agentBinary, toPath: stagedAgent)
        try Command("strip", ["--strip-unneeded", stagedAgent]).run()
        let tailor = Tailor(staging: staging, logger: logger)

        keepList.keep.append(KeepList.Entry(pattern: "/usr/bin/os-agent", line: 0))
        let kept = try tailor.select(keepList)
        try tailor.copy(kept, to: tree, work: work)
        let modules = try KernelModules(stagingRoot: staging)
        let moduleFiles = try modules.closure(of: rootModules, listName: config.modules)
        try modules.install(moduleFiles, into: tree)
        try installOverlay(into: tree, kernelVersion: modules.kernelVersion)
        if let signingKey {
            // Nodes of this image accept bundles signed by the same key.
            try FileManager.default.createDirectory(
                atPath: "\(tree)/usr/lib/hcos/keys", withIntermediateDirectories: true)
            try BundleKeys.write(
                try Ed25519.publicKey(fromPrivate: signingKey), kind: "public",
                to: "\(tree)/usr/lib/hcos/keys/build.pub",
                mode: 0o644)
        }
        let treeSize = try Self.treeSize(tree)
        logger.info("  kept \(kept.count) paths and \(moduleFiles.count) kernel modules, \(ByteSize.format(treeSize))")

        phase("compression: \(config.rootFormat.rawValue) root image (\(config.rootCompression))")
        let rootImage = "\(options.output)/\(name).rootfs.\(config.rootFormat.rawValue)"
        try RootImageBuilder(format: config.rootFormat, compression: config.rootCompression)
            .build(tree: tree, output: rootImage, epoch: epoch)
        let rootDigest = SHA256.hex(try SHA256.hash(file: rootImage))
        let rootSize = Self.fileSize(rootImage)
        logger.info("  \(ByteSize.format(rootSize)) sha256:\(rootDigest)")
        guard rootSize <= config.slotSize else {
            throw HCOSError(
                .noSpace,
                "the root image (\(ByteSize.format(rootSize))) is larger than slot-size (\(ByteSize.format(config.slotSize)))"
            )
        }

        phase("kernel and initramfs (\(modules.kernelVersion))")
        let kernel = "\(options.output)/\(name).vmlinuz"
        if fm.fileExists(atPath: kernel) { try fm.removeItem(atPath: kernel) }
        try fm.copyItem(atPath: "\(staging)/boot/vmlinuz-\(modules.kernelVersion)", toPath: kernel)
        let initramfs = "\(options.output)/\(name).initrd"
        try InitramfsBuilder(
            staging: staging, initScript: "\(options.imageDirectory)/initramfs/init", logger: logger
        ).build(
            modules: modules, moduleNames: initramfsModules, rootFormat: config.rootFormat.rawValue, work: work,
            output: initramfs, epoch: epoch)

        phase("boot partition: GRUB (BIOS and UEFI), grub.cfg, GRUB environment, slot A")
        let seed = "\(name)-\(rootDigest)"
        let esp = "\(work)/esp.img"
        let boot = BootPartitionBuilder(grubConfig: "\(options.imageDirectory)/grub/grub.cfg", logger: logger)
        try boot.build(
            output: esp, size: config.espSize, volumeID: Self.volumeID(seed: seed),
            slotA: .init(kernel: kernel, initramfs: initramfs, commandLine: config.cmdline), work: work)
        let coreImage = try boot.biosCoreImage(work: work)

        phase("PERSIST: ext4 with the /etc upper layer and /var")
        let persist = "\(work)/persist.img"
        try makePersist(persist, seed: seed, work: work)

        phase("disk image: GPT (BIOS-BOOT, EFI, ROOT-A, ROOT-B, PERSIST) written at offsets")
        let disk = "\(options.output)/\(name).img"
        _ = try DiskAssembler(logger: logger).assemble(
            output: disk, config: config, seed: seed, contents: ["EFI": esp, "ROOT-A": rootImage], persist: persist,
            bootImage: try BootPartitionBuilder.biosBootImage(), coreImage: coreImage)

        phase("qcow2 image")
        var qcow2: String?
        if options.qcow2 {
            let path = "\(options.output)/\(name).qcow2"
            try Command("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", "-c", disk, path]).run()
            qcow2 = path
        }

        var bundle: String?
        var ociLayout: String?
        if let signingKey {
            let path = "\(options.output)/\(name).bundle"
            logger.info("  signed update bundle \(path)")
            _ = try UpdateBundle.write(
                manifest: BundleManifest(
                    format: Int(UpdateBundle.format), version: config.version, architecture: config.architecture,
                    kernelVersion: modules.kernelVersion, rootFormat: config.rootFormat.rawValue,
                    minimumAgentVersion: "1.0.0", commandLine: config.cmdline, payloads: []),
                payloads: [("kernel", kernel), ("initramfs", initramfs), ("rootfs", rootImage)], privateKey: signingKey,
                to: path)
            bundle = path
            ociLayout = try BundleOCILayout.write(bundle: path, to: "\(options.output)/\(name).oci").directory
            logger.info("  OCI artifact layout \(ociLayout ?? "")")
        }

        let result = BuildResult(
            version: config.version, kernelVersion: modules.kernelVersion, rootFormat: config.rootFormat.rawValue,
            rootCompression: config.rootCompression, rootImage: rootImage, rootDigest: rootDigest, rootSize: rootSize,
            rootTreeSize: treeSize, kernel: kernel, initramfs: initramfs, initramfsSize: Self.fileSize(initramfs),
            diskImage: disk, diskSize: config.diskSize, diskAllocated: Self.allocatedSize(disk), qcow2Image: qcow2,
            qcow2Size: qcow2.map(Self.fileSize), keptFiles: kept.count, bundle: bundle,
            ociLayout: ociLayout)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(result).write(to: URL(fileURLWithPath: "\(options.output)/\(name).build.json"))
        return result
    }

    /// The overlay directory of the image, our own files, mount points and os-release.
    func installOverlay(into tree: String, kernelVersion: String) throws {
        let fm = FileManager.default
        try Command("cp", ["-a", "--no-preserve=ownership", config.resolve(config.overlay) + "/.", tree]).run()
        for dir in ["persist", "etc", "var", "tmp", "run", "proc", "sys", "dev", "root", "mnt", "usr/lib/hcos"] {
            try fm.createDirectory(atPath: "\(tree)/\(dir)", withIntermediateDirectories: true)
        }
        let osRelease = """
            NAME="hcos"
            PRETTY_NAME="hcos \(config.version)"
            ID=hcos
            ID_LIKE=debian
            VERSION="\(config.version)"
            VERSION_ID="\(config.version)"
            HCOS_KERNEL="\(kernelVersion)"
            HCOS_DEBIAN_SUITE="\(config.suite)"
            HOME_URL="https://hcos.io/"

            """
        try osRelease.write(toFile: "\(tree)/usr/lib/os-release", atomically: false, encoding: .utf8)
        let link = "\(tree)/etc/os-release"
        if (try? fm.destinationOfSymbolicLink(atPath: link)) != nil || fm.fileExists(atPath: link) {
            try fm.removeItem(atPath: link)
        }
        try fm.createSymbolicLink(atPath: link, withDestinationPath: "../usr/lib/os-release")
    }

    func makePersist(_ output: String, seed: String, work: String) throws {
        let fm = FileManager.default
        let skeleton = "\(work)/persist"
        if fm.fileExists(atPath: skeleton) { try fm.removeItem(atPath: skeleton) }
        for dir in ["etc/upper", "etc/work", "var", ".hcos"] {
            try fm.createDirectory(atPath: "\(skeleton)/\(dir)", withIntermediateDirectories: true)
        }
        if fm.fileExists(atPath: output) { try fm.removeItem(atPath: output) }
        // 4 KiB blocks even on a small filesystem: it grows online to the whole disk at first boot.
        try Command(
            "mkfs.ext4",
            [
                "-q", "-F", "-L", "PERSIST", "-b", "4096", "-U",
                GUID.derived(from: seed + "-persist").description.lowercased(),
                "-E", "root_owner=0:0", "-d", skeleton, output, "\(config.persistSize / 1024)k",
            ]
        ).run()
    }

    static func volumeID(seed: String) -> String {
        String(GUID.derived(from: seed + "-esp").description.replacingOccurrences(of: "-", with: "").prefix(8))
    }

    static func treeSize(_ path: String) throws -> UInt64 {
        let output = try Command("du", ["-s", "-B1", "--apparent-size", path]).run().output
        return UInt64(output.split(separator: "\t").first ?? "0") ?? 0
    }
}
