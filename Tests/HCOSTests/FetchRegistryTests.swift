import Foundation
import HCOSCore
import Testing

@testable import Bundle
@testable import Digest
@testable import Fetch

/// The OCI side: the layout `hcos build` writes, pushed with skopeo to a real registry
/// (docker-registry) and pulled back by the Fetcher; and a token-protected registry.
@Suite("OCI bundle artifacts")
struct FetchRegistryTests {
    /// A signed bundle and its OCI layout in a temporary directory.
    struct Fixture {
        let directory: String
        let bundle: String
        let layout: BundleOCILayout.Written

        init(version: String = "1.0.0") throws {
            directory = try FetchTestSupport.temporaryDirectory("fetch-oci")
            let payload = "\(directory)/rootfs"
            try Data(FetchTestSupport.bytes(2 << 20, seed: 7)).write(to: URL(fileURLWithPath: payload))
            bundle = "\(directory)/hcos-\(version).bundle"
            _ = try UpdateBundle.write(
                manifest: BundleManifest(
                    format: 1, version: version, architecture: "amd64", kernelVersion: "6.1.0-test",
                    rootFormat: "erofs", minimumAgentVersion: "1.0.0"),
                payloads: [("rootfs", payload)], privateKey: try Ed25519.generate().privateKey, to: bundle)
            layout = try BundleOCILayout.write(bundle: bundle, to: "\(directory)/hcos-\(version).oci")
        }

        var bundleBytes: [UInt8] { get throws { try Self.read(bundle) } }

        func blob(_ digest: String) throws -> [UInt8] {
            try Self.read("\(layout.directory)/blobs/sha256/\(digest.dropFirst(7))")
        }

        static func read(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

        func cleanUp() { try? FileManager.default.removeItem(atPath: directory) }
    }

    @Test("the OCI layout of a bundle is byte-for-byte deterministic and holds the bundle as its only layer")
    func layoutIsDeterministic() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let again = try BundleOCILayout.write(bundle: fixture.bundle, to: "\(fixture.directory)/again.oci")
        #expect(again.manifestDigest == fixture.layout.manifestDigest)
        let files = try FileManager.default.subpathsOfDirectory(atPath: fixture.layout.directory).sorted()
        #expect(files == (try FileManager.default.subpathsOfDirectory(atPath: again.directory).sorted()))
        for file in files where !FileSystem.isDirectory("\(again.directory)/\(file)") {
            #expect(
                try Fixture.read("\(again.directory)/\(file)") == Fixture.read("\(fixture.layout.directory)/\(file)"))
        }
        #expect(try Fixture.read("\(again.directory)/oci-layout") == Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8))

        let index = try JSONDecoder().decode(
            BundleOCILayout.Index.self, from: Data(try Fixture.read("\(again.directory)/index.json")))
        #expect(index.manifests.count == 1)
        #expect(index.manifests.first?.annotations?["org.opencontainers.image.ref.name"] == "1.0.0")
        #expect(index.manifests.first?.digest == fixture.layout.manifestDigest)
        let manifestBytes = try fixture.blob(fixture.layout.manifestDigest)
        #expect("sha256:" + SHA256.hex(try SHA256.hash(manifestBytes)) == fixture.layout.manifestDigest)
        let manifest = try JSONDecoder().decode(BundleOCILayout.Manifest.self, from: Data(manifestBytes))
        #expect(manifest.artifactType == BundleArtifact.config)
        #expect(manifest.config.mediaType == BundleArtifact.config)
        #expect(manifest.layers.count == 1)
        #expect(manifest.layers.first?.mediaType == BundleArtifact.layer)
        #expect(manifest.layers.first?.annotations?["org.opencontainers.image.title"] == "hcos-1.0.0.bundle")
        #expect(manifest.layers.first?.digest == fixture.layout.bundleDigest)
        #expect(try fixture.blob(fixture.layout.bundleDigest) == fixture.bundleBytes)
    }

    @Test("a layout pushed with skopeo to docker-registry is pulled by tag and by digest with the same bytes")
    func pullsFromDockerRegistry() throws {
        guard Command.exists("docker-registry"), Command.exists("skopeo") else {
            // CI installs both (scripts/setup); only a machine without the Debian packages skips.
            print("skipping: docker-registry or skopeo is not installed (apt-get install docker-registry skopeo)")
            return
        }
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let registry = try RegistryProcess()
        defer { registry.stop() }
        try Command(
            "skopeo",
            [
                "--insecure-policy", "copy", "--dest-tls-verify=false", "oci:\(fixture.layout.directory):1.0.0",
                "docker://\(registry.host)/hcos/bundle:1.0.0",
            ]
        ).run()
        let fetcher = Fetcher(logger: .silent)
        let expected = try fixture.bundleBytes

        let byTag = try fetcher.fetch(
            try UpdateSource.parse("\(registry.host)/hcos/bundle:1.0.0"), to: "\(fixture.directory)/by-tag",
            progress: { _ in })
        #expect(byTag.digest == fixture.layout.bundleDigest)
        #expect(byTag.size == UInt64(expected.count))
        #expect(try Fixture.read("\(fixture.directory)/by-tag") == expected)

        let byDigest = try fetcher.fetch(
            try UpdateSource.parse("\(registry.host)/hcos/bundle@\(fixture.layout.manifestDigest)"),
            to: "\(fixture.directory)/by-digest", progress: { _ in })
        #expect(byDigest.digest == fixture.layout.bundleDigest)
        #expect(try Fixture.read("\(fixture.directory)/by-digest") == expected)

        // A retry into a destination that already holds the blob downloads nothing.
        let again = try fetcher.fetch(
            try UpdateSource.parse("\(registry.host)/hcos/bundle:1.0.0"), to: "\(fixture.directory)/by-tag",
            progress: { _ in })
        #expect(again.resumedFrom == again.size)

        let missingTag = #expect(throws: HCOSError.self) {
            try fetcher.fetch(
                try UpdateSource.parse("\(registry.host)/hcos/bundle:9.9.9"), to: "\(fixture.directory)/x",
                progress: { _ in })
        }
        #expect(missingTag?.code == .notFound)
        #expect(
            missingTag?.message
                == "GET http://\(registry.host)/v2/hcos/bundle/manifests/9.9.9: 404 Not Found (MANIFEST_UNKNOWN: manifest unknown)"
        )
        let wrongDigest = "sha256:" + String(repeating: "0", count: 64)
        let missingDigest = #expect(throws: HCOSError.self) {
            try fetcher.fetch(
                try UpdateSource.parse("\(registry.host)/hcos/bundle@\(wrongDigest)"), to: "\(fixture.directory)/x",
                progress: { _ in })
        }
        #expect(missingDigest?.code == .notFound)
        #expect(missingDigest?.message.contains("manifests/\(wrongDigest): 404") == true)
    }

    /// A read-only registry over the layout: distribution API paths, Bearer token auth on /v2/,
    /// blobs redirected to a storage path (as registries on object storage do).
    static func tokenRegistry(_ fixture: Fixture, tamper: Bool = false, manifestForAnyDigest: Bool = false) throws
        -> TestHTTPServer
    {
        let index = try JSONDecoder().decode(
            BundleOCILayout.Index.self, from: Data(try Fixture.read("\(fixture.layout.directory)/index.json")))
        let tags = Dictionary(
            uniqueKeysWithValues: index.manifests.compactMap { entry in
                entry.annotations?["org.opencontainers.image.ref.name"].map { ($0, entry.digest) }
            })
        let blobs = fixture.layout.directory + "/blobs/sha256/"
        return try TestHTTPServer { request in
            let host = request.headers["host"] ?? ""
            if request.path.hasPrefix("/token?") {
                return .init(status: 200, body: Array(#"{"token":"t0k"}"#.utf8))
            }
            if request.path.hasPrefix("/storage/") {
                guard var bytes = try? Fixture.read(blobs + request.path.dropFirst(9)) else {
                    return .init(status: 404)
                }
                if tamper { bytes[bytes.count / 2] ^= 0x55 }
                return TestHTTPServer.files([request.path: bytes])(request)
            }
            guard request.headers["authorization"] == "Bearer t0k" else {
                let challenge =
                    #"Bearer realm="http://\#(host)/token",service="test-registry",scope="repository:hcos/bundle:pull""#
                return .init(
                    status: 401, headers: [("WWW-Authenticate", challenge), ("Content-Type", "application/json")],
                    body: Array(#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.utf8))
            }
            let prefix = "/v2/hcos/bundle/"
            if request.path.hasPrefix(prefix + "manifests/") {
                let reference = String(request.path.dropFirst(prefix.count + 10))
                let digest =
                    manifestForAnyDigest ? fixture.layout.manifestDigest : (tags[reference] ?? reference)
                guard let bytes = try? Fixture.read(blobs + digest.dropFirst(7)) else {
                    return .init(
                        status: 404,
                        body: Array(#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#.utf8))
                }
                return .init(status: 200, headers: [("Content-Type", BundleArtifact.imageManifest)], body: bytes)
            }
            if request.path.hasPrefix(prefix + "blobs/sha256:") {
                let hex = request.path.dropFirst(prefix.count + 13)
                return .init(status: 307, headers: [("Location", "http://\(host)/storage/\(hex)")])
            }
            return .init(status: 404)
        }
    }

    @Test("a 401 Bearer challenge is answered with an anonymous token, and a redirected blob is followed")
    func tokenAuthAndRedirect() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let server = try Self.tokenRegistry(fixture)
        defer { server.stop() }
        let destination = "\(fixture.directory)/pulled"
        let result = try Fetcher(logger: .silent).fetch(
            .oci(OCIReference(registry: "127.0.0.1:\(server.port)", repository: "hcos/bundle", tag: "1.0.0")),
            to: destination, progress: { _ in })
        #expect(result.digest == fixture.layout.bundleDigest)
        #expect(try Fixture.read(destination) == fixture.bundleBytes)
        let paths = server.requests.map(\.path)
        #expect(paths.first == "/v2/hcos/bundle/manifests/1.0.0")
        #expect(paths.contains("/token?service=test-registry&scope=repository%3Ahcos%2Fbundle%3Apull"))
        #expect(paths.last == "/storage/\(fixture.layout.bundleDigest.dropFirst(7))")
        #expect(server.requests.filter { $0.path.hasPrefix("/v2/") }.last?.headers["authorization"] == "Bearer t0k")
    }

    @Test("a blob whose bytes do not match its digest is .corrupt and its partial file is deleted")
    func corruptBlob() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let server = try Self.tokenRegistry(fixture, tamper: true)
        defer { server.stop() }
        let destination = "\(fixture.directory)/pulled"
        let error = #expect(throws: HCOSError.self) {
            try Fetcher(logger: .silent).fetch(
                .oci(OCIReference(registry: "127.0.0.1:\(server.port)", repository: "hcos/bundle", tag: "1.0.0")),
                to: destination, progress: { _ in })
        }
        #expect(error?.code == .corrupt)
        #expect(error?.message.contains("the manifest says") == true)
        #expect(error?.message.contains(fixture.layout.bundleDigest) == true)
        #expect(!FileManager.default.fileExists(atPath: destination))
        #expect(!FileManager.default.fileExists(atPath: destination + ".part"))
    }

    @Test("a manifest that does not hash to the digest it was asked for is refused as .corrupt")
    func manifestDigestMismatch() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let server = try Self.tokenRegistry(fixture, manifestForAnyDigest: true)
        defer { server.stop() }
        let asked = "sha256:" + String(repeating: "1", count: 64)
        let error = #expect(throws: HCOSError.self) {
            try Fetcher(logger: .silent).fetch(
                .oci(OCIReference(registry: "127.0.0.1:\(server.port)", repository: "hcos/bundle", digest: asked)),
                to: "\(fixture.directory)/pulled", progress: { _ in })
        }
        #expect(error?.code == .corrupt)
        #expect(
            error?.message
                == "GET http://127.0.0.1:\(server.port)/v2/hcos/bundle/manifests/\(asked): the manifest's digest is \(fixture.layout.manifestDigest), not the requested \(asked)"
        )
    }

    @Test("an artifact without an hcos bundle layer is refused with the layer types it has")
    func notABundleArtifact() throws {
        let manifest = Manifest(
            schemaVersion: 2, mediaType: BundleArtifact.imageManifest,
            layers: [
                Fetch.Descriptor(
                    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
                    digest: "sha256:" + String(repeating: "a", count: 64), size: 1)
            ])
        let reference = OCIReference(registry: "r.example.com", repository: "x", tag: "1")
        let error = #expect(throws: HCOSError.self) { try manifest.bundleLayer(reference) }
        #expect(error?.message.contains("application/vnd.oci.image.layer.v1.tar+gzip") == true)
    }
}
