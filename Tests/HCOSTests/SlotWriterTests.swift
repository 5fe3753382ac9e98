import Agent
import Digest
import Foundation
import HCOSCore
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// os-agent's slot writer on a plain file standing in for the disk, with the slot at an offset
/// as on a real GPT disk: what lands in the slot, what stays untouched around it, and when a
/// slot counts as already holding an image.
@Suite("slot writer")
struct SlotWriterTests {
    static let chunk = SlotWriter.chunkSize

    /// A scratch directory with a "disk" file: 1 MiB before the slot, the slot, 1 MiB after.
    final class Scratch {
        let directory: String
        let disk: String
        let slot: PartitionRef

        init(slotSize: Int) throws {
            directory =
                FileManager.default.temporaryDirectory.appendingPathComponent(
                    "hcos-slotwriter-\(UUID().uuidString)"
                ).path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            disk = "\(directory)/disk.raw"
            let margin = 1 << 20
            try Data(repeating: 0xEE, count: margin + slotSize + margin).write(to: URL(fileURLWithPath: disk))
            slot = PartitionRef(label: "ROOT-B", path: disk, offset: UInt64(margin), size: UInt64(slotSize))
        }

        deinit { try? FileManager.default.removeItem(atPath: directory) }

        /// A source file: `prefix` bytes of something else, then `payload` (as inside a bundle).
        func source(_ payload: [UInt8], prefix: Int = 4096) throws -> (FileDescriptor, offset: UInt64) {
            let path = "\(directory)/bundle-\(UUID().uuidString)"
            try Data([UInt8](repeating: 0x42, count: prefix) + payload).write(to: URL(fileURLWithPath: path))
            return (try FileDescriptor(path: path, flags: O_RDONLY), UInt64(prefix))
        }

        func diskBytes() throws -> [UInt8] { try FileSystem.readBytes(disk) }

        /// Writes `source` into the slot under the size and digest of `payload` (what the signed
        /// manifest claims; the source may differ from it).
        func write(
            _ source: (FileDescriptor, offset: UInt64), claiming payload: [UInt8],
            progress: (UInt64) -> Void = { _ in }
        ) throws {
            try SlotWriter(target: slot).write(
                from: source.0, offset: source.offset, size: UInt64(payload.count),
                digest: try SlotWriterTests.digest(payload), progress: progress)
        }
    }

    static func payload(_ size: Int, seed: UInt8) -> [UInt8] {
        (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &+ $0 >> 12) }
    }

    static func digest(_ bytes: [UInt8]) throws -> String { SHA256.hex(try SHA256.hash(bytes)) }

    @Test(
        "a payload of several chunks (and a partial last one) lands in the slot byte for byte, nothing around it changes"
    )
    func writesThePayloadAndNothingElse() throws {
        let scratch = try Scratch(slotSize: 3 * Self.chunk)
        let payload = Self.payload(2 * Self.chunk + 12345, seed: 7)
        let source = try scratch.source(payload)
        let before = try scratch.diskBytes()
        let reported = Mutex<[UInt64]>([])
        try scratch.write(source, claiming: payload, progress: { done in reported.withLock { $0.append(done) } })

        let after = try scratch.diskBytes()
        let start = Int(scratch.slot.offset)
        #expect(Array(after[start..<start + payload.count]) == payload)
        #expect(after[..<start] == before[..<start])
        #expect(after[(start + payload.count)...] == before[(start + payload.count)...])
        let progress = reported.withLock { $0 }
        #expect(progress.last == UInt64(payload.count))
        #expect(progress == progress.sorted())
    }

    @Test("a source that does not match the digest it is written under is refused as corrupt")
    func aSourceThatChangedIsRefused() throws {
        let scratch = try Scratch(slotSize: 2 * Self.chunk)
        let payload = Self.payload(Self.chunk + 100, seed: 1)
        var changed = payload
        changed[Self.chunk + 50] ^= 0xFF
        let source = try scratch.source(changed)
        #expect {
            try scratch.write(source, claiming: payload)
        } throws: { error in
            (error as? HCOSError)?.code == .corrupt && "\(error)".contains("signed manifest")
        }
    }

    @Test("a source shorter than its manifest says is refused as truncated")
    func aTruncatedSourceIsRefused() throws {
        let scratch = try Scratch(slotSize: 2 * Self.chunk)
        let payload = Self.payload(Self.chunk + 100, seed: 2)
        let source = try scratch.source(Array(payload[..<(Self.chunk + 10)]))
        #expect {
            try scratch.write(source, claiming: payload)
        } throws: { error in
            (error as? HCOSError)?.code == .corrupt && "\(error)".contains("truncated")
        }
    }

    @Test("a slot holding the same image counts as holding it; one holding another is told apart without hashing it")
    func holdsComparesEndsBeforeHashingTheWholeSlot() throws {
        let scratch = try Scratch(slotSize: 4 * Self.chunk)
        let payload = Self.payload(3 * Self.chunk + 999, seed: 3)
        let digest = try Self.digest(payload)
        let (source, offset) = try scratch.source(payload)
        let writer = SlotWriter(target: scratch.slot)
        try writer.write(from: source, offset: offset, size: UInt64(payload.count), digest: digest, progress: { _ in })

        let hashed = Mutex(0)
        let count: (UInt64) -> Void = { _ in hashed.withLock { $0 += 1 } }
        #expect(
            writer.holds(digest: digest, size: UInt64(payload.count), source: source, offset: offset, progress: count))
        #expect(hashed.withLock { $0 } > 0, "the whole slot is hashed before it counts as holding the image")

        // Another image with the same beginning (as a bigger image built on the same root) and
        // another with the same end: neither is read whole.
        for (name, position) in [("last", payload.count - 10), ("first", 10)] {
            var other = payload
            other[position] ^= 0xFF
            let (otherSource, otherOffset) = try scratch.source(other)
            hashed.withLock { $0 = 0 }
            #expect(
                !writer.holds(
                    digest: try Self.digest(other), size: UInt64(other.count), source: otherSource,
                    offset: otherOffset, progress: count), "differs in its \(name) chunk")
            #expect(hashed.withLock { $0 } == 0, "differs in its \(name) chunk: told apart without hashing")
        }

        // The same ends but a change in the middle: only the full hash tells them apart.
        var middle = payload
        middle[Self.chunk + Self.chunk / 2] ^= 0xFF
        let (middleSource, middleOffset) = try scratch.source(middle)
        #expect(
            !writer.holds(
                digest: try Self.digest(middle), size: UInt64(middle.count), source: middleSource,
                offset: middleOffset))
    }

    @Test("an image larger than the slot is refused before a byte is written")
    func anImageLargerThanTheSlotIsRefused() throws {
        let scratch = try Scratch(slotSize: Self.chunk)
        let payload = Self.payload(Self.chunk + 1, seed: 4)
        let source = try scratch.source(payload)
        let before = try scratch.diskBytes()
        #expect {
            try scratch.write(source, claiming: payload)
        } throws: { error in
            (error as? HCOSError)?.code == .noSpace
        }
        #expect(try scratch.diskBytes() == before)
    }
}
