import ELF
import Foundation
import HCOSCore

/// Applies the keep-list to a bootstrapped tree: computes what stays (keep entries, the targets
/// of kept symlinks, the shared libraries of kept ELF files, parent directories) and copies
/// exactly that into a fresh directory, preserving modes, owners and links.
public struct Tailor {
    let staging: String
    let logger: Logger

    public init(staging: String, logger: Logger) {
        self.staging = staging
        self.logger = logger
    }

    /// Every path in the staging tree (not following symlinks), as "/usr/bin/ls".
    func allPaths() throws -> [String] {
        var result: [String] = []
        guard let walker = FileManager.default.enumerator(atPath: staging) else {
            throw HCOSError(.notFound, "cannot read the bootstrapped tree at \(staging)")
        }
        while let relative = walker.nextObject() as? String {
            result.append("/" + relative)
        }
        return result.sorted()
    }

    /// The sorted list of paths to keep.
    public func select(_ list: KeepList) throws -> [String] {
        let paths = try allPaths()
        var kept = Set<String>()
        for entry in list.keep {
            let matched = paths.filter { KeepList.matches(entry.pattern, $0) }
            guard !matched.isEmpty else {
                throw HCOSError(
                    .invalidConfig,
                    "keep-list line \(entry.line): '\(entry.pattern)' matches nothing in the bootstrapped tree "
                        + "(a stale entry, or a package missing from 'packages')")
            }
            kept.formUnion(matched)
        }
        kept = kept.filter { path in !list.drop.contains { KeepList.matches($0.pattern, path) } }

        // Symlink targets and shared libraries, resolved inside the image root, to a fixed point.
        let resolver = DependencyResolver(root: staging)
        var pending = Array(kept)
        var elfFiles: [String] = []
        while let path = pending.popLast() {
            let full = staging + path
            var info = stat()
            guard lstat(full, &info) == 0 else { continue }
            if (info.st_mode & S_IFMT) == S_IFLNK {
                // A dangling link (Debian has a few) is kept as it is.
                guard let resolved = try? resolver.resolveInRoot(path) else { continue }
                for extra in resolved.linksTraversed + [resolved.finalPath] where kept.insert(extra).inserted {
                    pending.append(extra)
                }
            } else if (info.st_mode & S_IFMT) == S_IFREG, (info.st_mode & 0o111) != 0 || path.contains(".so") {
                elfFiles.append(path)
            }
        }
        // The closure includes each library's symlink chain (libfoo.so.1 -> libfoo.so.1.2.3).
        kept.formUnion(try resolver.closure(of: elfFiles))

        // Parent directories, so that modes and owners are copied too.
        for path in Array(kept) {
            var parent = (path as NSString).deletingLastPathComponent
            while parent != "/" && !parent.isEmpty && kept.insert(parent).inserted {
                parent = (parent as NSString).deletingLastPathComponent
            }
        }
        // (Content below a kept directory was matched above: a pattern matches what lies below it.)
        return kept.sorted()
    }

    /// Copies `paths` from staging into `destination` with tar (modes, owners, links, xattrs).
    public func copy(_ paths: [String], to destination: String, work: String) throws {
        let listFile = "\(work)/keep.paths"
        let archive = "\(work)/keep.tar"
        let list = paths.map { "." + $0 }.joined(separator: "\0") + "\0"
        try Data(list.utf8).write(to: URL(fileURLWithPath: listFile))
        try Command(
            "tar", ["-C", staging, "--no-recursion", "--null", "-T", listFile, "--xattrs", "-cf", archive]
        ).run()
        try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: true)
        try Command("tar", ["-C", destination, "--xattrs", "--same-owner", "-xpf", archive]).run()
        try? FileManager.default.removeItem(atPath: archive)
    }
}
