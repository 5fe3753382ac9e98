import Digest
import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// The media types of an update bundle stored as an OCI artifact (image-spec v1.1 "artifacts"
/// guidance): an image manifest whose `artifactType` and config media type are `config`, with
/// exactly one layer of media type `layer` whose blob is the bundle file itself.
public enum BundleArtifact {
    public static let config = "application/vnd.hcos.bundle.config.v1+json"
    public static let layer = "application/vnd.hcos.bundle.v1"
    public static let imageManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let imageIndex = "application/vnd.oci.image.index.v1+json"
}

/// Writes a bundle as an OCI artifact inside an OCI image layout directory (image-spec
/// image-layout.md: `oci-layout`, `index.json`, `blobs/sha256/`), the form `skopeo copy
/// oci:DIR:VERSION docker://REGISTRY/REPO:VERSION` pushes to any registry. The bytes are
/// deterministic: no timestamps, JSON with sorted keys.
public enum BundleOCILayout {
    public struct Written: Sendable, Equatable {
        public var directory: String
        /// The tag the index names the manifest by (`org.opencontainers.image.ref.name`).
        public var version: String
        public var manifestDigest: String
        public var bundleDigest: String
        public var bundleSize: UInt64
    }

    struct Descriptor: Codable, Equatable {
        var mediaType: String
        var digest: String
        var size: UInt64
        var artifactType: String?
        var annotations: [String: String]?
    }

    struct Manifest: Codable, Equatable {
        var schemaVersion = 2
        var mediaType = BundleArtifact.imageManifest
        var artifactType = BundleArtifact.config
        var config: Descriptor
        var layers: [Descriptor]
        var annotations: [String: String]
    }

    struct Index: Codable, Equatable {
        var schemaVersion = 2
        var mediaType = BundleArtifact.imageIndex
        var manifests: [Descriptor]
    }

    /// What the config blob says: enough to tell what the artifact is without fetching the bundle.
    struct Config: Codable, Equatable {
        var version: String
        var architecture: String
        var kernelVersion: String
    }

    /// Writes `directory` (replacing an existing one) holding `bundle` as an artifact tagged with
    /// the bundle's version. The bundle is hard-linked into the layout when it can be, else copied.
    public static func write(bundle: String, to directory: String) throws -> Written {
        let manifest = try UpdateBundle.readManifestUnverified(FileDescriptor(path: bundle, flags: O_RDONLY))
        let temporary = "\(directory).tmp.\(getpid())"
        try? FileManager.default.removeItem(atPath: temporary)
        let blobs = "\(temporary)/blobs/sha256"
        try FileSystem.makeDirectories(blobs)

        let bundleHex = SHA256.hex(try SHA256.hash(file: bundle))
        let bundleSize = try FileDescriptor(path: bundle, flags: O_RDONLY).size()
        try placeBlob(bundle, at: "\(blobs)/\(bundleHex)")

        let config = try encode(
            Config(
                version: manifest.version, architecture: manifest.architecture, kernelVersion: manifest.kernelVersion))
        let configDescriptor = try writeBlob(config, mediaType: BundleArtifact.config, into: blobs)
        let bundleName = bundle.split(separator: "/").last.map(String.init) ?? bundle
        let artifact = try encode(
            Manifest(
                config: configDescriptor,
                layers: [
                    Descriptor(
                        mediaType: BundleArtifact.layer, digest: "sha256:\(bundleHex)", size: bundleSize,
                        annotations: ["org.opencontainers.image.title": bundleName])
                ],
                annotations: ["org.opencontainers.image.version": manifest.version]))
        var manifestDescriptor = try writeBlob(artifact, mediaType: BundleArtifact.imageManifest, into: blobs)
        manifestDescriptor.artifactType = BundleArtifact.config
        manifestDescriptor.annotations = ["org.opencontainers.image.ref.name": manifest.version]

        try FileSystem.writeDurably(Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: "\(temporary)/oci-layout")
        try FileSystem.writeDurably(try encode(Index(manifests: [manifestDescriptor])), to: "\(temporary)/index.json")
        try FileSystem.syncDirectory(blobs)
        try FileSystem.syncDirectory(FileSystem.parent(of: blobs))

        if FileManager.default.fileExists(atPath: directory) { try FileManager.default.removeItem(atPath: directory) }
        try Syscall.call("rename", directory) { rename(temporary, directory) }
        try FileSystem.syncDirectory(FileSystem.parent(of: directory))
        return Written(
            directory: directory, version: manifest.version, manifestDigest: manifestDescriptor.digest,
            bundleDigest: "sha256:\(bundleHex)", bundleSize: bundleSize)
    }

    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    private static func writeBlob(_ bytes: [UInt8], mediaType: String, into blobs: String) throws -> Descriptor {
        let hex = SHA256.hex(try SHA256.hash(bytes))
        try FileSystem.writeDurably(bytes, to: "\(blobs)/\(hex)")
        return Descriptor(mediaType: mediaType, digest: "sha256:\(hex)", size: UInt64(bytes.count))
    }

    /// A hard link costs no space; across file systems, a streamed copy.
    private static func placeBlob(_ source: String, at path: String) throws {
        if link(source, path) == 0 { return }
        let input = try FileDescriptor(path: source, flags: O_RDONLY)
        let output = try FileDescriptor(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC)
        var offset: UInt64 = 0
        while true {
            let chunk = try input.read(at: offset, count: 1 << 20)
            if chunk.isEmpty { break }
            try output.write(chunk, at: offset)
            offset += UInt64(chunk.count)
        }
        try output.sync()
    }
}

extension UpdateBundle {
    /// The manifest of a bundle, read without checking the signature: for tools that only label
    /// the file (the OCI layout writer). Anything that trusts the contents uses `readHead`.
    public static func readManifestUnverified(_ file: FileDescriptor) throws -> BundleManifest {
        let fixed = try file.read(at: 0, count: 16)
        guard fixed.count == 16, Array(fixed[0..<8]) == magic else {
            throw HCOSError(.corrupt, "\(file.path) is not an hcos update bundle (bad magic)")
        }
        let length = Int(UInt32(fixed[12]) | UInt32(fixed[13]) << 8 | UInt32(fixed[14]) << 16 | UInt32(fixed[15]) << 24)
        guard length > 0, length <= maximumManifest else {
            throw HCOSError(.corrupt, "\(file.path): manifest length \(length) is out of range")
        }
        let json = try file.read(at: 16, count: length)
        do {
            return try JSONDecoder().decode(BundleManifest.self, from: Data(json))
        } catch {
            throw HCOSError(.corrupt, "\(file.path): the manifest is malformed: \(error)")
        }
    }
}
