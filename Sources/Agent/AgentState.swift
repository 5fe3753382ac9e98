import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// What the agent knows about each slot beyond the GRUB environment (which only says good /
/// tries left): which version and root digest it holds, and whether its bytes are complete.
public struct SlotRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Never written (a fresh node's slot B).
        case empty
        /// Being written: never bootable in this state.
        case writing
        /// A write failed or was interrupted: holds no verified image, never bootable.
        case invalid
        /// Written and read back; not yet armed.
        case written
        /// Armed for a trial boot.
        case staged
        /// Booted and passed the health gate at least once: a rollback target.
        case valid
        /// Its version failed its trial boot (panic, hang, health gate).
        case failed

        /// A state this agent does not know (written by a newer agent before a rollback to
        /// this one) reads as `invalid`: never bootable, never a rollback target, and the
        /// state file stays readable.
        public init(from decoder: any Decoder) throws {
            let text = try decoder.singleValueContainer().decode(String.self)
            self = State(rawValue: text) ?? .invalid
        }
    }

    public var state: State
    public var version: String?
    /// sha256 of the root image in the slot (its first `rootSize` bytes).
    public var rootDigest: String?
    public var rootSize: UInt64?
    public var kernelVersion: String?

    public init(
        state: State, version: String? = nil, rootDigest: String? = nil, rootSize: UInt64? = nil,
        kernelVersion: String? = nil
    ) {
        self.state = state
        self.version = version
        self.rootDigest = rootDigest
        self.rootSize = rootSize
        self.kernelVersion = kernelVersion
    }

    public static let empty = SlotRecord(state: .empty)
}

/// The agent's persisted state (`/persist/.hcos/agent/state.json`), written durably at every
/// phase change: temporary file, fsync, rename, fsync directory.
public struct AgentState: Codable, Sendable, Equatable {
    public var slots: [String: SlotRecord]
    /// The running or last upgrade.
    public var operation: AgentOperation?
    public var lastResult: LastResult?
    public var failedVersions: [String: String]
    public var settings: AgentSettings
    /// The slot armed for a trial boot and the version in it, until committed or failed.
    public var trial: Trial?
    public var health: HealthReport?

    public struct Trial: Codable, Sendable, Equatable {
        public var slot: String
        public var version: String
        public var operation: String?
        public var armedAt: String
    }

    public init() {
        slots = ["A": .empty, "B": .empty]
        failedVersions = [:]
        settings = .defaults
    }

    public subscript(slot slot: String) -> SlotRecord {
        get { slots[slot] ?? .empty }
        set { slots[slot] = newValue }
    }
}

/// Loads and saves `AgentState` as JSON on PERSIST.
public struct AgentStateStore: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// The saved state, or nil on a node where the agent never ran. A damaged file is an error
    /// (never silently replaced: it may be the only record of a failed version).
    public func load() throws -> AgentState? {
        guard FileSystem.exists(path) else { return nil }
        let bytes = try FileSystem.readBytes(path)
        do {
            return try JSONDecoder().decode(AgentState.self, from: Data(bytes))
        } catch {
            throw HCOSError(.corrupt, "\(path): the agent state is malformed: \(error)")
        }
    }

    public func save(_ state: AgentState) throws {
        try FileSystem.makeDirectories(FileSystem.parent(of: path), mode: 0o700)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileSystem.writeDurably(Array(try encoder.encode(state)), to: path, mode: 0o600)
    }
}

/// RFC 3339 UTC timestamps for the API ("2026-12-03T19:20:13Z").
public enum Timestamp {
    public static func now() -> String {
        var seconds = time(nil)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return
            "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}
