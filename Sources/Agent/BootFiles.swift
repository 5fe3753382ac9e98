import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// A slot's kernel, initramfs and `slot.cfg` in its directory on the FAT EFI partition (`/A/`,
/// `/B/`), written with mtools on the raw partition: the ESP is never mounted on a node, because
/// the GRUB environment copies on it are rewritten in place through the same device.
public struct BootFiles: Sendable {
    public let esp: PartitionRef

    public init(esp: PartitionRef) { self.esp = esp }

    /// `-i` argument: the device, or an image file with mtools' `@@offset` suffix.
    var image: String { esp.offset == 0 ? esp.path : "\(esp.path)@@\(esp.offset)" }

    func mtools(_ tool: String, _ arguments: [String]) throws -> Command.Result {
        var command = Command(
            tool, ["-i", image] + arguments,
            environment: ["MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"])
        command.timeout = 300
        return try command.run()
    }

    /// Copies `files` (name in the slot directory -> local path) into `/SLOT/`, then syncs the
    /// device and reads every file back: what GRUB will load is exactly what was verified.
    public func install(slot: String, files: [(name: String, path: String)]) throws {
        let listing = try? mtools("mdir", ["-b", "::/\(slot)"])
        if listing == nil {
            _ = try mtools("mmd", ["::/\(slot)"])
        }
        for file in files {
            do {
                _ = try mtools("mcopy", ["-o", "-D", "o", file.path, "::/\(slot)/\(file.name)"])
            } catch let error as HCOSError {
                if error.message.contains("Disk full") || error.message.contains("No space") {
                    throw HCOSError(.noSpace, "the EFI partition has no room for /\(slot)/\(file.name)", cause: error)
                }
                throw error
            }
        }
        try syncDevice()
        for file in files {
            let copy = "\(file.path).readback"
            defer { unlink(copy) }
            _ = try mtools("mcopy", ["-o", "::/\(slot)/\(file.name)", copy])
            guard try FileSystem.sameContents(copy, file.path) else {
                throw HCOSError(.io, "/\(slot)/\(file.name) on \(esp) did not read back as written")
            }
        }
    }

    /// A file of a slot directory, or nil if it is not there.
    public func read(slot: String, name: String, scratch: String) throws -> [UInt8]? {
        let copy = "\(scratch)/\(slot)-\(name).read"
        defer { unlink(copy) }
        guard (try? mtools("mcopy", ["-o", "::/\(slot)/\(name)", copy])) != nil else { return nil }
        return try FileSystem.readBytes(copy)
    }

    func syncDevice() throws {
        let file = try FileDescriptor(path: esp.path, flags: O_RDWR)
        try file.sync()
    }

    /// The `slot.cfg` GRUB sources before booting the slot: its kernel arguments.
    public static func slotConfig(commandLine: String) -> String {
        // GRUB script: backslash and double quote are the only specials inside double quotes.
        let escaped = commandLine.flatMap { $0 == "\\" || $0 == "\"" ? ["\\", $0] : [$0] }.map(String.init)
            .joined()
        return
            "# kernel arguments of this slot (written with the slot; grub.cfg sources it)\nset hcos_args=\"\(escaped)\"\n"
    }
}
