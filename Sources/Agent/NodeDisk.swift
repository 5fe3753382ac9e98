import Disk
import FoundationEssentials
import HCOSCore
import Node

#if canImport(Glibc)
    import Glibc
#endif

/// A partition as the agent reads and writes it: a device node (offset 0) on a node, or a
/// range of a disk image file in tests and in `hcos` tooling.
public struct PartitionRef: Sendable, Equatable, CustomStringConvertible {
    public var label: String
    public var path: String
    public var offset: UInt64
    public var size: UInt64

    public init(label: String, path: String, offset: UInt64, size: UInt64) {
        self.label = label
        self.path = path
        self.offset = offset
        self.size = size
    }

    public var description: String { offset == 0 ? "\(label) (\(path))" : "\(label) (\(path) at byte \(offset))" }
}

/// The partitions of the boot disk the agent works on (DESIGN §2: by PARTLABEL on the boot
/// disk only; an ambiguous label is refused).
public struct NodeDisk: Sendable {
    public var esp: PartitionRef
    public var rootA: PartitionRef
    public var rootB: PartitionRef

    public init(esp: PartitionRef, rootA: PartitionRef, rootB: PartitionRef) {
        self.esp = esp
        self.rootA = rootA
        self.rootB = rootB
    }

    public func root(_ slot: String) -> PartitionRef { slot == "A" ? rootA : rootB }

    /// The disk image file's partitions, found in its GPT (tests and offline tools).
    public static func image(_ path: String) throws -> NodeDisk {
        let file = try FileDescriptor(path: path, flags: O_RDONLY)
        let table = try GPTTable.read(from: file, size: try file.size())
        func ref(_ label: String) throws -> PartitionRef {
            let partition = try table.partition(named: label)
            return PartitionRef(
                label: label, path: path, offset: partition.firstLBA * table.sectorSize,
                size: partition.sectorCount * table.sectorSize)
        }
        return NodeDisk(esp: try ref("EFI"), rootA: try ref("ROOT-A"), rootB: try ref("ROOT-B"))
    }

    /// The running node's boot disk: the disk that holds the mounted root (`/` is ROOT-A or
    /// ROOT-B of the disk the node booted from), its partitions found by PARTNAME in sysfs.
    public static func running(sysfs: String = "/sys", devices: String = "/dev", mountPoint: String = "/") throws
        -> NodeDisk
    {
        let mounts = try MountInfo.current()
        guard let root = MountInfo.at(mountPoint, in: mounts) else {
            throw HCOSError(.notFound, "nothing is mounted at \(mountPoint)")
        }
        let link = "\(sysfs)/dev/block/\(root.majorMinor)"
        guard let resolved = realpath(link, nil) else {
            throw HCOSError(.notFound, "cannot resolve \(link)", cause: SystemError("realpath", errno: errno))
        }
        let partitionPath = String(cString: resolved)
        free(resolved)
        let diskPath = FileSystem.parent(of: partitionPath)
        let diskName = diskPath.split(separator: "/").last.map(String.init) ?? ""
        guard FileSystem.exists("\(partitionPath)/partition") else {
            throw HCOSError(.notFound, "the root (\(root.source)) is not a partition of a disk")
        }
        var byLabel: [String: [String]] = [:]
        let entries = try FileManagerLite.list(diskPath)
        for name in entries where name.hasPrefix(diskName) && FileSystem.exists("\(diskPath)/\(name)/partition") {
            let uevent = (try? FileSystem.readString("\(diskPath)/\(name)/uevent")) ?? ""
            for line in uevent.split(separator: "\n") where line.hasPrefix("PARTNAME=") {
                byLabel[String(line.dropFirst("PARTNAME=".count)), default: []].append(name)
            }
        }
        func ref(_ label: String) throws -> PartitionRef {
            let names = byLabel[label] ?? []
            guard names.count == 1, let name = names.first else {
                if names.isEmpty {
                    throw HCOSError(.notFound, "no partition labelled \(label) on the boot disk \(diskName)")
                }
                throw HCOSError(
                    .ambiguous,
                    "partition label \(label) is ambiguous on \(diskName): \(names.joined(separator: ", "))")
            }
            let sectors = UInt64((try FileSystem.readString("\(diskPath)/\(name)/size")).trimmed()) ?? 0
            return PartitionRef(label: label, path: "\(devices)/\(name)", offset: 0, size: sectors * 512)
        }
        return NodeDisk(esp: try ref("EFI"), rootA: try ref("ROOT-A"), rootB: try ref("ROOT-B"))
    }
}

/// Directory listing without Foundation's FileManager (the node binary uses FoundationEssentials).
enum FileManagerLite {
    static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw SystemError("opendir", errno: errno, subject: path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}
