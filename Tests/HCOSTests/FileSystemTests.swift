import Foundation
import HCOSCore
import Testing

@Suite("file helpers")
struct FileSystemTests {
    @Test("sameContents: equal files, a byte changed past the first MiB, another size, empty files")
    func sameContentsComparesEveryByte() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hcos-fs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func file(_ name: String, _ bytes: [UInt8]) throws -> String {
            let url = directory.appendingPathComponent(name)
            try Data(bytes).write(to: url)
            return url.path
        }
        let bytes = (0..<(2 << 20) + 77).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
        var changed = bytes
        changed[(1 << 20) + 5] ^= 0x01
        let original = try file("a", bytes)
        #expect(try FileSystem.sameContents(original, try file("b", bytes)))
        #expect(try !FileSystem.sameContents(original, try file("c", changed)))
        #expect(try !FileSystem.sameContents(original, try file("d", Array(bytes.dropLast()))))
        #expect(try FileSystem.sameContents(try file("e", []), try file("f", [])))
    }
}
