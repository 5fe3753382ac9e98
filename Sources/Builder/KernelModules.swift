import Foundation
import HCOSCore

/// Picks kernel modules by name with their dependencies (from the kernel package's
/// modules.dep) and installs them into a tree, then regenerates the module index with depmod.
public struct KernelModules {
    public let kernelVersion: String
    /// The kernel's module directory in the bootstrapped tree (…/usr/lib/modules/VERSION).
    let source: String
    /// module name ("virtio_blk") -> relative path ("kernel/drivers/block/virtio_blk.ko")
    let paths: [String: String]
    /// relative path -> dependency relative paths
    let dependencies: [String: [String]]
    let builtin: Set<String>

    public init(stagingRoot: String) throws {
        let base = "\(stagingRoot)/usr/lib/modules"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: base))?.sorted() ?? []
        guard versions.count == 1, let version = versions.first else {
            throw HCOSError(
                .notFound,
                "expected exactly one kernel in \(base), found \(versions.count): \(versions.joined(separator: ", "))")
        }
        kernelVersion = version
        source = "\(base)/\(version)"
        let dep = try String(contentsOfFile: "\(source)/modules.dep", encoding: .utf8)
        var paths: [String: String] = [:]
        var dependencies: [String: [String]] = [:]
        for line in dep.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let module = String(line[..<colon])
            let deps = line[line.index(after: colon)...].split(separator: " ").map(String.init)
            dependencies[module] = deps
            paths[KernelModules.name(ofPath: module)] = module
        }
        self.paths = paths
        self.dependencies = dependencies
        let builtinText = (try? String(contentsOfFile: "\(source)/modules.builtin", encoding: .utf8)) ?? ""
        builtin = Set(builtinText.split(separator: "\n").map { KernelModules.name(ofPath: String($0)) })
    }

    static func name(ofPath path: String) -> String {
        var file = (path as NSString).lastPathComponent
        for suffix in [".xz", ".zst", ".gz", ".ko"] where file.hasSuffix(suffix) {
            file.removeLast(suffix.count)
        }
        return file.replacingOccurrences(of: "-", with: "_")
    }

    /// Reads a module list file (one name per line, # comments).
    public static func readList(_ path: String) throws -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw HCOSError(.invalidConfig, "cannot read module list \(path)")
        }
        return text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }

    /// Relative paths of the named modules and everything they depend on. Built-in modules are
    /// skipped; an unknown name is an error.
    public func closure(of names: [String], listName: String) throws -> [String] {
        var result = Set<String>()
        var pending: [String] = []
        for name in names {
            let normalized = name.replacingOccurrences(of: "-", with: "_")
            if builtin.contains(normalized) { continue }
            guard let path = paths[normalized] else {
                throw HCOSError(
                    .invalidConfig, "\(listName): kernel module '\(name)' does not exist in kernel \(kernelVersion)")
            }
            pending.append(path)
        }
        while let path = pending.popLast() {
            guard result.insert(path).inserted else { continue }
            pending += dependencies[path] ?? []
        }
        return result.sorted()
    }

    /// Copies the modules into `root`/usr/lib/modules/VERSION (or lib/modules for an
    /// initramfs) and runs depmod there.
    public func install(_ modules: [String], into root: String, moduleBase: String = "usr/lib/modules") throws {
        let target = "\(root)/\(moduleBase)/\(kernelVersion)"
        let fm = FileManager.default
        for module in modules {
            let destination = "\(target)/\(module)"
            try fm.createDirectory(
                atPath: (destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if fm.fileExists(atPath: destination) { try fm.removeItem(atPath: destination) }
            try fm.copyItem(atPath: "\(source)/\(module)", toPath: destination)
        }
        for file in ["modules.builtin", "modules.builtin.modinfo", "modules.order"] {
            let destination = "\(target)/\(file)"
            if fm.fileExists(atPath: "\(source)/\(file)") && !fm.fileExists(atPath: destination) {
                try fm.copyItem(atPath: "\(source)/\(file)", toPath: destination)
            }
        }
        // depmod -b wants BASE/lib/modules; an initramfs has that, an image root reaches it
        // through its merged-/usr /lib link.
        try Command("depmod", ["-b", root, kernelVersion]).run()
    }
}
