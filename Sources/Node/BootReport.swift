import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// What a booted node reports about itself (`os-agent report`): version and slot, boot
/// timings from systemd's monotonic timestamps, memory, mounts, PERSIST, processes and units.
/// One JSON object; `hcos vm`, the demo and the benchmark print it from the HCOS-READY line.
public struct BootReport: Codable, Sendable {
    public struct Timings: Codable, Sendable {
        /// Seconds since the kernel started, on CLOCK_MONOTONIC (which starts with the kernel).
        public var userspaceStart: Double?
        public var systemdReady: Double?
        public var containerdReady: Double?
    }

    public struct Memory: Codable, Sendable {
        public var totalKiB: UInt64
        public var availableKiB: UInt64
        /// total − available (what the kernel considers not reclaimable right now)
        public var usedKiB: UInt64
        /// total − free − buffers − page cache − reclaimable slab (`free`'s "used")
        public var usedWithoutCacheKiB: UInt64
    }

    public struct Mount: Codable, Sendable {
        public var path: String
        public var source: String
        public var fsType: String
        public var readOnly: Bool
    }

    public var version: String
    public var slot: String
    public var trial: Bool
    public var kernel: String
    public var timings: Timings
    public var memory: Memory
    public var mounts: [Mount]
    public var rootReadOnly: Bool
    /// Usable size of the PERSIST filesystem (statvfs: blocks less ext4 metadata).
    public var persistBytes: UInt64
    /// Size of the PERSIST partition and of its ext4 filesystem (superblock block count).
    public var persistPartitionBytes: UInt64
    public var persistFilesystemBytes: UInt64
    public var processes: Int
    public var runningUnits: Int
    public var failedUnits: [String]
    public var containerdActive: Bool

    public static func collect() throws -> BootReport {
        let cmdline = (try? FileSystem.readString("/proc/cmdline")) ?? ""
        let parameters = cmdline.split(separator: " ").map(String.init)
        func parameter(_ name: String) -> String? {
            parameters.first { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) }
        }
        let osRelease = (try? FileSystem.readString("/usr/lib/os-release")) ?? ""
        let version =
            osRelease.split(separator: "\n").first { $0.hasPrefix("VERSION_ID=") }
            .map { String($0.dropFirst("VERSION_ID=".count).filter { $0 != "\"" }) } ?? "unknown"

        let all = try MountInfo.current()
        let mounts = ["/", "/etc", "/var", "/persist", "/tmp", "/var/lib/containerd"].compactMap { path in
            MountInfo.at(path, in: all).map {
                Mount(path: path, source: $0.source, fsType: $0.fsType, readOnly: $0.readOnly)
            }
        }
        var persist = statvfs()
        let persistBytes =
            statvfs("/persist", &persist) == 0 ? UInt64(persist.f_blocks) * UInt64(persist.f_frsize) : 0

        var partitionBytes: UInt64 = 0
        var filesystemBytes: UInt64 = 0
        if let persistMount = MountInfo.at("/persist", in: all), persistMount.source.hasPrefix("/dev/") {
            let name = String(persistMount.source.dropFirst(5))
            partitionBytes =
                (UInt64((try? FileSystem.readString("/sys/class/block/\(name)/size"))?.trimmed() ?? "") ?? 0) * 512
            if let superblock = try? Ext4Superblock.read(device: persistMount.source) {
                filesystemBytes = superblock.blockCount * superblock.blockSize
            }
        }
        return BootReport(
            version: version, slot: parameter("hcos.slot") ?? "?", trial: parameter("hcos.trial") == "1",
            kernel: Self.kernelRelease(), timings: Self.timings(), memory: try Self.memory(), mounts: mounts,
            rootReadOnly: MountInfo.at("/", in: all)?.readOnly ?? false, persistBytes: persistBytes,
            persistPartitionBytes: partitionBytes, persistFilesystemBytes: filesystemBytes,
            processes: Self.processCount(), runningUnits: Self.units("--state=running").count,
            failedUnits: Self.units("--state=failed"), containerdActive: Self.isActive("containerd.service"))
    }

    static func kernelRelease() -> String {
        var name = utsname()
        uname(&name)
        return withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    static func systemdTimestamp(_ unit: String?, _ property: String) -> Double? {
        let arguments = (unit.map { ["show", $0] } ?? ["show"]) + ["--property=\(property)", "--value"]
        guard let output = try? Command("systemctl", arguments).run(check: false).output.trimmed(),
            let micros = Double(output), micros > 0
        else { return nil }
        return micros / 1_000_000
    }

    static func timings() -> Timings {
        Timings(
            userspaceStart: systemdTimestamp(nil, "UserspaceTimestampMonotonic"),
            systemdReady: systemdTimestamp("multi-user.target", "ActiveEnterTimestampMonotonic"),
            containerdReady: systemdTimestamp("containerd.service", "ActiveEnterTimestampMonotonic"))
    }

    public static func memory(meminfo: String? = nil) throws -> Memory {
        let text = try meminfo ?? FileSystem.readString("/proc/meminfo")
        var values: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2 else { continue }
            values[String(parts[0].dropLast())] = UInt64(parts[1])
        }
        let total = values["MemTotal"] ?? 0
        let available = values["MemAvailable"] ?? 0
        let cache = (values["Buffers"] ?? 0) + (values["Cached"] ?? 0) + (values["SReclaimable"] ?? 0)
        let free = values["MemFree"] ?? 0
        return Memory(
            totalKiB: total, availableKiB: available, usedKiB: total - min(total, available),
            usedWithoutCacheKiB: total - min(total, free + cache))
    }

    static func processCount() -> Int {
        guard let dir = opendir("/proc") else { return 0 }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if !name.isEmpty && name.allSatisfy(\.isNumber) { count += 1 }
        }
        return count
    }

    static func units(_ filter: String) -> [String] {
        let output =
            (try? Command("systemctl", ["list-units", filter, "--no-legend", "--plain", "--no-pager"]).run(check: false)
                .output) ?? ""
        return output.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    static func isActive(_ unit: String) -> Bool {
        (try? Command("systemctl", ["is-active", "--quiet", unit]).run(check: false).status) == 0
    }

    /// The mount at `path`, if the report lists one.
    public func mount(_ path: String) -> Mount? { mounts.first { $0.path == path } }

    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
