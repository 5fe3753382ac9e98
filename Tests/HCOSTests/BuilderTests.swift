import Foundation
import HCOSCore
import Testing

@testable import Builder

@Suite("build configuration")
struct BuildConfigTests {
    @Test("the default configuration in image/hcos.conf parses")
    func defaultConfigParses() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("image/hcos.conf").path
        let config = try BuildConfig.load(path: path)
        #expect(config.rootFormat == .squashfs)
        #expect(config.packages.contains("containerd"))
        #expect(config.resolve(config.keepList).hasSuffix("image/keep.list"))
    }

    @Test("an unknown key is an error that names the key and the line")
    func unknownKeyIsAnError() {
        #expect {
            _ = try BuildConfig.parse("version = 1\nfrobnicate = yes\n", source: "my.conf")
        } throws: { error in
            "\(error)".contains("my.conf:2") && "\(error)".contains("unknown key 'frobnicate'")
        }
    }

    @Test("a disk size too small for the layout is refused with the size it needs")
    func tooSmallDiskIsRefused() {
        #expect {
            _ = try BuildConfig.parse("disk-size = 1G\n")
        } throws: { error in
            "\(error)".contains("too small") && "\(error)".contains("needs at least")
        }
    }

    @Test("malformed values are errors: a bad size, an unknown root format, a mismatched compression")
    func malformedValuesAreErrors() {
        #expect(throws: HCOSError.self) { _ = try BuildConfig.parse("slot-size = lots\n") }
        #expect(throws: HCOSError.self) { _ = try BuildConfig.parse("root-format = ext4\n") }
        #expect(throws: HCOSError.self) { _ = try BuildConfig.parse("root-format = erofs\nroot-compression = zstd\n") }
        #expect(throws: HCOSError.self) { _ = try BuildConfig.parse("version = 1.0 beta\n") }
        #expect(throws: HCOSError.self) { _ = try BuildConfig.parse("version = 1\nversion = 2\n") }
        #expect(throws: HCOSError.self) { _ = try BuildConfig.parse("no equals sign\n") }
    }

    @Test("sizes parse with binary units")
    func sizesParse() throws {
        let config = try BuildConfig.parse("disk-size = 4G\nesp-size = 64MiB\nslot-size = 512M\npersist-size = 128M\n")
        #expect(config.diskSize == 4 << 30)
        #expect(config.espSize == 64 << 20)
        #expect(config.slotSize == 512 << 20)
    }
}

@Suite("keep-list")
struct KeepListTests {
    @Test("globs match within a component, ** across components, and a directory keeps what is below it")
    func globsMatch() {
        #expect(KeepList.matches("/usr/bin/ls", "/usr/bin/ls"))
        #expect(!KeepList.matches("/usr/bin/ls", "/usr/bin/lsblk"))
        #expect(KeepList.matches("/usr/lib/udev/rules.d", "/usr/lib/udev/rules.d/99-systemd.rules"))
        #expect(KeepList.matches("/usr/lib/*/libc.so.*", "/usr/lib/x86_64-linux-gnu/libc.so.6"))
        #expect(!KeepList.matches("/usr/lib/*.so", "/usr/lib/x/y.so", orBelow: false))
        #expect(KeepList.matches("/usr/**/*.rules", "/usr/lib/udev/rules.d/50-udev-default.rules"))
        #expect(!KeepList.matches("/usr/bin", "/usr/sbin/x"))
    }

    @Test("keep and drop lines parse; anything else is an error naming the line")
    func parses() throws {
        let list = try KeepList.parse("# comment\n/usr/bin/ls\n\ndrop /usr/share/doc\n")
        #expect(list.keep.map(\.pattern) == ["/usr/bin/ls"])
        #expect(list.drop.map(\.pattern) == ["/usr/share/doc"])
        #expect(throws: HCOSError.self) { _ = try KeepList.parse("keep /usr/bin/ls\n") }
        #expect(throws: HCOSError.self) { _ = try KeepList.parse("usr/bin/ls\n") }
    }

    /// A small tree shaped like a merged-/usr Debian root, with a real dynamically linked binary.
    static func fakeRoot() throws -> String {
        let root = NSTemporaryDirectory() + "hcos-tailor-" + UUID().uuidString.prefix(8)
        let fm = FileManager.default
        for dir in ["usr/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/share/doc/x"] {
            try fm.createDirectory(atPath: "\(root)/\(dir)", withIntermediateDirectories: true)
        }
        for (link, target) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
            try fm.createSymbolicLink(atPath: "\(root)/\(link)", withDestinationPath: target)
        }
        try fm.copyItem(atPath: "/usr/bin/env", toPath: "\(root)/usr/bin/env")
        try fm.copyItem(
            atPath: "/usr/lib/x86_64-linux-gnu/libc.so.6", toPath: "\(root)/usr/lib/x86_64-linux-gnu/libc.so.6")
        try fm.copyItem(
            atPath: "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            toPath: "\(root)/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        // Debian's interpreter path is an absolute link: it must resolve inside the root.
        try fm.createSymbolicLink(
            atPath: "\(root)/usr/lib64/ld-linux-x86-64.so.2",
            withDestinationPath: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        try fm.createSymbolicLink(atPath: "\(root)/usr/bin/sh", withDestinationPath: "env")
        try "doc".write(toFile: "\(root)/usr/share/doc/x/README", atomically: true, encoding: .utf8)
        return root
    }

    @Test("tailoring keeps listed paths, link targets, shared libraries and the ELF interpreter, and drops the rest")
    func tailoringKeepsDependencies() throws {
        let root = try Self.fakeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let list = try KeepList.parse("/bin\n/lib\n/lib64\n/usr/bin/sh\n")
        let kept = try Tailor(staging: root, logger: .silent).select(list)
        #expect(kept.contains("/usr/bin/sh"))
        #expect(kept.contains("/usr/bin/env"))
        #expect(kept.contains("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        #expect(kept.contains("/usr/lib64/ld-linux-x86-64.so.2"))
        #expect(kept.contains("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
        #expect(!kept.contains("/usr/share/doc/x/README"))
    }

    @Test("a keep-list line that matches nothing is an error naming the line")
    func staleEntryIsAnError() throws {
        let root = try Self.fakeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let list = try KeepList.parse("/usr/bin/env\n/usr/bin/no-such-tool\n")
        #expect {
            _ = try Tailor(staging: root, logger: .silent).select(list)
        } throws: { error in
            "\(error)".contains("line 2") && "\(error)".contains("/usr/bin/no-such-tool")
        }
    }

    @Test("a drop line removes matching paths even when a keep line matched them")
    func dropWins() throws {
        let root = try Self.fakeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let list = try KeepList.parse("/usr/share\n/usr/bin/env\ndrop /usr/share/doc\n")
        let kept = try Tailor(staging: root, logger: .silent).select(list)
        #expect(!kept.contains("/usr/share/doc/x/README"))
        #expect(kept.contains("/usr/bin/env"))
    }
}

@Suite("hcos build input checks")
struct BuildInputTests {
    @Test("a build refuses an unwritable output directory before doing any work")
    func unwritableOutputIsRefused() throws {
        var options = Build.Options(
            output: "/proc/hcos-out", cache: NSTemporaryDirectory(), agentBinary: "/bin/true",
            imageDirectory: "/nonexistent")
        options.qcow2 = false
        var config = BuildConfig()
        config.baseDirectory =
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("image").path
        #expect {
            try Build(config: config, options: options, logger: .silent).preflight()
        } throws: { error in
            "\(error)".contains("/proc/hcos-out")
        }
    }

    @Test("a missing agent binary is named in the error")
    func missingAgentIsNamed() throws {
        let options = Build.Options(
            output: NSTemporaryDirectory() + "hcos-out-test", cache: NSTemporaryDirectory(),
            agentBinary: "/nonexistent/os-agent", imageDirectory: "/nonexistent")
        #expect {
            try Build(config: BuildConfig(), options: options, logger: .silent).preflight()
        } throws: { error in
            "\(error)".contains("/nonexistent/os-agent")
        }
    }
}
