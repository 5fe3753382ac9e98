import Archive
import Foundation
import HCOSCore
import Testing

@Suite("cpio newc writer")
struct ArchiveTests {
    static let mtime = 1_700_000_000
    static let cpio = "/usr/bin/cpio"

    /// A tree with a regular file, an executable, a symlink, a nested and an empty directory.
    static func makeTree() throws -> String {
        let root = NSTemporaryDirectory() + "hcos-cpio-\(UUID().uuidString)"
        let manager = FileManager.default
        try manager.createDirectory(atPath: root + "/sub/deeper", withIntermediateDirectories: true)
        try manager.createDirectory(atPath: root + "/empty", withIntermediateDirectories: true)
        try manager.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
        try Data("hello\n".utf8).write(to: URL(fileURLWithPath: root + "/hello.txt"))
        try Data("#!/bin/sh\n".utf8).write(to: URL(fileURLWithPath: root + "/bin/tool"))
        try Data().write(to: URL(fileURLWithPath: root + "/sub/deeper/empty-file"))
        try Data((0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) }).write(
            to: URL(fileURLWithPath: root + "/sub/data"))
        try manager.createSymbolicLink(atPath: root + "/link", withDestinationPath: "hello.txt")
        try manager.createSymbolicLink(atPath: root + "/sub/abs", withDestinationPath: "/bin/tool")
        chmod(root + "/hello.txt", 0o644)
        chmod(root + "/bin/tool", 0o4755)
        chmod(root + "/sub/data", 0o600)
        chmod(root + "/empty", 0o700)
        return root
    }

    static func remove(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

    @Test("lists every entry in sorted depth-first order when read by cpio -it")
    func listedByCpio() throws {
        let tree = try Self.makeTree()
        defer { Self.remove(tree) }
        let archive = try CPIOWriter.archive(directory: tree, mtime: Self.mtime)
        let names = try Command(Self.cpio, ["-it", "--quiet"]).run(input: archive).output
            .split(separator: "\n").map(String.init)
        #expect(
            names == [
                "bin", "bin/tool", "empty", "hello.txt", "link", "sub", "sub/abs", "sub/data", "sub/deeper",
                "sub/deeper/empty-file",
            ])

        let long = try Command(Self.cpio, ["-itv", "--quiet"]).run(input: archive).output
        let lines = long.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("lrwxrwxrwx") && $0.hasSuffix("link -> hello.txt") })
        #expect(
            lines.contains {
                $0.hasPrefix("-rwsr-xr-x") && $0.contains("root") && $0.hasSuffix("bin/tool")
            })
        #expect(lines.contains { $0.hasPrefix("drwx------") && $0.hasSuffix("empty") })
    }

    @Test("extracts with cpio -idm to identical contents, modes, links and mtime")
    func extractedByCpio() throws {
        let tree = try Self.makeTree()
        let out = NSTemporaryDirectory() + "hcos-cpio-out-\(UUID().uuidString)"
        defer {
            Self.remove(tree)
            Self.remove(out)
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let archive = try CPIOWriter.archive(directory: tree, mtime: Self.mtime)
        try Command(Self.cpio, ["-idm", "--quiet"], workingDirectory: out).run(input: archive)

        for file in ["hello.txt", "bin/tool", "sub/data", "sub/deeper/empty-file"] {
            #expect(
                try FileSystem.readBytes(out + "/" + file) == FileSystem.readBytes(tree + "/" + file),
                "\(file)")
            var original = stat()
            var extracted = stat()
            stat(tree + "/" + file, &original)
            stat(out + "/" + file, &extracted)
            #expect(original.st_mode == extracted.st_mode, "\(file)")
            #expect(extracted.st_mtim.tv_sec == Int(Self.mtime), "\(file)")
        }
        let manager = FileManager.default
        #expect(try manager.destinationOfSymbolicLink(atPath: out + "/link") == "hello.txt")
        #expect(try manager.destinationOfSymbolicLink(atPath: out + "/sub/abs") == "/bin/tool")
        #expect(FileSystem.isDirectory(out + "/empty"))
    }

    @Test("produces byte-identical archives from the same tree, in memory and into a file")
    func deterministic() throws {
        let tree = try Self.makeTree()
        let path = NSTemporaryDirectory() + "hcos-cpio-\(UUID().uuidString).cpio"
        defer {
            Self.remove(tree)
            unlink(path)
        }
        let first = try CPIOWriter.archive(directory: tree, mtime: Self.mtime)
        let second = try CPIOWriter.archive(directory: tree, mtime: Self.mtime)
        #expect(first == second)

        let file = try FileDescriptor(path: path, flags: O_RDWR | O_CREAT | O_TRUNC)
        let length = try CPIOWriter.archive(directory: tree, mtime: Self.mtime, to: file)
        #expect(length == UInt64(first.count))
        #expect(try FileSystem.readBytes(path) == first)

        #expect(try CPIOWriter.archive(directory: tree, mtime: Self.mtime + 1) != first)
    }

    @Test("encodes newc headers, 4-byte alignment and the TRAILER!!! record as the kernel expects")
    func format() throws {
        var writer = try CPIOWriter(mtime: 0x6553_F100)
        try writer.append(.file("/init", contents: Array("abcde".utf8), permissions: 0o755))
        let archive = try writer.finish()

        let header = String(decoding: archive[0..<110], as: UTF8.self)
        func field(_ index: Int) -> String {
            let start = header.index(header.startIndex, offsetBy: 6 + index * 8)
            return String(header[start..<header.index(start, offsetBy: 8)])
        }
        #expect(header.hasPrefix("070701"))
        #expect(field(0) == "00000001")  // ino
        #expect(field(1) == "000081ED")  // S_IFREG | 0755
        #expect(field(4) == "00000001")  // nlink
        #expect(field(5) == "6553F100")  // mtime
        #expect(field(6) == "00000005")  // filesize
        #expect(field(11) == "00000005")  // namesize: "init" + NUL
        // 110 + 5 name bytes -> padded to 116, then 5 data bytes -> padded to 124.
        #expect(Array(archive[110..<116]) == Array("init".utf8) + [0, 0])
        #expect(Array(archive[116..<124]) == Array("abcde".utf8) + [0, 0, 0])
        let trailer = String(decoding: archive[124..<(124 + 110 + 11)], as: UTF8.self)
        #expect(trailer.hasPrefix("070701"))
        #expect(trailer.hasSuffix("TRAILER!!!\0"))
        #expect(archive.count % 4 == 0)
        #expect(archive.count == 124 + 124)  // trailer: 110 + 11 name bytes, padded
    }

    @Test("writes character device nodes with their major and minor numbers")
    func deviceNodes() throws {
        var writer = try CPIOWriter(mtime: Self.mtime)
        try writer.append(.directory("dev"))
        try writer.append(.characterDevice("dev/console", major: 5, minor: 1))
        try writer.append(.characterDevice("dev/null", major: 1, minor: 3, permissions: 0o666))
        try writer.append(.symlink("sbin/init", target: "/bin/sh"))
        let archive = try writer.finish()
        let lines = try Command(Self.cpio, ["-itv", "--quiet"]).run(input: archive).output
            .split(separator: "\n").map { $0.split(separator: " ").joined(separator: " ") }
        #expect(
            lines.contains {
                $0.hasPrefix("crw------- 1 root root 5, 1 ") && $0.hasSuffix(" dev/console")
            })
        #expect(
            lines.contains { $0.hasPrefix("crw-rw-rw- 1 root root 1, 3 ") && $0.hasSuffix(" dev/null") })
        #expect(lines.contains { $0.hasSuffix("sbin/init -> /bin/sh") })
    }

    @Test("puts dev/console and its parent directory in front of an archive with prepending")
    func prependedConsole() throws {
        let tree = try Self.makeTree()
        defer { Self.remove(tree) }
        let archive = try CPIOWriter.archive(directory: tree, mtime: Self.mtime)
        let combined = try CPIOWriter.prepending(
            characterDevice: "dev/console", major: 5, minor: 1, mode: 0o600, mtime: Self.mtime,
            to: archive)
        #expect(combined.suffix(archive.count) == archive[...])
        let names = try Command(Self.cpio, ["-it", "--quiet"]).run(input: combined).output
            .split(separator: "\n").map(String.init)
        // GNU cpio stops at the first trailer (the kernel reads on into the tree): the front
        // archive holds the directory, then the node.
        #expect(names.prefix(2) == ["dev", "dev/console"])
    }

    @Test("appends extra entries after the tree")
    func appendingExtra() throws {
        let tree = try Self.makeTree()
        defer { Self.remove(tree) }
        let archive = try CPIOWriter.archive(
            directory: tree, mtime: Self.mtime,
            appending: [.directory("dev"), .characterDevice("dev/console", major: 5, minor: 1)])
        let names = try Command(Self.cpio, ["-it", "--quiet"]).run(input: archive).output
            .split(separator: "\n").map(String.init)
        #expect(names.suffix(2) == ["dev", "dev/console"])
        #expect(names.count == 12)
    }

    @Test("rejects an mtime that newc's 32-bit field cannot hold")
    func mtimeRange() {
        #expect(throws: HCOSError.self) { try CPIOWriter(mtime: -1) }
        #expect(throws: HCOSError.self) { try CPIOWriter(mtime: 1 << 32) }
    }

    @Test("rejects empty names and appends after finish")
    func invalidUse() throws {
        var writer = try CPIOWriter(mtime: 0)
        #expect(throws: HCOSError.self) { try writer.append(.directory("/")) }
        #expect(throws: HCOSError.self) { try writer.append(.file("TRAILER!!!", contents: [])) }
        try writer.finish()
        #expect(throws: HCOSError.self) { try writer.append(.directory("etc")) }
    }
}
