import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// Finds, inside an image root directory, everything the dynamic loader would open to run a set
/// of binaries: the program interpreter, each `DT_NEEDED` library (transitively), and every
/// symbolic link met on the way, so that a root cut down to a keep-list still runs.
///
/// The search follows the rules of glibc's ld.so(8): `DT_RPATH` of the object and of the chain of
/// objects that loaded it (only when the object has no `DT_RUNPATH`), then `DT_RUNPATH`, then the
/// default directories. `ld.so.cache`, `LD_LIBRARY_PATH` and glibc-hwcaps subdirectories are not
/// consulted. Like ld.so, a candidate of another ELF class or machine is skipped.
///
/// Every path is resolved as if the root were `/`: absolute symlink targets, `..` and Debian's
/// merged-usr links (`/lib -> usr/lib`) never escape to the host's files.
public struct DependencyResolver: Sendable {
    /// ld.so's trusted directories on Debian amd64 (multiarch first), in search order.
    public static let defaultSearchDirectories = [
        "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib", "/usr/lib",
    ]
    /// Symlinks followed while resolving one path before giving up (Linux's MAXSYMLINKS).
    static let maximumSymlinks = 40

    public let root: String
    public let searchDirectories: [String]
    /// Expansion of `$LIB` in RPATH/RUNPATH (glibc on Debian amd64).
    public let libToken: String
    /// Expansion of `$PLATFORM` in RPATH/RUNPATH.
    public let platformToken: String

    public init(
        root: String, searchDirectories: [String] = DependencyResolver.defaultSearchDirectories,
        libToken: String = "lib/x86_64-linux-gnu", platformToken: String = "x86_64"
    ) {
        var root = root
        while root.count > 1 && root.hasSuffix("/") { root.removeLast() }
        self.root = root == "/" ? "" : root
        self.searchDirectories = searchDirectories
        self.libToken = libToken
        self.platformToken = platformToken
    }

    // MARK: Resolving paths inside the root

    /// Resolves `path` (absolute, as seen from inside the root) the way the kernel would if the
    /// root were `/`. Returns the final root-relative path and, in order, the root-relative
    /// paths of the symlinks followed (each one a directory entry that must be kept for `path`
    /// to keep working). Throws `.notFound` if a component does not exist.
    public func resolveInRoot(_ path: String) throws -> (finalPath: String, linksTraversed: [String]) {
        guard let found = try lookup(path) else {
            throw HCOSError(.notFound, "\(path) does not exist in \(displayRoot)")
        }
        return found
    }

    /// `resolveInRoot`, with a missing path (ENOENT, or ENOTDIR for a file used as a directory)
    /// as nil rather than an error: searching library directories expects misses.
    func lookup(_ path: String) throws -> (finalPath: String, linksTraversed: [String])? {
        var pending = Array(Self.components(of: path).reversed())
        var resolved: [String] = []
        var links: [String] = []
        var followed = 0
        while let component = pending.popLast() {
            if component == ".." {
                _ = resolved.popLast()
                continue
            }
            let candidate = resolved + [component]
            let relative = "/" + candidate.joined(separator: "/")
            let hostPath = root + relative
            var info = stat()
            guard lstat(hostPath, &info) == 0 else {
                let error = errno
                if error == ENOENT || error == ENOTDIR { return nil }
                throw HCOSError(
                    .io, "cannot resolve \(path) in \(displayRoot)",
                    cause: SystemError("lstat", errno: error, subject: hostPath))
            }
            guard (info.st_mode & S_IFMT) == S_IFLNK else {
                resolved = candidate
                continue
            }
            followed += 1
            guard followed <= Self.maximumSymlinks else {
                throw HCOSError(
                    .corrupt, "too many levels of symbolic links resolving \(path) in \(displayRoot)")
            }
            let target = try FileSystem.readLink(hostPath)
            if !links.contains(relative) { links.append(relative) }
            // A relative target is relative to the link's directory, which is `resolved`; an
            // absolute one restarts from the root (not the host's /).
            if target.hasPrefix("/") { resolved = [] }
            pending.append(contentsOf: Self.components(of: target).reversed())
        }
        return ("/" + resolved.joined(separator: "/"), links)
    }

    static func components(of path: String) -> [String] {
        path.split(separator: "/").map(String.init).filter { $0 != "." }
    }

    private var displayRoot: String { root.isEmpty ? "/" : root }

    // MARK: The dependency closure

    /// One ELF object waiting to have its dependencies resolved.
    private struct Pending {
        let path: String
        /// `$ORIGIN`: the directory the object was found in, before symlinks (as ld.so sees it).
        let origin: String
        /// DT_RPATH directories of the objects that (transitively) loaded this one, expanded.
        let inheritedRPath: [String]
    }

    /// The transitive closure of files needed to run `paths` (absolute paths inside the root,
    /// e.g. "/usr/bin/containerd"): the given paths themselves, their interpreters and shared
    /// libraries, and every symlink followed to reach any of them. Root-relative, sorted, unique.
    ///
    /// Non-ELF files (scripts, data) and static binaries contribute only themselves. A missing
    /// path, interpreter or library is `.notFound`, naming the object that needs it.
    public func closure(of paths: [String]) throws -> [String] {
        var keep = Set<String>()
        var queue: [Pending] = []
        for path in paths {
            let absolute = path.hasPrefix("/") ? path : "/" + path
            let found = try resolveInRoot(absolute)
            keep.formUnion(found.linksTraversed)
            keep.insert(found.finalPath)
            queue.append(
                Pending(
                    path: found.finalPath, origin: FileSystem.parent(of: found.finalPath), inheritedRPath: [])
            )
        }

        var visited = Set<String>()
        var parsed: [String: ELFFile?] = [:]
        // A library that a plugin (dlopen'ed .so) needs may be found only through the RUNPATH of the
        // executable that loads it (systemd's libsystemd-core needs libsystemd-shared this way): at
        // run time it is already loaded. So a miss is an error only if no kept object has that name.
        var missing: [(object: String, name: String, searched: String)] = []
        var next = 0
        while next < queue.count {
            let object = queue[next]
            next += 1
            guard visited.insert(object.path).inserted else { continue }
            guard let elf = try parse(object.path, cache: &parsed) else { continue }

            if let interpreter = elf.interpreter {
                guard let found = try lookup(interpreter), isRegularFile(found.finalPath) else {
                    throw HCOSError(
                        .notFound,
                        "\(object.path) needs the interpreter \(interpreter), which is not in \(displayRoot)")
                }
                keep.formUnion(found.linksTraversed)
                keep.insert(found.finalPath)
                queue.append(
                    Pending(
                        path: found.finalPath, origin: FileSystem.parent(of: found.finalPath),
                        inheritedRPath: []))
            }

            // ld.so drops DT_RPATH when DT_RUNPATH is present, and a loader's DT_RUNPATH stops
            // the search of the RPATH chain altogether.
            let ownRPath = elf.runpath.isEmpty ? elf.rpath.map { expand($0, origin: object.origin) } : []
            let rpathChain = elf.runpath.isEmpty ? ownRPath + object.inheritedRPath : []
            let runpath = elf.runpath.map { expand($0, origin: object.origin) }
            let directories = rpathChain + runpath + searchDirectories

            for name in elf.needed {
                let (directory, found) = try findLibrary(name, in: directories, for: elf, cache: &parsed)
                guard let found, let directory else {
                    let searched = name.contains("/") ? name : directories.joined(separator: ":")
                    missing.append((object.path, name, searched))
                    continue
                }
                keep.formUnion(found.linksTraversed)
                keep.insert(found.finalPath)
                queue.append(Pending(path: found.finalPath, origin: directory, inheritedRPath: rpathChain))
            }
        }
        let keptNames = Set(keep.map { $0.split(separator: "/").last.map(String.init) ?? $0 })
        if let miss = missing.first(where: { !keptNames.contains($0.name) }) {
            throw HCOSError(
                .notFound,
                "\(miss.object) needs \(miss.name), which is not in \(miss.searched) under \(displayRoot)")
        }
        return keep.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    /// The first directory holding a compatible library `name`, and the resolved library.
    private func findLibrary(
        _ name: String, in directories: [String], for requester: ELFFile,
        cache: inout [String: ELFFile?]
    ) throws -> (String?, (finalPath: String, linksTraversed: [String])?) {
        // A DT_NEEDED with a slash is a path, not a name to search for.
        if name.contains("/") {
            let path = name.hasPrefix("/") ? name : "/" + name
            guard let found = try lookup(path), isRegularFile(found.finalPath) else { return (nil, nil) }
            return (FileSystem.parent(of: path), found)
        }
        for directory in directories {
            let candidate = directory.hasSuffix("/") ? directory + name : directory + "/" + name
            guard let found = try lookup(candidate), isRegularFile(found.finalPath) else { continue }
            guard let library = try parse(found.finalPath, cache: &cache),
                library.elfClass == requester.elfClass, library.machine == requester.machine
            else { continue }
            return (directory, found)
        }
        return (nil, nil)
    }

    private func parse(_ path: String, cache: inout [String: ELFFile?]) throws -> ELFFile? {
        if let known = cache[path] { return known }
        guard isRegularFile(path) else {
            cache[path] = .some(nil)
            return nil
        }
        let elf = try ELFFile.parse(path: root + path)
        cache[path] = .some(elf)
        return elf
    }

    private func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return lstat(root + path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    /// Expands the dynamic string tokens ld.so knows in RPATH/RUNPATH entries.
    func expand(_ entry: String, origin: String) -> String {
        var result = entry
        for (token, value) in [("ORIGIN", origin), ("LIB", libToken), ("PLATFORM", platformToken)] {
            result = result.replacing("${\(token)}", with: value).replacing("$\(token)", with: value)
        }
        return result
    }
}
