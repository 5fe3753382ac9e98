import Foundation
import HCOSCore

/// The keep-list (trustlist) that cuts a bootstrapped Debian tree down to the image root.
/// Syntax (see image/keep.list): `/path/or/glob` keeps, `drop /glob` removes; `*` and `?`
/// match within one path component, `**` matches any number of components.
public struct KeepList: Sendable {
    public struct Entry: Sendable, Equatable {
        public let pattern: String
        public let line: Int
    }

    public var keep: [Entry] = []
    public var drop: [Entry] = []

    public init(keep: [Entry] = [], drop: [Entry] = []) {
        self.keep = keep
        self.drop = drop
    }

    public static func parse(_ text: String, source: String = "keep-list") throws -> KeepList {
        var list = KeepList()
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            let entry: (String, Bool)
            switch parts.count {
            case 1: entry = (parts[0], true)
            case 2 where parts[0] == "drop": entry = (parts[1], false)
            default:
                throw HCOSError(
                    .invalidConfig, "\(source):\(index + 1): expected '/path' or 'drop /path', got '\(line)'")
            }
            guard entry.0.hasPrefix("/") else {
                throw HCOSError(.invalidConfig, "\(source):\(index + 1): '\(entry.0)' must be an absolute path")
            }
            let normalized = Entry(pattern: entry.0, line: index + 1)
            if entry.1 { list.keep.append(normalized) } else { list.drop.append(normalized) }
        }
        return list
    }

    /// Whether `path` ("/usr/bin/ls") matches `pattern`, or lies below a directory it matches.
    public static func matches(_ pattern: String, _ path: String, orBelow: Bool = true) -> Bool {
        let p = pattern.split(separator: "/").map(String.init)
        let s = path.split(separator: "/").map(String.init)
        return match(p[...], s[...], prefix: orBelow)
    }

    private static func match(_ pattern: ArraySlice<String>, _ path: ArraySlice<String>, prefix: Bool) -> Bool {
        guard let head = pattern.first else { return path.isEmpty || prefix }
        if head == "**" {
            var rest = path
            while true {
                if match(pattern.dropFirst(), rest, prefix: prefix) { return true }
                guard !rest.isEmpty else { return false }
                rest = rest.dropFirst()
            }
        }
        guard let component = path.first, fnmatch(head, component, 0) == 0 else { return false }
        return match(pattern.dropFirst(), path.dropFirst(), prefix: prefix)
    }
}
