import Digest
import Foundation
import HCOSCore
import Testing

@Suite("SHA-256")
struct DigestTests {
    @Test("hashes the FIPS 180-4 test vectors for the empty string and \"abc\"")
    func knownVectors() throws {
        #expect(
            SHA256.hex(try SHA256.hash([]))
                == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(
            SHA256.hex(try SHA256.hash(Array("abc".utf8)))
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test("gives the same digest whether data arrives in one update or many")
    func incremental() throws {
        let message = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        var hasher = try SHA256()
        for byte in message { try hasher.update([byte]) }
        let expected = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        #expect(try hasher.finalizeHex() == expected)
        #expect(SHA256.hex(try SHA256.hash(message)) == expected)
    }

    @Test("hashes a file larger than one chunk to the same digest as sha256sum")
    func fileMatchesSha256sum() throws {
        let path = try TemporaryFile.make(size: SHA256.chunkSize * 2 + 12345)
        defer { unlink(path) }
        let result = try Command("/usr/bin/sha256sum", [path]).run()
        let expected = String(result.output.prefix(64))
        #expect(SHA256.hex(try SHA256.hash(file: path)) == expected)
    }

    @Test("hashes a byte range of a file as the digest of exactly those bytes")
    func rangeHashing() throws {
        let size = SHA256.chunkSize + 5000
        let path = try TemporaryFile.make(size: size)
        defer { unlink(path) }
        let bytes = try FileSystem.readBytes(path)
        for range: Range<UInt64> in [0..<0, 0..<1, 100..<4196, 17..<UInt64(size), 0..<UInt64(size)] {
            let expected = try SHA256.hash(Array(bytes[Int(range.lowerBound)..<Int(range.upperBound)]))
            #expect(try SHA256.hash(file: path, range: range) == expected)
        }
    }

    @Test("refuses a range that runs past the end of the file")
    func rangePastEnd() throws {
        let path = try TemporaryFile.make(size: 100)
        defer { unlink(path) }
        #expect(throws: HCOSError.self) { try SHA256.hash(file: path, range: 50..<101) }
    }

    @Test("reports a missing file as an error")
    func missingFile() {
        #expect(throws: SystemError.self) { try SHA256.hash(file: "/nonexistent/hcos-digest-test") }
    }
}

private enum TemporaryFile {
    /// A file of pseudo-random but reproducible content.
    static func make(size: Int) throws -> String {
        let path = NSTemporaryDirectory() + "hcos-digest-\(UUID().uuidString)"
        var state: UInt32 = 2_463_534_242
        var bytes = [UInt8](repeating: 0, count: size)
        for index in bytes.indices {
            state ^= state << 13
            state ^= state >> 17
            state ^= state << 5
            bytes[index] = UInt8(truncatingIfNeeded: state)
        }
        try FileSystem.writeDurably(bytes, to: path)
        return path
    }
}
