import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

/// The one in-house logger: leveled, structured `key=value` fields, passed in (never global).
/// Output is a single line per event on standard error, so it reads well both on a terminal and
/// in the journal.
public struct Logger: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case debug, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var label: String {
            switch self {
            case .debug: "debug"
            case .info: "info"
            case .warning: "warning"
            case .error: "error"
            }
        }
    }

    public typealias Sink = @Sendable (String) -> Void

    public let label: String
    public let minimum: Level
    public let fields: [(String, String)]
    private let sink: Sink

    public init(label: String, minimum: Level = .info, sink: Sink? = nil) {
        self.label = label
        self.minimum = minimum
        self.fields = []
        self.sink = sink ?? Logger.standardError
    }

    private init(label: String, minimum: Level, fields: [(String, String)], sink: @escaping Sink) {
        self.label = label
        self.minimum = minimum
        self.fields = fields
        self.sink = sink
    }

    /// A logger that adds `fields` to every event (node, version, slot, phase, ...).
    public func with(_ extra: [(String, String)]) -> Logger {
        Logger(label: label, minimum: minimum, fields: fields + extra, sink: sink)
    }

    public func log(_ level: Level, _ message: String, _ extra: [(String, String)] = []) {
        guard level >= minimum else { return }
        var line = "\(label): \(level == .info ? "" : level.label + ": ")\(message)"
        for (key, value) in fields + extra {
            line += " \(key)=\(value.contains(" ") ? "\"\(value)\"" : value)"
        }
        sink(line)
    }

    public func debug(_ message: String, _ extra: [(String, String)] = []) { log(.debug, message, extra) }
    public func info(_ message: String, _ extra: [(String, String)] = []) { log(.info, message, extra) }
    public func warning(_ message: String, _ extra: [(String, String)] = []) { log(.warning, message, extra) }
    public func error(_ message: String, _ extra: [(String, String)] = []) { log(.error, message, extra) }

    public static let standardError: Sink = { line in
        var bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    }

    /// A logger that discards everything (tests that do not look at logs).
    public static let silent = Logger(label: "silent", minimum: .error, sink: { _ in })
}
