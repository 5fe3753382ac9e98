import Digest
import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// What an update bundle carries (DESIGN §4). The manifest is signed; each payload is named by
/// its SHA-256 digest, so the signature covers every byte a node will write.
public struct BundleManifest: Codable, Equatable, Sendable {
    public struct Payload: Codable, Equatable, Sendable {
        /// "kernel", "initramfs" or "rootfs"
        public var name: String
        /// Offset from the start of the payload area.
        public var offset: UInt64
        public var size: UInt64
        public var sha256: String
    }

    public var format: Int
    public var version: String
    public var architecture: String
    public var kernelVersion: String
    public var rootFormat: String
    public var minimumAgentVersion: String
    /// The slot's kernel arguments (written to its `slot.cfg`; grub.cfg adds the slot identity).
    public var commandLine: String?
    public var payloads: [Payload]

    public init(
        format: Int, version: String, architecture: String, kernelVersion: String, rootFormat: String,
        minimumAgentVersion: String, commandLine: String? = nil, payloads: [Payload] = []
    ) {
        self.format = format
        self.version = version
        self.architecture = architecture
        self.kernelVersion = kernelVersion
        self.rootFormat = rootFormat
        self.minimumAgentVersion = minimumAgentVersion
        self.commandLine = commandLine
        self.payloads = payloads
    }

    public func payload(_ name: String) -> Payload? { payloads.first { $0.name == name } }
}

/// The update bundle file format (format 1): everything a node must check comes first, so a
/// streaming reader verifies the signature before it reads, let alone writes, any payload.
///
///     0       "HCOSBNDL"
///     8       format, u32 little-endian (1)
///     12      manifest length M, u32 little-endian
///     16      manifest: JSON, sorted keys
///     16+M    Ed25519 signature (64 bytes) over bytes 0 ..< 16+M
///     80+M    payloads, back to back, as the manifest lists them
public enum UpdateBundle {
    public static let magic = Array("HCOSBNDL".utf8)
    public static let format: UInt32 = 1
    static let maximumManifest = 1 << 20

    /// Writes a signed bundle to `output` (temporary file, fsync, rename).
    public static func write(
        manifest base: BundleManifest, payloads: [(name: String, path: String)], privateKey: [UInt8], to output: String
    ) throws -> BundleManifest {
        var manifest = base
        manifest.payloads = []
        var offset: UInt64 = 0
        for payload in payloads {
            let size = try FileDescriptor(path: payload.path, flags: O_RDONLY).size()
            let digest = SHA256.hex(try SHA256.hash(file: payload.path))
            manifest.payloads.append(.init(name: payload.name, offset: offset, size: size, sha256: digest))
            offset += size
        }
        let header = try signedHeader(manifest, privateKey: privateKey)
        let temporary = "\(output).tmp.\(getpid())"
        do {
            let file = try FileDescriptor(path: temporary, flags: O_WRONLY | O_CREAT | O_TRUNC)
            try file.write(header, at: 0)
            var position = UInt64(header.count)
            for payload in payloads {
                let input = try FileDescriptor(path: payload.path, flags: O_RDONLY)
                var done: UInt64 = 0
                while true {
                    let chunk = try input.read(at: done, count: 1 << 20)
                    if chunk.isEmpty { break }
                    try file.write(chunk, at: position)
                    position += UInt64(chunk.count)
                    done += UInt64(chunk.count)
                }
            }
            try file.sync()
        }
        try Syscall.call("rename", output) { rename(temporary, output) }
        try FileSystem.syncDirectory(FileSystem.parent(of: output))
        return manifest
    }

    static func signedHeader(_ manifest: BundleManifest, privateKey: [UInt8]) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = Array(try encoder.encode(manifest))
        var header = magic + littleEndian(format) + littleEndian(UInt32(json.count)) + json
        header += try Ed25519.sign(header, privateKey: privateKey)
        return header
    }

    static func littleEndian(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8((value >> (8 * $0)) & 0xff) } }

    /// A bundle's verified head: the manifest, and where the payload area starts.
    public struct Head: Sendable {
        public var manifest: BundleManifest
        public var payloadStart: UInt64
        /// Index of the trusted key that signed it.
        public var signer: Int
    }

    /// Reads and verifies the head of a bundle. Errors say what is wrong: not a bundle, an
    /// unsupported format, a truncated or malformed manifest, a signature no trusted key made.
    public static func readHead(_ file: FileDescriptor, trustedKeys: [[UInt8]]) throws -> Head {
        let fixed = try file.read(at: 0, count: 16)
        guard fixed.count == 16, Array(fixed[0..<8]) == magic else {
            throw HCOSError(.corrupt, "\(file.path) is not an hcos update bundle (bad magic)")
        }
        let version = UInt32(fixed[8]) | UInt32(fixed[9]) << 8 | UInt32(fixed[10]) << 16 | UInt32(fixed[11]) << 24
        guard version == format else {
            throw HCOSError(
                .unsupported, "\(file.path): bundle format \(version) is not supported (this agent reads \(format))")
        }
        let length = Int(UInt32(fixed[12]) | UInt32(fixed[13]) << 8 | UInt32(fixed[14]) << 16 | UInt32(fixed[15]) << 24)
        guard length > 0, length <= maximumManifest else {
            throw HCOSError(.corrupt, "\(file.path): manifest length \(length) is out of range")
        }
        let rest = try file.read(at: 16, count: length + Ed25519.signatureLength)
        guard rest.count == length + Ed25519.signatureLength else {
            throw HCOSError(.corrupt, "\(file.path) is truncated inside its header")
        }
        let signed = fixed + rest[0..<length]
        let signature = Array(rest[length...])
        guard let signer = trustedKeys.firstIndex(where: { Ed25519.verify(signature, of: signed, publicKey: $0) })
        else {
            throw HCOSError(.corrupt, "\(file.path): the bundle signature does not match any trusted key")
        }
        let manifest: BundleManifest
        do {
            manifest = try JSONDecoder().decode(BundleManifest.self, from: Data(rest[0..<length]))
        } catch {
            throw HCOSError(.corrupt, "\(file.path): the manifest is malformed: \(error)")
        }
        return Head(manifest: manifest, payloadStart: UInt64(16 + length + Ed25519.signatureLength), signer: signer)
    }

    /// Checks every payload's size and digest (streaming, bounded memory).
    public static func verifyPayloads(_ file: FileDescriptor, head: Head) throws {
        let size = try file.size()
        for payload in head.manifest.payloads {
            let start = head.payloadStart + payload.offset
            guard start + payload.size <= size else {
                throw HCOSError(
                    .corrupt, "\(file.path) is truncated: payload \(payload.name) ends past the end of the file")
            }
            let digest = SHA256.hex(try SHA256.hash(file: file.path, range: start..<start + payload.size))
            guard digest == payload.sha256 else {
                throw HCOSError(
                    .corrupt,
                    "\(file.path): payload \(payload.name) has digest \(digest), the manifest says \(payload.sha256)")
            }
        }
    }
}

/// Key files: one line, `hcos-ed25519-private BASE64` or `hcos-ed25519-public BASE64`.
public enum BundleKeys {
    public static func write(_ key: [UInt8], kind: String, to path: String, mode: mode_t) throws {
        try FileSystem.writeDurably("hcos-ed25519-\(kind) \(Data(key).base64EncodedString())\n", to: path, mode: mode)
    }

    public static func read(_ path: String, kind: String) throws -> [UInt8] {
        let text = try FileSystem.readString(path).trimmed()
        let parts = text.split(separator: " ")
        guard parts.count == 2, parts[0] == "hcos-ed25519-\(kind)", let data = Data(base64Encoded: String(parts[1])),
            data.count == Ed25519.keyLength
        else {
            throw HCOSError(
                .invalidArgument, "\(path) is not an hcos \(kind) key (expected 'hcos-ed25519-\(kind) BASE64')")
        }
        return Array(data)
    }
}
