import Foundation
import HCOSCore
import Testing

@testable import Bundle
@testable import Digest

@Suite("update bundle")
struct BundleTests {
    struct Fixture {
        let directory: String
        let keys: Ed25519.KeyPair
        let bundle: String

        init() throws {
            directory = NSTemporaryDirectory() + "hcos-bundle-" + UUID().uuidString.prefix(8)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            keys = try Ed25519.generate()
            var payloads: [(name: String, path: String)] = []
            for (name, size) in [("kernel", 3000), ("initramfs", 100), ("rootfs", 3 << 20)] {
                let path = "\(directory)/\(name)"
                let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ name.count) }
                try Data(bytes).write(to: URL(fileURLWithPath: path))
                payloads.append((name, path))
            }
            bundle = "\(directory)/test.bundle"
            _ = try UpdateBundle.write(
                manifest: BundleManifest(
                    format: 1, version: "2.0.0", architecture: "amd64", kernelVersion: "6.1.0-test",
                    rootFormat: "squashfs", minimumAgentVersion: "1.0.0"),
                payloads: payloads, privateKey: keys.privateKey, to: bundle)
        }

        func open() throws -> FileDescriptor { try FileDescriptor(path: bundle, flags: O_RDWR) }
        func cleanUp() { try? FileManager.default.removeItem(atPath: directory) }
    }

    @Test("Ed25519 signs and verifies; another key, another message or a flipped bit does not verify")
    func signatures() throws {
        let pair = try Ed25519.generate()
        let other = try Ed25519.generate()
        let message = Array("hcos".utf8)
        let signature = try Ed25519.sign(message, privateKey: pair.privateKey)
        #expect(Ed25519.verify(signature, of: message, publicKey: pair.publicKey))
        #expect(!Ed25519.verify(signature, of: message, publicKey: other.publicKey))
        #expect(!Ed25519.verify(signature, of: Array("hcoS".utf8), publicKey: pair.publicKey))
        var flipped = signature
        flipped[10] ^= 1
        #expect(!Ed25519.verify(flipped, of: message, publicKey: pair.publicKey))
        #expect(!Ed25519.verify([1, 2, 3], of: message, publicKey: pair.publicKey))
    }

    @Test("RFC 8032 test vector 1 (empty message) signs to the published signature")
    func rfc8032Vector() throws {
        func bytes(_ hex: String) -> [UInt8] {
            var result: [UInt8] = []
            var index = hex.startIndex
            while index < hex.endIndex {
                let next = hex.index(index, offsetBy: 2)
                result.append(UInt8(hex[index..<next], radix: 16) ?? 0)
                index = next
            }
            return result
        }
        let secret = bytes("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
        #expect(
            try Ed25519.publicKey(fromPrivate: secret)
                == bytes("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"))
        let signature = try Ed25519.sign([], privateKey: secret)
        #expect(
            SHA256.hex(signature)
                == "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        )
    }

    @Test("a bundle written with a key verifies with its public key, manifest and payloads intact")
    func roundTrip() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let file = try fixture.open()
        let head = try UpdateBundle.readHead(
            file, trustedKeys: [try Ed25519.generate().publicKey, fixture.keys.publicKey])
        #expect(head.signer == 1)
        #expect(head.manifest.version == "2.0.0")
        #expect(head.manifest.payloads.map(\.name) == ["kernel", "initramfs", "rootfs"])
        #expect(head.manifest.payload("rootfs")?.size == 3 << 20)
        try UpdateBundle.verifyPayloads(file, head: head)
    }

    @Test("a bundle signed by an untrusted key is refused before any payload is read")
    func untrustedKeyIsRefused() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        #expect {
            _ = try UpdateBundle.readHead(try fixture.open(), trustedKeys: [try Ed25519.generate().publicKey])
        } throws: { "\($0)".contains("signature does not match any trusted key") }
    }

    @Test("a changed manifest byte breaks the signature")
    func tamperedManifestIsRefused() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let file = try fixture.open()
        // "2.0.0" -> "3.0.0" inside the manifest JSON
        let header = try file.read(at: 0, count: 2048)
        let needle = Array("\"2.0.0\"".utf8)
        let at = try #require(
            (0..<(header.count - needle.count)).first { Array(header[$0..<$0 + needle.count]) == needle })
        try file.write(Array("\"3.0.0\"".utf8), at: UInt64(at))
        #expect(throws: HCOSError.self) { _ = try UpdateBundle.readHead(file, trustedKeys: [fixture.keys.publicKey]) }
    }

    @Test("a changed payload byte is caught by its digest, and a truncated bundle is named as truncated")
    func tamperedOrTruncatedPayloadIsRefused() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let file = try fixture.open()
        let head = try UpdateBundle.readHead(file, trustedKeys: [fixture.keys.publicKey])
        let rootfs = try #require(head.manifest.payload("rootfs"))
        let position = head.payloadStart + rootfs.offset + 12345
        let original = try file.read(at: position, count: 1)
        try file.write([original[0] ^ 0xff], at: position)
        #expect {
            try UpdateBundle.verifyPayloads(file, head: head)
        } throws: { "\($0)".contains("payload rootfs has digest") }
        try file.write(original, at: position)
        try file.truncate(to: try file.size() - 1)
        #expect {
            try UpdateBundle.verifyPayloads(file, head: head)
        } throws: { "\($0)".contains("truncated") }
    }

    @Test("a file that is not a bundle, or a bundle cut inside its header, gets a clear error")
    func notABundle() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let file = try fixture.open()
        try file.truncate(to: 40)
        #expect {
            _ = try UpdateBundle.readHead(file, trustedKeys: [fixture.keys.publicKey])
        } throws: { "\($0)".contains("truncated inside its header") }
        try file.write(Array("NOTABNDL".utf8), at: 0)
        #expect {
            _ = try UpdateBundle.readHead(file, trustedKeys: [fixture.keys.publicKey])
        } throws: { "\($0)".contains("not an hcos update bundle") }
    }

    @Test("key files round-trip, and a key of the wrong kind or size is refused")
    func keyFiles() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let path = "\(fixture.directory)/k.pub"
        try BundleKeys.write(fixture.keys.publicKey, kind: "public", to: path, mode: 0o644)
        #expect(try BundleKeys.read(path, kind: "public") == fixture.keys.publicKey)
        #expect(throws: HCOSError.self) { _ = try BundleKeys.read(path, kind: "private") }
        try "hcos-ed25519-public AAAA\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: HCOSError.self) { _ = try BundleKeys.read(path, kind: "public") }
    }
}
