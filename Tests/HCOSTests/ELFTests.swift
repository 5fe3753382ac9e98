import ELF
import Foundation
import HCOSCore
import Testing

@Suite("ELF parsing")
struct ELFParseTests {
    @Test("reads the interpreter and DT_NEEDED libc.so.6 of the host's /usr/bin/env")
    func hostEnv() throws {
        let elf = try #require(try ELFFile.parse(path: "/usr/bin/env"))
        #expect(elf.elfClass == .elf64)
        #expect(elf.machine == 62)
        #expect(elf.interpreter == "/lib64/ld-linux-x86-64.so.2")
        #expect(elf.isDynamic)
        #expect(elf.needed.contains("libc.so.6"))
    }

    @Test("reads the SONAME of the host's libc and its DT_NEEDED on the loader")
    func hostLibc() throws {
        let elf = try #require(try ELFFile.parse(path: "/usr/lib/x86_64-linux-gnu/libc.so.6"))
        #expect(elf.soname == "libc.so.6")
        #expect(elf.needed.contains("ld-linux-x86-64.so.2"))
    }

    @Test(
        "finds neither interpreter nor libraries in a statically linked busybox",
        .enabled(if: FileManager.default.fileExists(atPath: "/bin/busybox")))
    func staticBusybox() throws {
        let elf = try #require(try ELFFile.parse(path: "/bin/busybox"))
        #expect(elf.interpreter == nil)
        #expect(elf.needed.isEmpty)
    }

    @Test("returns nil for scripts, text, empty and tiny files")
    func nonELF() throws {
        #expect(try ELFFile.parse(bytes: Array("#!/bin/sh\necho hi\n".utf8)) == nil)
        #expect(try ELFFile.parse(bytes: []) == nil)
        #expect(try ELFFile.parse(bytes: [0x7f, 0x45, 0x4c]) == nil)
        #expect(try ELFFile.parse(path: "/etc/passwd") == nil)
    }

    @Test("reads a hand-built ELF64 with DT_NEEDED, DT_RUNPATH, DT_RPATH and DT_SONAME")
    func synthetic() throws {
        let bytes = FakeELF.build(
            interpreter: "/lib64/ld-linux-x86-64.so.2", needed: ["libfoo.so.1", "libc.so.6"],
            runpath: "$ORIGIN/../lib:/opt/lib", rpath: "/old", soname: "tool")
        let elf = try #require(try ELFFile.parse(bytes: bytes))
        #expect(elf.interpreter == "/lib64/ld-linux-x86-64.so.2")
        #expect(elf.needed == ["libfoo.so.1", "libc.so.6"])
        #expect(elf.runpath == ["$ORIGIN/../lib", "/opt/lib"])
        #expect(elf.rpath == ["/old"])
        #expect(elf.soname == "tool")
    }

    @Test("reads a hand-built ELF32 the same way")
    func synthetic32() throws {
        let bytes = FakeELF.build(needed: ["libc.so.6"], elf32: true)
        let elf = try #require(try ELFFile.parse(bytes: bytes))
        #expect(elf.elfClass == .elf32)
        #expect(elf.machine == 3)
        #expect(elf.needed == ["libc.so.6"])
    }

    @Test("reports every truncation of a real binary inside its headers as corrupt, never crashing")
    func truncated() throws {
        let bytes = try FileSystem.readBytes("/usr/bin/env")
        for length in [4, 5, 16, 20, 40, 63, 64, 100, 64 + 56 * 3] {
            #expect(throws: HCOSError.self, "length \(length)") {
                try ELFFile.parse(bytes: Array(bytes[0..<length]))
            }
        }
        // Cuts further in: either parses (everything needed came before the cut) or is corrupt.
        for length in stride(from: 4, to: bytes.count, by: 97) {
            do {
                _ = try ELFFile.parse(bytes: Array(bytes[0..<length]))
            } catch let error as HCOSError {
                #expect(error.code == .corrupt)
            }
        }
    }

    @Test("reports a truncated file on disk as corrupt")
    func truncatedFile() throws {
        let bytes = try FileSystem.readBytes("/usr/bin/env")
        let path = NSTemporaryDirectory() + "hcos-elf-\(UUID().uuidString)"
        defer { unlink(path) }
        try FileSystem.writeDurably(Array(bytes[0..<200]), to: path)
        let error = try #require(throws: HCOSError.self) { try ELFFile.parse(path: path) }
        #expect(error.code == .corrupt)
        #expect(error.message.contains(path))
    }

    @Test("survives garbage after the ELF magic and random corruption of a valid file")
    func garbage() throws {
        var random = SeededRandom(seed: 42)
        for _ in 0..<500 {
            let size = Int(random.next() % 600)
            var bytes: [UInt8] = [0x7f, 0x45, 0x4c, 0x46, 2, 1]
            bytes += (0..<size).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            do { _ = try ELFFile.parse(bytes: bytes) } catch is HCOSError {}
        }
        let valid = FakeELF.build(
            interpreter: "/lib64/ld-linux-x86-64.so.2", needed: ["libfoo.so.1"], runpath: "$ORIGIN",
            rpath: nil,
            soname: nil)
        for _ in 0..<2000 {
            var bytes = valid
            for _ in 0..<(1 + random.next() % 4) {
                bytes[Int(random.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: random.next())
            }
            do { _ = try ELFFile.parse(bytes: bytes) } catch is HCOSError {}
        }
    }

    @Test("rejects a DT_STRTAB address outside every PT_LOAD segment")
    func strtabOutsideLoad() throws {
        var bytes = FakeELF.build(needed: ["libc.so.6"])
        // Move the only PT_LOAD's vaddr far away so DT_STRTAB no longer maps.
        let loadVaddr = 64 + 16
        for index in 0..<8 { bytes[loadVaddr + index] = index == 5 ? 0x7f : 0 }
        let error = try #require(throws: HCOSError.self) { try ELFFile.parse(bytes: bytes) }
        #expect(error.code == .corrupt)
        #expect(error.message.contains("DT_STRTAB"))
    }
}

@Suite("ELF dependency resolution")
struct DependencyResolverTests {
    @Test("resolves absolute symlink targets and merged-usr links inside the root")
    func resolveInRoot() throws {
        let root = try FakeRoot()
        defer { root.remove() }
        try root.symlink("/lib", to: "usr/lib")
        try root.symlink("/lib64", to: "usr/lib64")
        try root.mkdir("/usr/lib/x86_64-linux-gnu")
        try root.mkdir("/usr/lib64")
        try root.write("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", [1])
        try root.symlink(
            "/usr/lib64/ld-linux-x86-64.so.2", to: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")

        let resolver = DependencyResolver(root: root.path)
        let result = try resolver.resolveInRoot("/lib64/ld-linux-x86-64.so.2")
        #expect(result.finalPath == "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        #expect(result.linksTraversed == ["/lib64", "/usr/lib64/ld-linux-x86-64.so.2", "/lib"])

        // ".." cannot climb out of the root, and a link to "/" lands on the root itself.
        try root.symlink("/up", to: "../../../..")
        #expect(
            try resolver.resolveInRoot("/../../lib/x86_64-linux-gnu").finalPath
                == "/usr/lib/x86_64-linux-gnu")
        #expect(try resolver.resolveInRoot("/up/usr/lib64").finalPath == "/usr/lib64")
    }

    @Test("reports a path that exists on the host but not in the root as not found")
    func resolveMissing() throws {
        let root = try FakeRoot()
        defer { root.remove() }
        try root.symlink("/etc-link", to: "/etc/passwd")
        let error = try #require(throws: HCOSError.self) {
            try DependencyResolver(root: root.path).resolveInRoot("/etc-link")
        }
        #expect(error.code == .notFound)
    }

    @Test("reports a symlink loop instead of hanging")
    func symlinkLoop() throws {
        let root = try FakeRoot()
        defer { root.remove() }
        try root.symlink("/a", to: "b")
        try root.symlink("/b", to: "/a")
        #expect(throws: HCOSError.self) { try DependencyResolver(root: root.path).resolveInRoot("/a") }
    }

    @Test("keeps env, its interpreter, libc and every symlink on the way in a Debian-like root")
    func closureOfEnv() throws {
        let root = try FakeRoot.debianLike()
        defer { root.remove() }
        // libc found as an absolute symlink to its versioned name, as many libraries are.
        try root.copy(
            "/usr/lib/x86_64-linux-gnu/libc.so.6", to: "/usr/lib/x86_64-linux-gnu/libc-2.36.so")
        try root.symlink(
            "/usr/lib/x86_64-linux-gnu/libc.so.6", to: "/usr/lib/x86_64-linux-gnu/libc-2.36.so")

        let files = try DependencyResolver(root: root.path).closure(of: ["/bin/env"])
        #expect(
            files == [
                "/bin",
                "/lib",
                "/lib64",
                "/usr/bin/env",
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "/usr/lib/x86_64-linux-gnu/libc-2.36.so",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib64/ld-linux-x86-64.so.2",
            ])
    }

    @Test("fails naming the binary and library when a library exists only on the host")
    func libraryOnlyOnHost() throws {
        let root = try FakeRoot()
        defer { root.remove() }
        // Not merged-usr: /lib is a real, empty directory, and libc.so.6 points at the path where
        // the host (but not this root) has libc.
        try root.mkdir("/usr/bin")
        try root.mkdir("/usr/lib/x86_64-linux-gnu")
        try root.mkdir("/lib/x86_64-linux-gnu")
        try root.mkdir("/lib64")
        try root.copy("/usr/bin/env", to: "/usr/bin/env")
        try root.copy(
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", to: "/lib64/ld-linux-x86-64.so.2")
        try root.symlink("/usr/lib/x86_64-linux-gnu/libc.so.6", to: "/lib/x86_64-linux-gnu/libc.so.6")
        #expect(FileManager.default.fileExists(atPath: "/lib/x86_64-linux-gnu/libc.so.6"))

        let error = try #require(throws: HCOSError.self) {
            try DependencyResolver(root: root.path).closure(of: ["/usr/bin/env"])
        }
        #expect(error.code == .notFound)
        #expect(error.message.contains("/usr/bin/env"))
        #expect(error.message.contains("libc.so.6"))
    }

    @Test("fails naming the interpreter when it is missing from the root")
    func missingInterpreter() throws {
        let root = try FakeRoot()
        defer { root.remove() }
        try root.mkdir("/usr/bin")
        try root.copy("/usr/bin/env", to: "/usr/bin/env")
        let error = try #require(throws: HCOSError.self) {
            try DependencyResolver(root: root.path).closure(of: ["/usr/bin/env"])
        }
        #expect(error.code == .notFound)
        #expect(error.message.contains("/lib64/ld-linux-x86-64.so.2"))
    }

    @Test("searches DT_RUNPATH with $ORIGIN first and skips a library of another ELF class")
    func runpathAndOrigin() throws {
        let root = try FakeRoot.debianLike()
        defer { root.remove() }
        try root.mkdir("/opt/app/bin")
        try root.mkdir("/opt/app/lib")
        try root.write(
            "/opt/app/bin/tool",
            FakeELF.build(
                interpreter: "/lib64/ld-linux-x86-64.so.2", needed: ["libapp.so.1", "libc.so.6"],
                runpath: "$ORIGIN/../lib", rpath: "/nonexistent", soname: nil))
        try root.write(
            "/opt/app/lib/libapp.so.1.0", FakeELF.build(needed: ["libc.so.6"], soname: "libapp.so.1"))
        try root.symlink("/opt/app/lib/libapp.so.1", to: "libapp.so.1.0")
        // A 32-bit libc in the RUNPATH directory must be passed over, as ld.so does.
        try root.write("/opt/app/lib/libc.so.6", FakeELF.build(needed: [], elf32: true))
        // Scripts are kept as they are.
        try root.write("/opt/app/bin/run.sh", Array("#!/bin/sh\nexec tool\n".utf8))

        let files = try DependencyResolver(root: root.path).closure(of: [
            "/opt/app/bin/tool", "/opt/app/bin/run.sh",
        ])
        #expect(files.contains("/opt/app/lib/libapp.so.1"))
        #expect(files.contains("/opt/app/lib/libapp.so.1.0"))
        #expect(files.contains("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        #expect(files.contains("/opt/app/bin/run.sh"))
        #expect(!files.contains("/opt/app/lib/libc.so.6"))
        #expect(files == files.sorted() && Set(files).count == files.count)
    }
}

// MARK: - Helpers

/// A scratch directory standing in for an image root.
struct FakeRoot {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "hcos-root-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// Debian 12 layout: merged /usr, /lib64/ld-linux-x86-64.so.2 an absolute link, env and the
    /// host's loader and libc copied in.
    static func debianLike() throws -> FakeRoot {
        let root = try FakeRoot()
        try root.symlink("/bin", to: "usr/bin")
        try root.symlink("/lib", to: "usr/lib")
        try root.symlink("/lib64", to: "usr/lib64")
        try root.mkdir("/usr/bin")
        try root.mkdir("/usr/lib/x86_64-linux-gnu")
        try root.mkdir("/usr/lib64")
        try root.copy("/usr/bin/env", to: "/usr/bin/env")
        try root.copy(
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            to: "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        try root.copy("/usr/lib/x86_64-linux-gnu/libc.so.6", to: "/usr/lib/x86_64-linux-gnu/libc.so.6")
        try root.symlink(
            "/usr/lib64/ld-linux-x86-64.so.2", to: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        return root
    }

    func mkdir(_ inside: String) throws {
        try FileManager.default.createDirectory(
            atPath: path + inside, withIntermediateDirectories: true)
    }

    func write(_ inside: String, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path + inside))
    }

    func copy(_ hostPath: String, to inside: String) throws {
        try? FileManager.default.removeItem(atPath: path + inside)
        try FileManager.default.copyItem(atPath: hostPath, toPath: path + inside)
    }

    func symlink(_ inside: String, to target: String) throws {
        try? FileManager.default.removeItem(atPath: path + inside)
        try FileManager.default.createSymbolicLink(atPath: path + inside, withDestinationPath: target)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Builds minimal ELF files: one PT_LOAD covering the whole file, optional PT_INTERP, and a
/// PT_DYNAMIC whose DT_STRTAB is a virtual address inside that PT_LOAD.
enum FakeELF {
    static func build(
        interpreter: String? = nil, needed: [String], runpath: String? = nil, rpath: String? = nil,
        soname: String? = nil, elf32: Bool = false
    ) -> [UInt8] {
        let word = elf32 ? 4 : 8
        let headerSize = elf32 ? 52 : 64
        let phentsize = elf32 ? 32 : 56
        let base: UInt64 = 0x40_0000
        let phnum = interpreter == nil ? 2 : 3

        var strings: [UInt8] = [0]
        func add(_ text: String) -> UInt64 {
            let offset = UInt64(strings.count)
            strings += Array(text.utf8) + [0]
            return offset
        }
        var dynamic: [(UInt64, UInt64)] = needed.map { (1, add($0)) }
        if let runpath { dynamic.append((29, add(runpath))) }
        if let rpath { dynamic.append((15, add(rpath))) }
        if let soname { dynamic.append((14, add(soname))) }
        let interpBytes: [UInt8] = interpreter.map { Array($0.utf8) + [0] } ?? []

        let interpOffset = headerSize + phentsize * phnum
        let strtabOffset = interpOffset + interpBytes.count
        let dynamicOffset = strtabOffset + strings.count
        dynamic.append((5, base + UInt64(strtabOffset)))
        dynamic.append((10, UInt64(strings.count)))
        dynamic.append((0, 0))
        let dynamicSize = dynamic.count * 2 * word
        let total = dynamicOffset + dynamicSize

        var out: [UInt8] = []
        func put(_ value: UInt64, _ size: Int) {
            for index in 0..<size { out.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
        }
        out += [0x7f, 0x45, 0x4c, 0x46, elf32 ? 1 : 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8)
        put(3, 2)  // e_type ET_DYN
        put(elf32 ? 3 : 62, 2)  // e_machine
        put(1, 4)  // e_version
        put(0, word)  // e_entry
        put(UInt64(headerSize), word)  // e_phoff
        put(0, word)  // e_shoff
        put(0, 4)  // e_flags
        put(UInt64(headerSize), 2)
        put(UInt64(phentsize), 2)
        put(UInt64(phnum), 2)
        put(0, 2)
        put(0, 2)
        put(0, 2)

        func programHeader(type: UInt64, offset: Int, size: Int) {
            if elf32 {
                put(type, 4)
                put(UInt64(offset), 4)
                put(base + UInt64(offset), 4)
                put(base + UInt64(offset), 4)
                put(UInt64(size), 4)
                put(UInt64(size), 4)
                put(4, 4)
                put(1, 4)
            } else {
                put(type, 4)
                put(4, 4)
                put(UInt64(offset), 8)
                put(base + UInt64(offset), 8)
                put(base + UInt64(offset), 8)
                put(UInt64(size), 8)
                put(UInt64(size), 8)
                put(1, 8)
            }
        }
        programHeader(type: 1, offset: 0, size: total)
        if interpreter != nil { programHeader(type: 3, offset: interpOffset, size: interpBytes.count) }
        programHeader(type: 2, offset: dynamicOffset, size: dynamicSize)
        out += interpBytes + strings
        for (tag, value) in dynamic {
            put(tag, word)
            put(value, word)
        }
        return out
    }
}

/// xorshift64: reproducible noise for the corruption tests.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}
