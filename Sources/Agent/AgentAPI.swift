import FoundationEssentials

// The os-agent API (v1): JSON bodies exchanged over HTTP/1.1 on /run/hcos/agent.sock.
// hcosctl and os-proxy are clients; README "Agent API" documents every endpoint.

/// The phases of an upgrade, in order. Persisted, so a restarted agent knows where it was.
public enum UpgradePhase: String, Codable, Sendable, CaseIterable {
    case downloading, verifying, writing
    /// The slot holds the bundle's bytes, read back and compared.
    case writtenVerified = "written-verified"
    /// The slot is armed (tries = N, first in the boot order): the next boot tries it.
    case staged, rebooting
    /// Booted into the new slot, health gate running.
    case trialBoot = "trial-boot"
    case committed
    case rolledBack = "rolled-back"
    case failed

    public var isFinal: Bool { self == .committed || self == .rolledBack || self == .failed }
}

public struct Progress: Codable, Sendable, Equatable {
    public var done: UInt64
    public var total: UInt64?

    public init(done: UInt64, total: UInt64?) {
        self.done = done
        self.total = total
    }
}

/// One long-running request (an upgrade); `GET /v1/operations/ID` reports it.
public struct AgentOperation: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String
    public var source: String
    public var phase: UpgradePhase
    public var targetSlot: String?
    public var version: String?
    public var progress: Progress?
    public var message: String?
    /// Set when the operation ended in failure: what failed and why.
    public var error: String?
    public var startedAt: String
    public var updatedAt: String

    public init(
        id: String, kind: String, source: String, phase: UpgradePhase, targetSlot: String? = nil,
        version: String? = nil, progress: Progress? = nil, message: String? = nil, error: String? = nil,
        startedAt: String, updatedAt: String
    ) {
        self.id = id
        self.kind = kind
        self.source = source
        self.phase = phase
        self.targetSlot = targetSlot
        self.version = version
        self.progress = progress
        self.message = message
        self.error = error
        self.startedAt = startedAt
        self.updatedAt = updatedAt
    }
}

/// How the last upgrade or rollback ended.
public struct LastResult: Codable, Sendable, Equatable {
    public var operation: String?
    public var kind: String
    /// committed, rolled-back, failed or refused
    public var outcome: String
    public var version: String?
    public var slot: String?
    public var message: String
    public var at: String
}

public struct SlotStatus: Codable, Sendable, Equatable {
    public var name: String
    public var version: String?
    /// empty, writing, written, staged, valid, failed
    public var state: String
    public var digest: String?
    public var good: Bool
    public var triesLeft: Int
    public var booted: Bool
    /// First in the GRUB boot order.
    public var next: Bool
}

public struct NodeStatus: Codable, Sendable, Equatable {
    public var version: String
    public var bootedSlot: String
    public var trial: Bool
    public var agentVersion: String
    public var slots: [SlotStatus]
    public var operation: AgentOperation?
    public var lastResult: LastResult?
    /// version -> why it failed; such versions are refused without `force`.
    public var failedVersions: [String: String]
    public var health: HealthReport?
    public var settings: AgentSettings
}

public struct UpgradeRequest: Codable, Sendable, Equatable {
    public var source: String
    public var expectVersion: String?
    public var reboot: Bool?
    public var force: Bool?

    public init(source: String, expectVersion: String? = nil, reboot: Bool? = nil, force: Bool? = nil) {
        self.source = source
        self.expectVersion = expectVersion
        self.reboot = reboot
        self.force = force
    }
}

public struct RollbackRequest: Codable, Sendable, Equatable {
    public var reboot: Bool?

    public init(reboot: Bool? = nil) { self.reboot = reboot }
}

public struct AgentSettings: Codable, Sendable, Equatable {
    /// Boot attempts a newly written slot gets before GRUB falls back (1-3).
    public var tries: Int
    /// Seconds the health gate may take on a trial boot before the node reboots.
    public var healthTimeoutSeconds: Int
    /// OCI registries (`host` or `host:port`) spoken to over plain http instead of https.
    public var insecureRegistries: [String]?

    public static let defaults = AgentSettings(tries: 1, healthTimeoutSeconds: 300)

    public init(tries: Int, healthTimeoutSeconds: Int, insecureRegistries: [String]? = nil) {
        self.tries = tries
        self.healthTimeoutSeconds = healthTimeoutSeconds
        self.insecureRegistries = insecureRegistries
    }
}

/// A partial settings update (`PUT /v1/settings`): absent fields keep their value.
public struct SettingsUpdate: Codable, Sendable, Equatable {
    public var tries: Int?
    public var healthTimeoutSeconds: Int?
    public var insecureRegistries: [String]?

    public init(tries: Int? = nil, healthTimeoutSeconds: Int? = nil, insecureRegistries: [String]? = nil) {
        self.tries = tries
        self.healthTimeoutSeconds = healthTimeoutSeconds
        self.insecureRegistries = insecureRegistries
    }
}

public struct HealthCheckResult: Codable, Sendable, Equatable {
    public var name: String
    public var ok: Bool
    public var detail: String

    public init(name: String, ok: Bool, detail: String) {
        self.name = name
        self.ok = ok
        self.detail = detail
    }
}

public struct HealthReport: Codable, Sendable, Equatable {
    public var passed: Bool
    public var checks: [HealthCheckResult]
    public var at: String

    public init(passed: Bool, checks: [HealthCheckResult], at: String) {
        self.passed = passed
        self.checks = checks
        self.at = at
    }
}

/// The body of every 2xx answer to a POST that acts.
public struct ActionResponse: Codable, Sendable, Equatable {
    public var message: String
    public var operation: AgentOperation?

    public init(message: String, operation: AgentOperation? = nil) {
        self.message = message
        self.operation = operation
    }
}
