import Agent
import Bundle
import Digest
import Disk
import Foundation
import GrubEnv
import HCOSCore
import Synchronization
import Testing
import VM

/// The upgrade engine on a copy of the real test image (no VM): the slot bytes, the EFI files
/// and the GRUB environment it writes are read back from the disk file.
@Suite(.serialized)
struct AgentEngineTests {
    /// A node on a disk image file: its paths in a temporary directory, its boot facts chosen
    /// by the test, reboots and health results recorded.
    final class Node: Sendable {
        let directory: String
        let disk: String
        let reboots = Mutex<[String]>([])
        let healthPasses = Mutex(true)
        let logLines = Mutex<[String]>([])

        init() throws {
            directory = try SystemSupport.temporaryDirectory()
            disk = try SystemSupport.disk(in: directory)
            for dir in ["keys", "persist/etc/upper", "downloads"] {
                try FileManager.default.createDirectory(
                    atPath: "\(directory)/\(dir)", withIntermediateDirectories: true)
            }
            try BundleKeys.write(
                try Ed25519.publicKey(fromPrivate: try AgentEngineTests.privateKey()), kind: "public",
                to: "\(directory)/keys/build.pub", mode: 0o644)
        }

        /// An agent of this node booted from `slot`; `nodeDisk` replaces the partitions it
        /// finds in the disk image (a slot on a failing device).
        func core(
            slot: String, trial: Bool = false, version: String = "1.0.0", nodeDisk: NodeDisk? = nil
        ) throws -> AgentCore {
            try "hcos.slot=\(slot) hcos.trial=\(trial ? 1 : 0) quiet\n".write(
                toFile: "\(directory)/cmdline", atomically: true, encoding: .utf8)
            try "ID=hcos\nVERSION_ID=\"\(version)\"\n".write(
                toFile: "\(directory)/os-release", atomically: true, encoding: .utf8)
            var paths = AgentPaths()
            paths.stateFile = "\(directory)/persist/.hcos/agent/state.json"
            paths.downloads = "\(directory)/downloads"
            paths.etcLayers = "\(directory)/persist/etc"
            paths.keyDirectories = ["\(directory)/keys"]
            paths.healthDirectories = []
            paths.osRelease = "\(directory)/os-release"
            paths.commandLine = "\(directory)/cmdline"
            paths.watchdog = "\(directory)/no-watchdog"
            let actions = AgentActions(
                fetch: { source, _, _, _ in source },
                reboot: { [self] reason in reboots.withLock { $0.append(reason) } },
                healthGate: { [self] _, onRound in
                    let passed = healthPasses.withLock { $0 }
                    let report = HealthReport(
                        passed: passed,
                        checks: [HealthCheckResult(name: "test", ok: passed, detail: "set by the test")],
                        at: "now")
                    onRound(report)
                    return report
                })
            let logger = Logger(label: "agent-test", sink: { [self] line in logLines.withLock { $0.append(line) } })
            let core = try AgentCore(
                paths: paths, disk: try nodeDisk ?? NodeDisk.image(disk), actions: actions, logger: logger)
            try core.reconcile()
            core.waitForBackgroundWork()
            return core
        }

        func grub() throws -> SlotState { try DiskImage.bootState(disk: disk) }

        /// The EFI partition's bytes (GRUB environment, kernels, grub.cfg).
        func espBytes() throws -> [UInt8] {
            let esp = try NodeDisk.image(disk).esp
            return try FileDescriptor(path: disk, flags: O_RDONLY).read(at: esp.offset, count: Int(esp.size))
        }

        deinit { try? FileManager.default.removeItem(atPath: directory) }
    }

    static func privateKey() throws -> [UInt8] {
        guard let key = ProcessInfo.processInfo.environment["HCOS_TEST_KEY"] else {
            Issue.record("HCOS_TEST_KEY is not set (make test sets it)")
            throw HCOSError(.notFound, "no test key")
        }
        return try BundleKeys.read("\(key).key", kind: "private")
    }

    /// A bundle of the test image's kernel, initramfs and root, relabelled `version`.
    static func bundle(
        version: String, in directory: String, key: [UInt8]? = nil, name: String? = nil
    ) throws -> (path: String, manifest: BundleManifest) {
        let image = try SystemSupport.requireImage()
        let base = image.replacingOccurrences(of: ".img", with: "")
        let path = "\(directory)/\(name ?? "hcos-\(version)").bundle"
        let manifest = try UpdateBundle.write(
            manifest: BundleManifest(
                format: 1, version: version, architecture: "amd64", kernelVersion: "test", rootFormat: "squashfs",
                minimumAgentVersion: "1.0.0", commandLine: "console=ttyS0,115200 panic=5"),
            payloads: [
                ("kernel", "\(base).vmlinuz"), ("initramfs", "\(base).initrd"), ("rootfs", "\(base).rootfs.squashfs"),
            ],
            privateKey: try key ?? privateKey(), to: path)
        return (path, manifest)
    }

    func upgrade(_ core: AgentCore, _ request: UpgradeRequest) throws -> AgentOperation {
        let started = try core.startUpgrade(request)
        core.waitForBackgroundWork()
        return try #require(core.operation(id: started.id))
    }

    @Test func anUpgradeWritesTheInactiveSlotVerifiesItAndArmsItForOneTrialBoot() throws {
        let node = try Node()
        let core = try node.core(slot: "A")
        let (bundle, manifest) = try Self.bundle(version: "2.0.0", in: node.directory)
        let operation = try upgrade(core, UpgradeRequest(source: bundle, expectVersion: "2.0.0"))
        #expect(operation.phase == .staged, "\(operation.error ?? "")")

        let grub = try node.grub()
        #expect(grub.order == [.b, .a])
        #expect(grub.b == SlotState.SlotInfo(good: false, triesLeft: 1))
        #expect(grub.a.good)
        let root = try #require(manifest.payload("rootfs"))
        let slotB = try NodeDisk.image(node.disk).rootB
        let written = try SlotWriter(target: slotB).readBackDigest(size: root.size, progress: { _ in })
        #expect(written == root.sha256)
        let kernel = try BootFiles(esp: try NodeDisk.image(node.disk).esp).read(
            slot: "B", name: "vmlinuz", scratch: node.directory)
        #expect(kernel.map { SHA256.hex(try! SHA256.hash($0)) } == manifest.payload("kernel")?.sha256)
        let slotConfig = try BootFiles(esp: try NodeDisk.image(node.disk).esp).read(
            slot: "B", name: "slot.cfg", scratch: node.directory)
        #expect(slotConfig.map { String(decoding: $0, as: UTF8.self) }?.contains("panic=5") == true)
        let status = core.status()
        #expect(status.slots.first { $0.name == "B" }?.state == "staged")
        #expect(status.slots.first { $0.name == "B" }?.version == "2.0.0")
        #expect(node.reboots.withLock { $0 }.isEmpty)
    }

    @Test func aTrialThatPassesTheHealthGateCommitsAndRollbackReturnsToTheOldSlot() throws {
        let node = try Node()
        let (bundle, _) = try Self.bundle(version: "2.0.0", in: node.directory)
        _ = try upgrade(try node.core(slot: "A"), UpgradeRequest(source: bundle, reboot: true))
        #expect(node.reboots.withLock { $0 }.count == 1)
        try FileManager.default.createDirectory(
            atPath: "\(node.directory)/persist/etc/trial-0badc0de", withIntermediateDirectories: true)
        try "trial-0badc0de\n".write(toFile: "\(node.directory)/persist/etc/trial", atomically: true, encoding: .utf8)

        // GRUB boots B as a trial (it decrements the try first).
        var grub = try node.grub()
        grub.b.triesLeft = 0
        try DiskImage.grubEnvStore(of: try FileDescriptor(path: node.disk, flags: O_RDWR)).save(grub)
        let trial = try node.core(slot: "B", trial: true, version: "2.0.0")
        let status = trial.status()
        #expect(status.lastResult?.outcome == "committed")
        #expect(status.operation?.phase == .committed)
        #expect(try node.grub().order == [.b, .a])
        #expect(try node.grub().b.good)
        #expect(EtcLayers(directory: "\(node.directory)/persist/etc").active() == "trial-0badc0de")

        let response = try trial.rollback(RollbackRequest(reboot: true))
        #expect(response.message.contains("slot A (version 1.0.0)"))
        #expect(try node.grub().order == [.a, .b])
        #expect(try node.grub().a.good)
        #expect(node.reboots.withLock { $0 }.count == 2)
        let back = try node.core(slot: "A")
        #expect(back.status().slots.first { $0.name == "B" }?.state == "valid")
    }

    @Test func aTrialThatFailsTheHealthGateRebootsAndItsVersionIsRefusedAfterwards() throws {
        let node = try Node()
        let (bundle, _) = try Self.bundle(version: "2.0.0", in: node.directory)
        _ = try upgrade(try node.core(slot: "A"), UpgradeRequest(source: bundle))
        node.healthPasses.withLock { $0 = false }
        var grub = try node.grub()
        grub.b.triesLeft = 0
        try DiskImage.grubEnvStore(of: try FileDescriptor(path: node.disk, flags: O_RDWR)).save(grub)
        let trial = try node.core(slot: "B", trial: true, version: "2.0.0")
        #expect(node.reboots.withLock { $0 } == ["trial of slot B failed"])
        #expect(try node.grub().b == SlotState.SlotInfo(good: false, triesLeft: 0))
        #expect(trial.status().failedVersions["2.0.0"]?.contains("health gate failed") == true)

        // GRUB falls back to A; the agent there reports the rollback and refuses 2.0.0.
        let back = try node.core(slot: "A")
        let status = back.status()
        #expect(status.lastResult?.outcome == "rolled-back")
        #expect(status.slots.first { $0.name == "B" }?.state == "failed")
        #expect(throws: AgentError.self) {
            try back.startUpgrade(UpgradeRequest(source: bundle, expectVersion: "2.0.0"))
        }
        let refused = try upgrade(back, UpgradeRequest(source: bundle))
        #expect(refused.phase == .failed)
        #expect(refused.error?.contains("failed on this node before") == true)
        let forced = try upgrade(back, UpgradeRequest(source: bundle, force: true))
        #expect(forced.phase == .staged)
    }

    @Test func aTrialThatNeverReportsIsRecordedAsFailedWhenGrubFallsBack() throws {
        let node = try Node()
        let (bundle, _) = try Self.bundle(version: "2.0.0", in: node.directory)
        _ = try upgrade(try node.core(slot: "A"), UpgradeRequest(source: bundle))
        // GRUB spent B's only try (a panic or hang) and booted A again.
        var grub = try node.grub()
        grub.b.triesLeft = 0
        try DiskImage.grubEnvStore(of: try FileDescriptor(path: node.disk, flags: O_RDWR)).save(grub)
        let back = try node.core(slot: "A")
        let status = back.status()
        #expect(status.lastResult?.outcome == "rolled-back")
        #expect(status.failedVersions["2.0.0"] != nil)
        #expect(status.operation?.phase == .rolledBack)
    }

    @Test func badSignatureOrUnexpectedVersionChangesNoByteOfTheBootConfiguration() throws {
        let node = try Node()
        let core = try node.core(slot: "A")
        let before = try node.espBytes()
        let foreign = try Ed25519.generate()
        let (unsigned, _) = try Self.bundle(version: "2.0.0", in: node.directory, key: foreign.privateKey)
        let badSignature = try upgrade(core, UpgradeRequest(source: unsigned))
        #expect(badSignature.phase == .failed)
        #expect(badSignature.error?.contains("signature") == true)

        let (other, _) = try Self.bundle(version: "3.0.0", in: node.directory)
        let wrongVersion = try upgrade(core, UpgradeRequest(source: other, expectVersion: "2.0.0"))
        #expect(wrongVersion.error == "the bundle is version 3.0.0, but 2.0.0 was expected")

        let truncated = "\(node.directory)/truncated.bundle"
        try FileManager.default.copyItem(atPath: other, toPath: truncated)
        let handle = try FileDescriptor(path: truncated, flags: O_RDWR)
        try handle.truncate(to: try handle.size() - 4096)
        let cut = try upgrade(core, UpgradeRequest(source: truncated))
        #expect(cut.error?.contains("truncated") == true)

        #expect(try node.espBytes() == before)
        #expect(core.status().slots.first { $0.name == "B" }?.state == "empty")
        #expect(core.status().lastResult?.outcome == "failed")
    }

    @Test func aPayloadThatDoesNotMatchItsDigestIsRefusedBeforeTheSlotIsTouched() throws {
        let node = try Node()
        let core = try node.core(slot: "A")
        let (bundle, manifest) = try Self.bundle(version: "2.0.0", in: node.directory)
        // Flip one byte inside the root payload (the signed manifest still names the old digest).
        let handle = try FileDescriptor(path: bundle, flags: O_RDWR)
        let size = try handle.size()
        let root = try #require(manifest.payload("rootfs"))
        let position = size - root.size + root.size / 2
        let byte = try handle.read(at: position, count: 1)
        try handle.write([byte[0] ^ 0xff], at: position)
        let before = try node.espBytes()
        let operation = try upgrade(core, UpgradeRequest(source: bundle))
        #expect(operation.error?.contains("payload rootfs has digest") == true)
        #expect(try node.espBytes() == before)
    }

    @Test func aDiskThatFailsWhileTheSlotIsWrittenLeavesTheSlotInvalidAndTheRunningSlotTheDefault() throws {
        let node = try Node()
        let real = try NodeDisk.image(node.disk)
        // ROOT-B on a device where every write fails with ENOSPC, as on a full or failing disk.
        let failing = NodeDisk(
            esp: real.esp, rootA: real.rootA,
            rootB: PartitionRef(label: "ROOT-B", path: "/dev/full", offset: 0, size: real.rootB.size))
        let core = try node.core(slot: "A", nodeDisk: failing)
        let (bundle, _) = try Self.bundle(version: "2.0.0", in: node.directory)
        let operation = try upgrade(core, UpgradeRequest(source: bundle, expectVersion: "2.0.0"))
        #expect(operation.phase == .failed)
        #expect(
            operation.error?.contains("cannot write ROOT-B (/dev/full) at byte 0") == true, "\(operation.error ?? "")")
        #expect(operation.error?.contains("No space left on device") == true, "\(operation.error ?? "")")

        let grub = try node.grub()
        #expect(grub.order.first == .a)
        #expect(grub.a.good)
        #expect(grub.b == SlotState.SlotInfo(good: false, triesLeft: 0))
        let status = core.status()
        #expect(status.slots.first { $0.name == "B" }?.state == "invalid")
        #expect(status.lastResult?.outcome == "failed")
        #expect(node.reboots.withLock { $0 }.isEmpty)
        // A restarted agent keeps the slot out of reach, and a rollback to it is refused.
        let restarted = try node.core(slot: "A", nodeDisk: failing)
        #expect(restarted.status().slots.first { $0.name == "B" }?.state == "invalid")
        #expect(throws: AgentError.self) { try restarted.rollback(RollbackRequest(reboot: false)) }
    }

    @Test func aSlotStateFromANewerAgentReadsAsInvalidInsteadOfBreakingTheStateFile() throws {
        let node = try Node()
        _ = try node.core(slot: "A")
        let file = "\(node.directory)/persist/.hcos/agent/state.json"
        let text = try String(contentsOfFile: file, encoding: .utf8)
        let newer = text.replacingOccurrences(of: "\"state\" : \"empty\"", with: "\"state\" : \"verity-pending\"")
        #expect(newer != text)
        try newer.write(toFile: file, atomically: true, encoding: .utf8)
        let core = try node.core(slot: "A")
        #expect(core.status().slots.first { $0.name == "B" }?.state == "invalid")
        #expect(try node.grub().b == SlotState.SlotInfo(good: false, triesLeft: 0))
    }

    @Test func rollbackOnAFreshNodeIsRefusedWithAClearMessage() throws {
        let node = try Node()
        let core = try node.core(slot: "A")
        #expect {
            try core.rollback(RollbackRequest())
        } throws: { error in
            (error as? AgentError)?.message
                == "cannot roll back: slot B holds no valid version: it was never written (a fresh node has only one OS version)"
        }
        #expect(node.reboots.withLock { $0 }.isEmpty)
    }

    @Test func theSameUpgradeTwiceDoesNotRewriteTheSlot() throws {
        let node = try Node()
        let core = try node.core(slot: "A")
        let (bundle, manifest) = try Self.bundle(version: "2.0.0", in: node.directory)
        #expect(try upgrade(core, UpgradeRequest(source: bundle)).phase == .staged)
        #expect(try upgrade(core, UpgradeRequest(source: bundle)).phase == .staged)
        let skipped = node.logLines.withLock { $0 }.filter {
            $0.contains("already holds sha256:\(manifest.payload("rootfs")!.sha256)")
        }
        #expect(skipped.count == 1)
    }

    @Test func anAgentRestartedWhileWritingLeavesTheSlotUnbootableAndSaysWhy() throws {
        let node = try Node()
        _ = try node.core(slot: "A")
        let store = AgentStateStore(path: "\(node.directory)/persist/.hcos/agent/state.json")
        var state = try #require(try store.load())
        state.operation = AgentOperation(
            id: "op-cut", kind: "upgrade", source: "/x", phase: .writing, targetSlot: "B", version: "2.0.0",
            progress: nil, message: nil, error: nil, startedAt: "t", updatedAt: "t")
        state[slot: "B"] = SlotRecord(state: .writing, version: "2.0.0")
        try store.save(state)
        // Even if the GRUB environment had said otherwise, B must not stay bootable.
        var grub = try node.grub()
        grub.b = .init(good: false, triesLeft: 1)
        try DiskImage.grubEnvStore(of: try FileDescriptor(path: node.disk, flags: O_RDWR)).save(grub)

        let core = try node.core(slot: "A")
        let status = core.status()
        #expect(status.operation?.phase == .failed)
        #expect(status.operation?.error?.contains("interrupted while writing") == true)
        #expect(try node.grub().b == SlotState.SlotInfo(good: false, triesLeft: 0))
    }
}
