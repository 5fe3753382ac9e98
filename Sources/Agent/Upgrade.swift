import Bundle
import Digest
import FoundationEssentials
import GrubEnv
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// One upgrade, step by step (DESIGN §3). Everything that can refuse the bundle (signature,
/// digests, version, architecture, space) runs before the first byte of the boot configuration
/// or of the target slot changes.
struct Upgrade {
    let core: AgentCore
    let operation: AgentOperation
    let request: UpgradeRequest

    var target: Slot { core.bootedSlot.other }

    func run() throws {
        // 1. fetch
        try core.enter(.downloading, message: operation.source)
        try FileSystem.makeDirectories(core.paths.downloads, mode: 0o700)
        let local = try core.actions.fetch(operation.source, core.paths.downloads, core.snapshot().settings) {
            progress in
            core.setProgress(progress)
        }

        // 2. verify, before anything is touched; a downloaded bundle that fails is deleted, so
        // a retry fetches it again instead of resuming a bad file
        try core.enter(.verifying, message: local)
        let downloaded = local.hasPrefix(core.paths.downloads + "/")
        let bundle: FileDescriptor
        let head: UpdateBundle.Head
        let payloads: (root: BundleManifest.Payload, kernel: BundleManifest.Payload, initramfs: BundleManifest.Payload)
        do {
            (bundle, head, payloads) = try verify(local)
        } catch {
            if downloaded { unlink(local) }
            throw error
        }
        let manifest = head.manifest
        let (root, kernel, initramfs) = payloads
        let slot = core.disk.root(target.rawValue)

        // 3. write: the slot is unbootable (agent state and GRUB) before its first byte changes
        try core.mutate { state in
            state[slot: target.rawValue] = SlotRecord(
                state: .writing, version: manifest.version, rootDigest: root.sha256, rootSize: root.size,
                kernelVersion: manifest.kernelVersion)
            if state.trial?.slot == target.rawValue { state.trial = nil }
        }
        try core.boot.markUnbootable(target)
        let name = "slot \(target.rawValue)"
        let progress: @Sendable (UInt64) -> Void = { done in core.setProgress(Progress(done: done, total: root.size)) }
        try core.enter(
            .writing, message: "\(name): checking whether it already holds this root image",
            progress: Progress(done: 0, total: root.size))
        let writer = SlotWriter(target: slot)
        if writer.holds(
            digest: root.sha256, size: root.size, source: bundle, offset: head.payloadStart + root.offset,
            progress: progress)
        {
            core.setStep("\(name) already holds sha256:\(root.sha256); not rewriting it", progress: nil)
        } else {
            core.setStep("\(name): writing the root image", progress: Progress(done: 0, total: root.size))
            try writer.copy(
                from: bundle, offset: head.payloadStart + root.offset, size: root.size, digest: root.sha256,
                progress: progress)
            core.setStep("\(name): reading it back from the disk", progress: Progress(done: 0, total: root.size))
            try writer.verify(size: root.size, digest: root.sha256, progress: progress)
        }
        core.setStep("\(name): kernel and initramfs into the EFI partition", progress: nil)
        try installBootFiles(bundle: bundle, head: head, kernel: kernel, initramfs: initramfs)
        try core.mutate { $0[slot: target.rawValue].state = .written }
        try core.enter(.writtenVerified, message: "sha256:\(root.sha256)")

        // 4. arm: tries = N, first in the boot order
        let tries = core.snapshot().settings.tries
        try core.boot.arm(target, tries: tries)
        try core.mutate { state in
            state[slot: target.rawValue].state = .staged
            state.trial = AgentState.Trial(
                slot: target.rawValue, version: manifest.version, operation: operation.id, armedAt: Timestamp.now())
        }
        try core.enter(.staged, message: "slot \(target.rawValue) armed with \(tries) boot attempt(s)")
        if downloaded { unlink(local) }
        if request.reboot == true {
            try core.enter(.rebooting)
            core.actions.reboot("upgrade to \(manifest.version)")
        }
    }

    /// Everything that can refuse the bundle, in order: signature, version, payloads, space, digests.
    func verify(_ local: String) throws -> (
        FileDescriptor, UpdateBundle.Head,
        (root: BundleManifest.Payload, kernel: BundleManifest.Payload, initramfs: BundleManifest.Payload)
    ) {
        let bundle = try FileDescriptor(path: local, flags: O_RDONLY)
        let head = try UpdateBundle.readHead(bundle, trustedKeys: try trustedKeys())
        let manifest = head.manifest
        try core.mutate { $0.operation?.version = manifest.version }
        try checkVersion(manifest)
        guard let root = manifest.payload("rootfs"), let kernel = manifest.payload("kernel"),
            let initramfs = manifest.payload("initramfs")
        else {
            throw AgentError(422, "bad-bundle", "the bundle lacks a kernel, initramfs or rootfs payload")
        }
        let slot = core.disk.root(target.rawValue)
        guard root.size <= slot.size else {
            throw AgentError(
                507, "no-space",
                "the root image (\(ByteSize.format(root.size))) does not fit slot \(target.rawValue) (\(ByteSize.format(slot.size)))"
            )
        }
        try checkPersistSpace(need: kernel.size + initramfs.size + (1 << 20))
        try UpdateBundle.verifyPayloads(bundle, head: head)
        return (bundle, head, (root, kernel, initramfs))
    }

    func trustedKeys() throws -> [[UInt8]] {
        var keys: [[UInt8]] = []
        for directory in core.paths.keyDirectories {
            for name in (try? FileManagerLite.list(directory)) ?? [] where name.hasSuffix(".pub") {
                keys.append(try BundleKeys.read("\(directory)/\(name)", kind: "public"))
            }
        }
        guard !keys.isEmpty else {
            throw AgentError(
                422, "no-keys",
                "this image trusts no signing key (\(core.paths.keyDirectories.joined(separator: ", ")) is empty: built without --sign)"
            )
        }
        return keys
    }

    func checkVersion(_ manifest: BundleManifest) throws {
        if let expected = request.expectVersion, expected != manifest.version {
            throw AgentError(
                422, "version-mismatch", "the bundle is version \(manifest.version), but \(expected) was expected")
        }
        let architecture = Self.machineArchitecture()
        guard manifest.architecture == architecture else {
            throw AgentError(
                422, "wrong-architecture",
                "the bundle is for \(manifest.architecture); this node is \(architecture)")
        }
        if Self.compareVersions(manifest.minimumAgentVersion, core.runningVersion) > 0 {
            throw AgentError(
                422, "agent-too-old",
                "the bundle needs os-agent \(manifest.minimumAgentVersion) or later; this node runs \(core.runningVersion)"
            )
        }
        let state = core.snapshot()
        if request.force != true, let reason = state.failedVersions[manifest.version] {
            throw AgentError(
                409, "failed-version",
                "version \(manifest.version) failed on this node before (\(reason)); use --force to install it again")
        }
        let running = state[slot: core.bootedSlot.rawValue]
        if manifest.version == core.runningVersion,
            running.rootDigest == nil || running.rootDigest == manifest.payload("rootfs")?.sha256
        {
            throw AgentError(
                409, "already-running",
                "version \(manifest.version) is already running (slot \(core.bootedSlot.rawValue))")
        }
    }

    func checkPersistSpace(need: UInt64) throws {
        guard let free = try? FileSystem.availableSpace(core.paths.downloads) else { return }
        guard free >= need else {
            throw AgentError(
                507, "no-space",
                "PERSIST has \(ByteSize.format(free)) free; the upgrade needs \(ByteSize.format(need)) there")
        }
    }

    /// Kernel, initramfs and slot.cfg into the slot's EFI directory, each verified against the manifest.
    func installBootFiles(
        bundle: FileDescriptor, head: UpdateBundle.Head, kernel: BundleManifest.Payload,
        initramfs: BundleManifest.Payload
    ) throws {
        let scratch = "\(core.paths.downloads)/boot-\(target.rawValue)"
        try FileSystem.makeDirectories(scratch, mode: 0o700)
        defer {
            for name in ["vmlinuz", "initrd", "slot.cfg"] { unlink("\(scratch)/\(name)") }
            rmdir(scratch)
        }
        for (payload, name) in [(kernel, "vmlinuz"), (initramfs, "initrd")] {
            try extract(payload, from: bundle, start: head.payloadStart, to: "\(scratch)/\(name)")
        }
        let files = BootFiles(esp: core.disk.esp)
        var commandLine = head.manifest.commandLine
        if commandLine == nil,
            let current = try files.read(slot: core.bootedSlot.rawValue, name: "slot.cfg", scratch: scratch)
        {
            try FileSystem.writeDurably(current, to: "\(scratch)/slot.cfg", mode: 0o600)
        } else {
            commandLine = commandLine ?? ""
        }
        if let commandLine {
            try FileSystem.writeDurably(
                BootFiles.slotConfig(commandLine: commandLine), to: "\(scratch)/slot.cfg", mode: 0o600)
        }
        try files.install(
            slot: target.rawValue,
            files: [
                ("vmlinuz", "\(scratch)/vmlinuz"), ("initrd", "\(scratch)/initrd"), ("slot.cfg", "\(scratch)/slot.cfg"),
            ])
    }

    /// Copies a payload out of the bundle in 1 MiB chunks, checking its digest on the way.
    func extract(_ payload: BundleManifest.Payload, from bundle: FileDescriptor, start: UInt64, to path: String) throws
    {
        let output = try FileDescriptor(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        var hash = try SHA256()
        var done: UInt64 = 0
        while done < payload.size {
            let count = Int(min(UInt64(1 << 20), payload.size - done))
            let chunk = try bundle.read(at: start + payload.offset + done, count: count)
            guard chunk.count == count else {
                throw AgentError(422, "bad-bundle", "\(bundle.path) is truncated inside payload \(payload.name)")
            }
            try hash.update(chunk)
            try output.write(chunk, at: done)
            done += UInt64(count)
        }
        guard try hash.finalizeHex() == payload.sha256 else {
            throw AgentError(422, "bad-bundle", "payload \(payload.name) does not match its signed digest")
        }
        try output.sync()
    }

    static func machineArchitecture() -> String {
        var name = utsname()
        uname(&name)
        let machine = withUnsafePointer(to: name.machine) {
            $0.withMemoryRebound(to: CChar.self, capacity: 65) { String(cString: $0) }
        }
        switch machine {
        case "x86_64": return "amd64"
        case "aarch64": return "arm64"
        default: return machine
        }
    }

    /// Numeric dotted comparison ("1.10.0" > "1.9.2"); non-numeric parts compare as text.
    static func compareVersions(_ a: String, _ b: String) -> Int {
        let left = a.split(separator: ".")
        let right = b.split(separator: ".")
        for index in 0..<max(left.count, right.count) {
            let x = index < left.count ? String(left[index]) : "0"
            let y = index < right.count ? String(right[index]) : "0"
            if let i = Int(x), let j = Int(y) {
                if i != j { return i < j ? -1 : 1 }
            } else if x != y {
                return x < y ? -1 : 1
            }
        }
        return 0
    }
}
