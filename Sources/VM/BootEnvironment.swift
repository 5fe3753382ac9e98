import Disk
import GrubEnv
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

extension DiskImage {
    /// Opens the GRUB environment of an hcos disk image file (found in its EFI partition, without
    /// mounting anything), lets `change` edit the slot state, and writes both copies back.
    public static func editBootState(disk: String, _ change: (inout SlotState) throws -> Void) throws {
        let store = try grubEnvStore(of: try FileDescriptor(path: disk, flags: O_RDWR))
        var state = try store.load().state
        try change(&state)
        try store.save(state)
    }

    /// Reads the slot state from an hcos disk image file.
    public static func bootState(disk: String) throws -> SlotState {
        try grubEnvStore(of: try FileDescriptor(path: disk, flags: O_RDONLY)).load().state
    }

    /// The two GRUB environment copies inside the EFI partition of an hcos disk (image file or device).
    public static func grubEnvStore(of disk: FileDescriptor) throws -> GrubEnvStore {
        let table = try GPTTable.read(from: disk, size: try disk.size())
        let esp = try table.partition(named: "EFI")
        return try GrubEnvStore(file: disk, region: esp.firstLBA * 512..<(esp.lastLBA + 1) * 512)
    }

    /// Adds a kernel argument to both slots' command lines (GRUB environment `hcos_cmdline`).
    public static func addKernelArgument(_ argument: String, disk: String) throws {
        try editBootState(disk: disk) { state in
            let words = state.extraCommandLine.split(separator: " ").map(String.init)
            if !words.contains(argument) {
                state.extraCommandLine = (words + [argument]).joined(separator: " ")
            }
        }
    }
}
