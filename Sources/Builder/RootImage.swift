import Foundation
import HCOSCore

/// Makes the compressed read-only root image from the tailored tree (mkfs from a directory:
/// no loop device, no mount, no root privileges needed).
public struct RootImageBuilder {
    public let format: BuildConfig.RootFormat
    public let compression: String

    public init(format: BuildConfig.RootFormat, compression: String) {
        self.format = format
        self.compression = compression
    }

    public func command(tree: String, output: String, epoch: Int) -> Command {
        switch format {
        case .squashfs:
            var arguments = [
                tree, output, "-noappend", "-comp", compression, "-b", "1M",
                "-no-progress", "-quiet", "-processors", "2",
            ]
            switch compression {
            case "zstd": arguments += ["-Xcompression-level", "19"]
            case "xz": arguments += ["-Xbcj", "x86", "-Xdict-size", "100%"]
            default: break
            }
            return Command("mksquashfs", arguments)
        case .erofs:
            let level = compression == "lz4hc" ? "lz4hc,12" : compression
            return Command(
                "mkfs.erofs",
                [
                    "-z\(level)", "-C65536", "-Eztailpacking", "-T\(epoch)", "-U00000000-0000-0000-0000-000000000000",
                    "--quiet", output, tree,
                ])
        }
    }

    public func build(tree: String, output: String, epoch: Int) throws {
        if FileManager.default.fileExists(atPath: output) { try FileManager.default.removeItem(atPath: output) }
        var command = command(tree: tree, output: output, epoch: epoch)
        var environment = ProcessInfo.processInfo.environment
        environment["SOURCE_DATE_EPOCH"] = String(epoch)
        command.environment = environment
        try command.run()
    }
}
