import Foundation
import HCOSCore
import Testing

@testable import GrubEnv

/// A synthetic "EFI partition": a zero-filled file with hcos env blocks placed at given offsets.
private final class ScratchPartition {
    let directory: String
    let path: String
    let file: FileDescriptor

    init(size: UInt64) throws {
        var template = Array((NSTemporaryDirectory() + "/hcos-env-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw HCOSError(.io, "mkdtemp failed") }
        directory = String(cString: made)
        path = directory + "/esp.img"
        file = try FileDescriptor(path: path, flags: O_RDWR | O_CREAT)
        try file.truncate(to: size)
    }

    func place(_ state: SlotState, copy: Int, at offset: UInt64) throws {
        try file.write(try state.block(copy: copy).serialized(), at: offset)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }
}

@Suite("GrubEnv")
struct GrubEnvTests {
    @Test("a block serializes to 1024 bytes padded with '#' and parses back in order")
    func blockRoundTrip() throws {
        var block = GrubEnvBlock()
        block["ORDER"] = "B A"
        block["saved_entry"] = "hcos"
        block["A_OK"] = "1"
        block["saved_entry"] = "other"
        let bytes = try block.serialized()
        #expect(bytes.count == 1024)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("# GRUB Environment Block\nORDER=B A\nsaved_entry=other\nA_OK=1\n#"))
        #expect(bytes.suffix(600).allSatisfy { $0 == UInt8(ascii: "#") })
        let parsed = try GrubEnvBlock(parsing: bytes)
        #expect(parsed == block)
        block["saved_entry"] = nil
        #expect(block.variables.map(\.name) == ["ORDER", "A_OK"])
    }

    @Test("backslashes and newlines in values are escaped as GRUB does")
    func escaping() throws {
        var block = GrubEnvBlock()
        block["x"] = "a\\b\nc"
        let bytes = try block.serialized()
        #expect(
            String(decoding: bytes.prefix(35), as: UTF8.self)
                == "# GRUB Environment Block\nx=a\\\\b\\\nc\n")
        #expect(try GrubEnvBlock(parsing: bytes)["x"] == "a\\b\nc")
    }

    @Test("a block written by grub-editenv parses, and ours is read by grub-editenv")
    func grubEditenvInterop() throws {
        let editenv = try requireHostTool("grub-editenv")
        let scratch = try ScratchPartition(size: 0)
        let path = scratch.directory + "/grubenv"
        try Command(editenv, [path, "create"]).run()
        try Command(editenv, [path, "set", "ORDER=A B", "weird=x\\y"]).run()
        let parsed = try GrubEnvBlock(parsing: try FileSystem.readBytes(path))
        #expect(parsed["ORDER"] == "A B")
        #expect(parsed["weird"] == "x\\y")

        var ours = GrubEnvBlock()
        ours["hcos_cmdline"] = "console=ttyS0 quiet"
        ours["line"] = "two\nlines"
        try FileSystem.writeDurably(try ours.serialized(), to: path)
        let listed = try Command(editenv, [path, "list"]).run().output
        #expect(listed.contains("hcos_cmdline=console=ttyS0 quiet\n"))
        #expect(listed.contains("line=two\nlines\n"))
    }

    @Test("content beyond the first 512 bytes is rejected, so a write stays within one sector")
    func tooLarge() throws {
        var block = GrubEnvBlock()
        block["big"] = String(repeating: "x", count: 480)
        #expect(throws: Never.self) { try block.serialized() }
        block["big"] = String(repeating: "x", count: 490)
        let error = #expect(throws: HCOSError.self) { try block.serialized() }
        #expect(error?.code == .noSpace)
        block["big"] = nil
        block["bad=name"] = "1"
        #expect(throws: HCOSError.self) { try block.serialized() }
    }

    @Test("blocks of the wrong size, without the header or with an unterminated line are corrupt")
    func badBlocks() throws {
        let good = try GrubEnvBlock().serialized()
        #expect(throws: HCOSError.self) { try GrubEnvBlock(parsing: Array(good.prefix(512))) }
        var noHeader = good
        noHeader[2] = UInt8(ascii: "X")
        #expect(throws: HCOSError.self) { try GrubEnvBlock(parsing: noHeader) }
        var unterminated = GrubEnvBlock.header + Array("a=b".utf8)
        unterminated += [UInt8](repeating: 0, count: 1024 - unterminated.count)
        #expect(throws: HCOSError.self) { try GrubEnvBlock(parsing: unterminated) }
    }

    @Test("slot state round-trips through a block and keeps variables it does not own")
    func slotStateRoundTrip() throws {
        var state = SlotState.fresh
        #expect(state.order == [.a, .b] && state.a.good && !state.b.good && state.a.triesLeft == 0)
        state.order = [.b, .a]
        state.b = .init(good: false, triesLeft: 3)
        state.extraCommandLine = "console=ttyS0 hcos.debug"
        state.otherVariables = [.init("saved_entry", "0")]
        var block = try state.block(copy: 2)
        #expect(block["HCOS_ENV"] == "1" && block["HCOS_COPY"] == "2")
        #expect(
            block["ORDER"] == "B A" && block["B_TRY"] == "3" && block["B_OK"] == "0"
                && block["A_OK"] == "1")
        #expect(try SlotState(block: GrubEnvBlock(parsing: block.serialized())) == state)

        block["B_TRY"] = "4"
        #expect(throws: HCOSError.self) { try SlotState(block: block) }
        block["B_TRY"] = "1"
        block["ORDER"] = "A A"
        #expect(throws: HCOSError.self) { try SlotState(block: block) }
        block["ORDER"] = "A B"
        block["HCOS_ENV"] = nil
        #expect(throws: HCOSError.self) { try SlotState(block: block) }

        state.a.triesLeft = -1
        #expect(throws: HCOSError.self) { try state.block(copy: 1) }
        state.a.triesLeft = 0
        state.order = [.a]
        #expect(throws: HCOSError.self) { try state.block(copy: 1) }
    }

    @Test("the store finds both copies at odd sector offsets of a 4 MiB partition and saves both")
    func storeScanAndSave() throws {
        let part = try ScratchPartition(size: 4 << 20)
        let base: UInt64 = 1 << 20  // the partition starts 1 MiB into the "disk"
        let one = base + 7 * 512
        let two: UInt64 = (2 << 20) - 512  // straddles a 1 MiB read chunk of the scan
        try part.place(.fresh, copy: 1, at: one)
        try part.place(.fresh, copy: 2, at: two)
        let store = try GrubEnvStore(file: part.file, region: base..<(4 << 20))
        #expect(store.copy1Offset == one && store.copy2Offset == two)
        let loaded = try store.load()
        #expect(loaded.state == .fresh && loaded.copy == 1 && loaded.problems.isEmpty)

        var next = SlotState.fresh
        next.order = [.b, .a]
        next.b.triesLeft = 1
        try store.save(next)
        #expect(try store.load().state == next)
        let raw2 = try GrubEnvBlock(parsing: part.file.read(at: two, count: 1024))
        #expect(raw2["HCOS_COPY"] == "2" && raw2["ORDER"] == "B A")
        // Nothing around the blocks was touched.
        #expect(try part.file.read(at: one - 512, count: 512).allSatisfy { $0 == 0 })
        #expect(try part.file.read(at: two + 1024, count: 512).allSatisfy { $0 == 0 })
    }

    @Test("a torn or garbage copy 1 falls back to copy 2, and a save repairs it")
    func fallbackToCopy2() throws {
        let part = try ScratchPartition(size: 4 << 20)
        var state = SlotState.fresh
        state.extraCommandLine = "quiet"
        try part.place(state, copy: 1, at: 512 * 3)
        try part.place(state, copy: 2, at: 512 * 4001)
        // Torn: the second sector of copy 1 is garbage with a bogus variable line.
        try part.file.write(
            Array("\nA_OK=banana\n".utf8) + [UInt8](repeating: 0x5A, count: 400), at: 512 * 4)
        let store = try GrubEnvStore(file: part.file, region: 0..<(4 << 20))
        let loaded = try store.load()
        #expect(loaded.copy == 2 && loaded.state == state)
        #expect(loaded.problems.count == 1)
        try store.save(state)
        #expect(try store.load().copy == 1)

        // Garbage over the whole of copy 1: it cannot even be found, copy 2 still loads.
        try part.file.write([UInt8](repeating: 0xC3, count: 1024), at: 512 * 3)
        let damaged = try GrubEnvStore(file: part.file, region: 0..<(4 << 20))
        #expect(damaged.copy1Offset == nil)
        #expect(try damaged.load().copy == 2)
        let error = #expect(throws: HCOSError.self) { try damaged.save(state) }
        #expect(error?.code == .notFound)
    }

    @Test("two blocks claiming the same copy are ambiguous and no blocks at all are not found")
    func scanErrors() throws {
        let part = try ScratchPartition(size: 2 << 20)
        #expect(throws: HCOSError.self) { try GrubEnvStore(file: part.file, region: 0..<(2 << 20)) }
        try part.place(.fresh, copy: 1, at: 512)
        try part.place(.fresh, copy: 2, at: 4096)
        try part.place(.fresh, copy: 1, at: 65536 + 512)
        let error = #expect(throws: HCOSError.self) {
            try GrubEnvStore(file: part.file, region: 0..<(2 << 20))
        }
        #expect(error?.code == .ambiguous)
        // Outside the region the duplicate does not count.
        #expect(throws: Never.self) { try GrubEnvStore(file: part.file, region: 0..<65536) }
    }

    @Test("scanning a 128 MiB partition takes well under a second")
    func scanSpeed() throws {
        let part = try ScratchPartition(size: 128 << 20)
        try part.place(.fresh, copy: 1, at: 100 << 20)
        try part.place(.fresh, copy: 2, at: (100 << 20) + 4096)
        let start = ContinuousClock.now
        let store = try GrubEnvStore(file: part.file, region: 0..<(128 << 20))
        let elapsed = ContinuousClock.now - start
        #expect(store.copy1Offset == 100 << 20)
        #expect(elapsed < .seconds(1))
    }
}
