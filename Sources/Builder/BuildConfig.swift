import Foundation
import HCOSCore

/// The build configuration (`hcos build --config FILE`): `key = value` lines, `#` comments.
/// Every key is known here; an unknown key, a bad value or a missing file is an error that
/// names the line.
public struct BuildConfig: Sendable, Equatable {
    public enum RootFormat: String, Sendable { case squashfs, erofs }

    public var version = "1.0.0"
    public var suite = "bookworm"
    public var mirror = "http://deb.debian.org/debian"
    public var architecture = "amd64"
    public var packages: [String] = ["systemd", "systemd-sysv", "udev", "containerd", "runc", "kmod"]
    public var kernelPackage = "linux-image-cloud-amd64"
    public var keepList = "keep.list"
    public var modules = "modules.list"
    public var initramfsModules = "initramfs-modules.list"
    public var overlay = "overlay"
    public var rootFormat = RootFormat.squashfs
    public var rootCompression = "zstd"
    public var diskSize: UInt64 = 2560 << 20
    public var espSize: UInt64 = 128 << 20
    public var slotSize: UInt64 = 1024 << 20
    public var persistSize: UInt64 = 256 << 20
    public var cmdline =
        "console=ttyS0,115200 quiet loglevel=3 panic=5 systemd.show_status=false transparent_hugepage=madvise"
    /// Directory the relative paths above are resolved against (the config file's directory).
    public var baseDirectory = "."

    public init() {}

    public static let keys = [
        "version", "suite", "mirror", "architecture", "packages", "kernel-package", "keep-list", "modules",
        "initramfs-modules", "overlay", "root-format", "root-compression", "disk-size", "esp-size",
        "slot-size", "persist-size", "cmdline",
    ]

    /// Reads a configuration file; `overrides` ("key=value", from `hcos build --set`) replace
    /// the file's value of a key, or add one.
    public static func load(path: String, overrides: [String] = []) throws -> BuildConfig {
        guard var text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw HCOSError(.invalidConfig, "cannot read configuration file \(path)")
        }
        for override in overrides {
            guard let equals = override.firstIndex(of: "="), equals != override.startIndex else {
                throw HCOSError(.invalidArgument, "--set expects KEY=VALUE, got '\(override)'")
            }
            let key = override[..<equals].trimmingCharacters(in: .whitespaces)
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
                guard let sign = line.firstIndex(of: "="), !line.trimmingCharacters(in: .whitespaces).hasPrefix("#")
                else {
                    return true
                }
                return line[..<sign].trimmingCharacters(in: .whitespaces) != key
            }
            text = lines.joined(separator: "\n") + "\n" + override + "\n"
        }
        var config = try parse(text, source: path)
        config.baseDirectory = (path as NSString).deletingLastPathComponent
        if config.baseDirectory.isEmpty { config.baseDirectory = "." }
        return config
    }

    public static func parse(_ text: String, source: String = "config") throws -> BuildConfig {
        var config = BuildConfig()
        var seen = Set<String>()
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let at = "\(source):\(index + 1)"
            guard let equals = line.firstIndex(of: "=") else {
                throw HCOSError(.invalidConfig, "\(at): expected 'key = value', got '\(line)'")
            }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            guard keys.contains(key) else {
                throw HCOSError(
                    .invalidConfig, "\(at): unknown key '\(key)' (known keys: \(keys.joined(separator: ", ")))")
            }
            guard seen.insert(key).inserted else {
                throw HCOSError(.invalidConfig, "\(at): key '\(key)' is set twice")
            }
            try config.set(key, value, at: at)
        }
        try config.validate(source: source)
        return config
    }

    mutating func set(_ key: String, _ value: String, at: String) throws {
        func size() throws -> UInt64 {
            guard let bytes = ByteSize.parse(value), bytes > 0 else {
                throw HCOSError(.invalidConfig, "\(at): \(key) must be a size like 512M or 2G, got '\(value)'")
            }
            return bytes
        }
        func nonEmpty() throws -> String {
            guard !value.isEmpty else { throw HCOSError(.invalidConfig, "\(at): \(key) is empty") }
            return value
        }
        switch key {
        case "version":
            let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: ".-+_~"))
            guard !value.isEmpty, value.unicodeScalars.allSatisfy(allowed.contains) else {
                throw HCOSError(.invalidConfig, "\(at): version '\(value)' may use only letters, digits and . - + _ ~")
            }
            version = value
        case "suite": suite = try nonEmpty()
        case "mirror": mirror = try nonEmpty()
        case "architecture":
            guard value == "amd64" else {
                throw HCOSError(.invalidConfig, "\(at): architecture '\(value)' is not supported (only amd64)")
            }
            architecture = value
        case "packages": packages = value.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        case "kernel-package": kernelPackage = try nonEmpty()
        case "keep-list": keepList = try nonEmpty()
        case "modules": modules = try nonEmpty()
        case "initramfs-modules": initramfsModules = try nonEmpty()
        case "overlay": overlay = try nonEmpty()
        case "root-format":
            guard let format = RootFormat(rawValue: value) else {
                throw HCOSError(.invalidConfig, "\(at): root-format must be squashfs or erofs, got '\(value)'")
            }
            rootFormat = format
        case "root-compression": rootCompression = try nonEmpty()
        case "disk-size": diskSize = try size()
        case "esp-size": espSize = try size()
        case "slot-size": slotSize = try size()
        case "persist-size": persistSize = try size()
        case "cmdline": cmdline = value
        default: break
        }
    }

    func validate(source: String) throws {
        let compressions: [RootFormat: [String]] = [
            .squashfs: ["zstd", "xz", "gzip", "lz4"], .erofs: ["lz4hc", "lz4"],
        ]
        if let allowed = compressions[rootFormat], !allowed.contains(rootCompression) {
            throw HCOSError(
                .invalidConfig,
                "\(source): root-compression '\(rootCompression)' does not work with \(rootFormat.rawValue) "
                    + "(use one of: \(allowed.joined(separator: ", ")))")
        }
        if packages.isEmpty { throw HCOSError(.invalidConfig, "\(source): packages is empty") }
        let minimum = DiskLayoutPlan.minimumDiskSize(config: self)
        if diskSize < minimum {
            throw HCOSError(
                .invalidConfig,
                "\(source): disk-size \(ByteSize.format(diskSize)) is too small for the layout; it needs at least "
                    + "\(ByteSize.format(minimum)) (1 MiB BIOS-BOOT + esp-size + 2 × slot-size + persist-size + GPT)")
        }
    }

    /// A path from the configuration, resolved against the configuration file's directory.
    public func resolve(_ path: String) -> String {
        path.hasPrefix("/") ? path : "\(baseDirectory)/\(path)"
    }
}
