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
        let file = try FileDescriptor(path: disk, flags: O_RDWR)
        let table = try GPTTable.read(from: file, size: try file.size())
        let esp = try table.partition(named: "EFI")
        let store = try GrubEnvStore(file: file, region: esp.firstLBA * 512..<(esp.lastLBA + 1) * 512)
        var state = try store.load().state
        try change(&state)
        try store.save(state)
    }

    /// Reads the slot state from an hcos disk image file.
    public static func bootState(disk: String) throws -> SlotState {
        let file = try FileDescriptor(path: disk, flags: O_RDONLY)
        let table = try GPTTable.read(from: file, size: try file.size())
        let esp = try table.partition(named: "EFI")
        return try GrubEnvStore(file: file, region: esp.firstLBA * 512..<(esp.lastLBA + 1) * 512).load().state
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
