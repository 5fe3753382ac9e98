import Bundle
import Dispatch
import FoundationEssentials
import GrubEnv
import HCOSCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An API-level refusal: the HTTP status and a message that says what is wrong.
public struct AgentError: Error, Sendable, CustomStringConvertible {
    public var status: Int
    public var code: String
    public var message: String

    public init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// Where the agent finds things on a node; tests point them at temporary directories.
public struct AgentPaths: Sendable {
    public var stateFile = "/persist/.hcos/agent/state.json"
    public var downloads = "/persist/.hcos/agent/downloads"
    /// The `/etc` overlay's layers: `active` names the committed upper directory.
    public var etcLayers = "/persist/etc"
    public var keyDirectories = ["/usr/lib/hcos/keys"]
    public var healthDirectories = ["/usr/lib/hcos/health.d", "/etc/hcos/health.d"]
    public var osRelease = "/usr/lib/os-release"
    public var commandLine = "/proc/cmdline"
    public var watchdog = "/dev/watchdog"

    public init() {}
}

/// What the agent does to the world outside its state: fetch a bundle, reboot the node. Tests
/// replace them; on a node they are the real thing.
public struct AgentActions: Sendable {
    /// Makes SOURCE a complete local file; returns its path (a local file source is used in place).
    public var fetch:
        @Sendable (
            _ source: String, _ downloads: String, _ settings: AgentSettings,
            _ progress: @escaping @Sendable (Progress) -> Void
        ) throws -> String
    public var reboot: @Sendable (_ reason: String) -> Void
    /// Runs a trial boot's health gate; returns the last report (passed or not).
    public var healthGate:
        @Sendable (_ deadlineSeconds: Int, _ onRound: @escaping @Sendable (HealthReport) -> Void) ->
            HealthReport

    public init(
        fetch:
            @escaping @Sendable (String, String, AgentSettings, @escaping @Sendable (Progress) -> Void) throws -> String,
        reboot: @escaping @Sendable (String) -> Void,
        healthGate: @escaping @Sendable (Int, @escaping @Sendable (HealthReport) -> Void) -> HealthReport
    ) {
        self.fetch = fetch
        self.reboot = reboot
        self.healthGate = healthGate
    }
}

/// The node's upgrade engine (DESIGN §3): the persisted state machine, the upgrade steps, the
/// health gate on a trial boot, commit, rollback. Every state change is saved durably before
/// the next step; status reads a snapshot and never waits for a running step.
public final class AgentCore: Sendable {
    public let paths: AgentPaths
    let disk: NodeDisk
    let boot: BootControl
    let actions: AgentActions
    let logger: Logger
    let store: AgentStateStore
    /// The slot this boot runs from and whether GRUB started it as a trial (kernel command line).
    public let bootedSlot: Slot
    let trialBoot: Bool
    public let runningVersion: String
    let state: Mutex<AgentState>
    let queue = DispatchQueue(label: "hcos.agent.operations")

    public init(paths: AgentPaths, disk: NodeDisk, actions: AgentActions, logger: Logger) throws {
        self.paths = paths
        self.disk = disk
        self.actions = actions
        self.logger = logger
        self.boot = try BootControl(esp: disk.esp)
        self.store = AgentStateStore(path: paths.stateFile)
        let words = (try FileSystem.readString(paths.commandLine)).split(whereSeparator: { $0 == " " || $0 == "\n" })
        func parameter(_ name: String) -> String? {
            words.first { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) }
        }
        guard let slotName = parameter("hcos.slot"), let slot = Slot(rawValue: slotName) else {
            throw HCOSError(.notFound, "the kernel command line names no hcos.slot=A|B: not an hcos boot")
        }
        bootedSlot = slot
        trialBoot = parameter("hcos.trial") == "1"
        runningVersion = Self.osReleaseVersion(paths.osRelease)
        state = Mutex(try store.load() ?? AgentState())
    }

    static func osReleaseVersion(_ path: String) -> String {
        let text = (try? FileSystem.readString(path)) ?? ""
        return text.split(separator: "\n").first { $0.hasPrefix("VERSION_ID=") }
            .map { String($0.dropFirst("VERSION_ID=".count).filter { $0 != "\"" }) } ?? "unknown"
    }

    /// Returns once the operation running in the background (upgrade, health gate) has finished.
    public func waitForBackgroundWork() { queue.sync {} }

    // MARK: state helpers

    func snapshot() -> AgentState { state.withLock { $0 } }

    /// Changes the state and saves it durably; the lock is held across the save so that saves
    /// happen in the order of the changes.
    @discardableResult
    func mutate<T>(_ change: (inout AgentState) throws -> T) throws -> T {
        try state.withLock { current in
            var next = current
            let result = try change(&next)
            if next != current {
                try store.save(next)
                current = next
            }
            return result
        }
    }

    /// Progress updates are frequent: kept in memory only (a restart starts the phase over).
    func setProgress(_ progress: Progress) {
        state.withLock { current in
            current.operation?.progress = progress
            current.operation?.updatedAt = Timestamp.now()
        }
    }

    /// A step inside the current phase (hcosctl shows each as a line of its own). Kept in
    /// memory like the progress: the phase, not the step, is what a restart resumes from.
    func setStep(_ message: String, progress: Progress?) {
        state.withLock { current in
            current.operation?.message = message
            current.operation?.progress = progress
            current.operation?.updatedAt = Timestamp.now()
        }
        logger.info("upgrade step: \(message)", [("operation", snapshot().operation?.id ?? "-")])
    }

    func enter(_ phase: UpgradePhase, message: String? = nil, progress: Progress? = nil) throws {
        try mutate { state in
            state.operation?.phase = phase
            state.operation?.progress = progress
            state.operation?.message = message
            state.operation?.updatedAt = Timestamp.now()
        }
        logger.info(
            "upgrade phase \(phase.rawValue)\(message.map { ": \($0)" } ?? "")",
            [("phase", phase.rawValue), ("operation", snapshot().operation?.id ?? "-")])
    }

    // MARK: start-up

    /// Brings the persisted state in line with this boot: records the running slot, finishes or
    /// cleans up an operation a restart or power loss interrupted, and starts the health gate
    /// on a trial boot. Called once, before the API serves.
    public func reconcile() throws {
        let grub = try boot.load()
        let booted = bootedSlot.rawValue
        var runGate = false
        try mutate { state in
            // The running slot's record follows what is really running.
            var record = state[slot: booted]
            if record.version != runningVersion || (record.state != .valid && record.state != .staged) {
                record.version = runningVersion
                record.state = trialBoot ? .staged : .valid
            }
            if !trialBoot || grub[bootedSlot].good { record.state = .valid }
            state[slot: booted] = record

            if var operation = state.operation, !operation.phase.isFinal {
                switch operation.phase {
                case .downloading, .verifying, .writing, .writtenVerified:
                    let target = operation.targetSlot ?? ""
                    let interrupted = operation.phase
                    if interrupted == .writing || interrupted == .writtenVerified
                        || state[slot: target].state == .writing
                    {
                        state[slot: target].state = .invalid
                    }
                    operation.phase = .failed
                    operation.error =
                        "interrupted while \(interrupted.rawValue) (agent restart or power loss); slot \(target) was never armed"
                    operation.updatedAt = Timestamp.now()
                    state.operation = operation
                    state.lastResult = LastResult(
                        operation: operation.id, kind: "upgrade", outcome: "failed", version: operation.version,
                        slot: target, message: operation.error ?? "", at: Timestamp.now())
                case .staged, .rebooting, .trialBoot, .committed, .rolledBack, .failed:
                    break
                }
            }

            guard let trial = state.trial else { return }
            if trial.slot == booted {
                if grub[bootedSlot].good {
                    // Committed before a restart of the agent (or marked good by hand).
                    Self.finishCommit(&state, slot: booted, message: "committed")
                } else if trialBoot {
                    state.operation?.phase = .trialBoot
                    state.operation?.updatedAt = Timestamp.now()
                    state[slot: booted].state = .staged
                    runGate = true
                }
            } else if grub[Slot(rawValue: trial.slot) ?? .b].triesLeft > 0
                && !grub[Slot(rawValue: trial.slot) ?? .b].good
            {
                // Armed, not yet booted: the next reboot tries it.
                return
            } else {
                // GRUB came back to this slot: the trial slot did not commit in its tries.
                let reason =
                    state.failedVersions[trial.version]
                    ?? "the trial boot of slot \(trial.slot) did not pass its health gate before falling back (panic, hang or boot failure)"
                state.failedVersions[trial.version] = reason
                state[slot: trial.slot].state = .failed
                state.trial = nil
                state.operation?.phase = .rolledBack
                state.operation?.error = reason
                state.operation?.updatedAt = Timestamp.now()
                state.lastResult = LastResult(
                    operation: state.operation?.id, kind: "upgrade", outcome: "rolled-back", version: trial.version,
                    slot: trial.slot, message: "version \(trial.version) failed on slot \(trial.slot): \(reason)",
                    at: Timestamp.now())
            }
        }
        // A failed trial slot stays out of GRUB's way even if it had tries left.
        let current = snapshot()
        for slot in Slot.allCases
        where [.failed, .writing, .invalid].contains(current[slot: slot.rawValue].state) {
            let info = grub[slot]
            if slot != bootedSlot && (info.good || info.triesLeft > 0 || grub.order.first == slot) {
                try boot.markUnbootable(slot)
            }
        }
        if runGate { startHealthGate() }
    }

    static func finishCommit(_ state: inout AgentState, slot: String, message: String) {
        state[slot: slot].state = .valid
        let version = state.trial?.version ?? state[slot: slot].version
        state.trial = nil
        state.operation?.phase = .committed
        state.operation?.message = message
        state.operation?.updatedAt = Timestamp.now()
        state.lastResult = LastResult(
            operation: state.operation?.id, kind: "upgrade", outcome: "committed", version: version, slot: slot,
            message: "version \(version ?? "?") committed on slot \(slot)", at: Timestamp.now())
    }

    // MARK: health gate and commit

    func startHealthGate() {
        let timeout = snapshot().settings.healthTimeoutSeconds
        logger.info("trial boot of slot \(bootedSlot.rawValue): health gate running (deadline \(timeout) s)")
        queue.async {
            let watchdog = Watchdog(path: self.paths.watchdog)
            let report = self.actions.healthGate(timeout) { round in
                self.state.withLock { $0.health = round }
                watchdog.pet()
            }
            if report.passed {
                do {
                    try self.commit(report: report)
                } catch {
                    self.logger.error("cannot commit slot \(self.bootedSlot.rawValue): \(error)")
                    self.failTrial(reason: "commit failed: \(error)", report: report)
                }
            } else {
                let failing = report.checks.filter { !$0.ok }.map { "\($0.name): \($0.detail)" }
                self.failTrial(reason: "health gate failed: " + failing.joined(separator: "; "), report: report)
            }
        }
    }

    /// The trial slot passed: good and default in GRUB, the trial's `/etc` layer becomes the
    /// committed one, the boot watchdog is stopped.
    public func commit(report: HealthReport?) throws {
        let slot = bootedSlot.rawValue
        guard snapshot().trial?.slot == slot else {
            throw AgentError(409, "not-trial", "this boot (slot \(slot)) is not a trial boot; nothing to commit")
        }
        try EtcLayers(directory: paths.etcLayers).commitTrial()
        try boot.commit(bootedSlot)
        try mutate { state in
            state.health = report ?? state.health
            Self.finishCommit(&state, slot: slot, message: "health gate passed")
        }
        Watchdog(path: paths.watchdog).disarm(logger: logger)
        logger.info("slot \(slot) committed: version \(runningVersion) is now the default", [("slot", slot)])
    }

    /// The trial slot failed in userspace: never boot it again, remember the version, reboot
    /// (GRUB then boots the other slot).
    func failTrial(reason: String, report: HealthReport) {
        let slot = bootedSlot.rawValue
        logger.error("trial of slot \(slot) failed: \(reason); rebooting to the previous slot")
        do {
            try boot.markUnbootable(bootedSlot)
        } catch {
            logger.error("cannot mark slot \(slot) unbootable: \(error) (GRUB's tries still fall back)")
        }
        try? mutate { state in
            state.health = report
            state.failedVersions[runningVersion] = reason
            state[slot: slot].state = .failed
            state.operation?.phase = .failed
            state.operation?.error = reason
            state.operation?.updatedAt = Timestamp.now()
        }
        actions.reboot("trial of slot \(slot) failed")
    }

    // MARK: API operations

    public func status() -> NodeStatus {
        let current = snapshot()
        let grub = try? boot.load()
        let slots = Slot.allCases.map { slot in
            let record = current[slot: slot.rawValue]
            return SlotStatus(
                name: slot.rawValue, version: record.version, state: record.state.rawValue,
                digest: record.rootDigest, good: grub?[slot].good ?? false, triesLeft: grub?[slot].triesLeft ?? 0,
                booted: slot == bootedSlot, next: grub?.order.first == slot)
        }
        return NodeStatus(
            version: runningVersion, bootedSlot: bootedSlot.rawValue,
            trial: trialBoot && current.trial?.slot == bootedSlot.rawValue, agentVersion: runningVersion,
            slots: slots, operation: current.operation, lastResult: current.lastResult,
            failedVersions: current.failedVersions, health: current.health, settings: current.settings)
    }

    public func operation(id: String) -> AgentOperation? {
        let current = snapshot().operation
        return current?.id == id ? current : nil
    }

    /// Accepts an upgrade and runs it in the background; the returned operation id is polled.
    public func startUpgrade(_ request: UpgradeRequest) throws -> AgentOperation {
        let source = request.source.trimmed()
        guard !source.isEmpty else { throw AgentError(400, "bad-request", "source is empty") }
        if let expected = request.expectVersion, expected.isEmpty {
            throw AgentError(400, "bad-request", "expectVersion is empty")
        }
        let target = bootedSlot.other.rawValue
        let operation = try mutate { state -> AgentOperation in
            if let running = state.operation, !running.phase.isFinal,
                running.phase != .staged || running.targetSlot != target
            {
                throw AgentError(
                    409, "busy", "operation \(running.id) (\(running.kind)) is \(running.phase.rawValue); wait for it")
            }
            if trialBoot && state.trial?.slot == bootedSlot.rawValue {
                throw AgentError(409, "trial", "this boot is a trial of slot \(bootedSlot.rawValue); wait for commit")
            }
            if let expected = request.expectVersion, request.force != true,
                let reason = state.failedVersions[expected]
            {
                throw AgentError(
                    409, "failed-version",
                    "version \(expected) failed on this node before (\(reason)); use --force to install it again")
            }
            let now = Timestamp.now()
            let operation = AgentOperation(
                id: Self.newOperationID(), kind: "upgrade", source: source, phase: .downloading, targetSlot: target,
                version: request.expectVersion, progress: nil, message: nil, error: nil, startedAt: now,
                updatedAt: now)
            state.operation = operation
            return operation
        }
        logger.info("upgrade accepted", [("operation", operation.id), ("source", source), ("slot", target)])
        queue.async { self.runUpgrade(operation, request: request) }
        return operation
    }

    static func newOperationID() -> String {
        var bytes = [UInt8](repeating: 0, count: 6)
        for index in bytes.indices { bytes[index] = UInt8.random(in: 0...255) }
        return "op-"
            + bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
            .joined()
    }

    func runUpgrade(_ operation: AgentOperation, request: UpgradeRequest) {
        do {
            try Upgrade(core: self, operation: operation, request: request).run()
        } catch {
            let message = (error as? AgentError)?.message ?? "\(error)"
            logger.error("upgrade failed: \(message)", [("operation", operation.id)])
            let target = operation.targetSlot ?? ""
            let touched =
                (try? mutate { state -> Bool in
                    state.operation?.error = message
                    state.operation?.updatedAt = Timestamp.now()
                    // This operation changed the slot once it marked it writing; before that
                    // (download, verification) the slot still holds what it held.
                    let phase = state.operation?.phase
                    state.operation?.phase = .failed
                    let touched =
                        state[slot: target].state == .writing || phase == .writing || phase == .writtenVerified
                    if touched {
                        state[slot: target].state = .invalid
                        if state.trial?.slot == target { state.trial = nil }
                    }
                    state.lastResult = LastResult(
                        operation: operation.id, kind: "upgrade", outcome: "failed",
                        version: state.operation?.version, slot: target, message: message, at: Timestamp.now())
                    return touched
                }) ?? true
            // Whatever step failed (even arming, half-way through the two GRUB copies), the
            // slot it touched is left unbootable and the running slot stays the default.
            if touched, let slot = Slot(rawValue: target) {
                do {
                    try boot.markUnbootable(slot)
                } catch {
                    logger.error("cannot mark slot \(target) unbootable after the failure: \(error)")
                }
            }
        }
    }

    /// Makes the other slot the default again, if it holds a version that booted and passed.
    public func rollback(_ request: RollbackRequest) throws -> ActionResponse {
        let target = bootedSlot.other
        let message = try mutate { state -> String in
            if let running = state.operation, !running.phase.isFinal, running.phase != .staged {
                throw AgentError(409, "busy", "operation \(running.id) is \(running.phase.rawValue); wait for it")
            }
            let record = state[slot: target.rawValue]
            guard record.state == .valid, let version = record.version else {
                let why =
                    record.state == .empty
                    ? "it was never written (a fresh node has only one OS version)"
                    : "its state is \(record.state.rawValue), not valid"
                throw AgentError(
                    409, "no-rollback-target",
                    "cannot roll back: slot \(target.rawValue) holds no valid version: \(why)")
            }
            try boot.makeDefault(target)
            if state.operation?.phase == .staged { state.operation?.phase = .failed }
            state.trial = nil
            let text = "slot \(target.rawValue) (version \(version)) is the default again"
            state.lastResult = LastResult(
                operation: nil, kind: "rollback", outcome: "rolled-back", version: version, slot: target.rawValue,
                message: text, at: Timestamp.now())
            return text
        }
        logger.info("rollback: \(message)")
        if request.reboot ?? true { actions.reboot("rollback") }
        return ActionResponse(message: message + ((request.reboot ?? true) ? "; rebooting" : "; reboot to run it"))
    }

    /// Commits the current trial boot now (scripts that run their own checks).
    public func markGood() throws -> ActionResponse {
        guard trialBoot, snapshot().trial?.slot == bootedSlot.rawValue else {
            throw AgentError(
                409, "not-trial", "slot \(bootedSlot.rawValue) is not on a trial boot; nothing to mark good")
        }
        try commit(report: nil)
        return ActionResponse(message: "slot \(bootedSlot.rawValue) committed (marked good)")
    }

    public func reboot() -> ActionResponse {
        if let running = snapshot().operation, [.downloading, .verifying, .writing].contains(running.phase) {
            logger.warning("reboot requested while \(running.id) is \(running.phase.rawValue); it will be abandoned")
        }
        actions.reboot("requested through the API")
        return ActionResponse(message: "rebooting")
    }

    public func updateSettings(_ update: SettingsUpdate) throws -> AgentSettings {
        if let tries = update.tries, !(1...SlotState.maxTries).contains(tries) {
            throw AgentError(400, "bad-request", "tries must be between 1 and \(SlotState.maxTries), not \(tries)")
        }
        if let timeout = update.healthTimeoutSeconds, !(10...3600).contains(timeout) {
            throw AgentError(400, "bad-request", "healthTimeoutSeconds must be between 10 and 3600, not \(timeout)")
        }
        return try mutate { state in
            if let tries = update.tries { state.settings.tries = tries }
            if let timeout = update.healthTimeoutSeconds { state.settings.healthTimeoutSeconds = timeout }
            if let registries = update.insecureRegistries { state.settings.insecureRegistries = registries }
            return state.settings
        }
    }
}
