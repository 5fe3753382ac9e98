import FoundationEssentials
import HCOSCore

/// One line of /proc/self/mountinfo (proc(5)): what is mounted where, how.
public struct MountInfo: Sendable, Codable, Equatable {
    public var mountPoint: String
    public var source: String
    public var fsType: String
    public var options: [String]
    public var majorMinor: String
    public var root: String

    public var readOnly: Bool { options.contains("ro") }

    public static func parse(_ text: String) -> [MountInfo] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ").map(String.init)
            guard let dash = fields.firstIndex(of: "-"), dash >= 6, fields.count >= dash + 3 else { return nil }
            return MountInfo(
                mountPoint: unescape(fields[4]), source: unescape(fields[dash + 2]), fsType: fields[dash + 1],
                options: fields[5].split(separator: ",").map(String.init), majorMinor: fields[2],
                root: unescape(fields[3]))
        }
    }

    /// mountinfo escapes space, tab, newline and backslash as \ooo.
    static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var result: [UInt8] = []
        var bytes = Array(field.utf8)[...]
        while let byte = bytes.popFirst() {
            if byte == UInt8(ascii: "\\"), bytes.count >= 3,
                let code = UInt8(String(decoding: bytes.prefix(3), as: UTF8.self), radix: 8)
            {
                result.append(code)
                bytes = bytes.dropFirst(3)
            } else {
                result.append(byte)
            }
        }
        return String(decoding: result, as: UTF8.self)
    }

    public static func current() throws -> [MountInfo] {
        parse(try FileSystem.readString("/proc/self/mountinfo"))
    }

    /// The last mount at `path` (the one visible there).
    public static func at(_ path: String, in mounts: [MountInfo]) -> MountInfo? {
        mounts.last { $0.mountPoint == path }
    }
}
