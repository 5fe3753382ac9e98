import Bundle
import Digest
import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// A client of the OCI distribution specification v1.1 (the registry HTTP API, /v2/...),
/// limited to what pulling a bundle needs: resolve a manifest (following one index level),
/// stream a blob, and the token flow of the Docker registry auth spec on a 401.
final class RegistryClient {
    static let manifestTypes = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
    static let indexTypes: Set = [
        "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
    /// Registries must accept manifests of at least 4 MiB; we read no more than that.
    static let maximumManifest = 4 << 20

    let reference: OCIReference
    let fetcher: Fetcher
    let curl: CurlEasy
    let logger: Logger
    private var token: String?

    init(reference: OCIReference, fetcher: Fetcher, curl: CurlEasy) {
        self.reference = reference
        self.fetcher = fetcher
        self.curl = curl
        self.logger = fetcher.logger.with([("source", reference.description)])
    }

    /// `http` for loopback and the configured insecure registries, `https` otherwise.
    var baseURL: String {
        let host = reference.registry
        let name = host.hasPrefix("[") ? String(host.prefix { $0 != "]" }) + "]" : String(host.prefix { $0 != ":" })
        let insecure =
            ["localhost", "127.0.0.1", "[::1]"].contains(name) || fetcher.insecureRegistries.contains(host)
            || fetcher.insecureRegistries.contains(name)
        // docker.io names the registry whose API lives at registry-1.docker.io.
        let api = host == "docker.io" ? "registry-1.docker.io" : host
        return "\(insecure ? "http" : "https")://\(api)/v2/\(reference.repository)"
    }

    func fetchBundle(to destination: String, progress: (FetchProgress) -> Void) throws -> FetchResult {
        let manifest = try resolveManifest()
        let layer = try manifest.bundleLayer(reference)
        logger.info(
            "bundle blob", [("digest", layer.digest), ("size", "\(layer.size)"), ("title", layer.title ?? "-")])
        if let done = try alreadyComplete(destination, layer: layer) { return done }
        let url = "\(baseURL)/blobs/\(layer.digest)"
        return try authorized { headers in
            try ResumableDownload(
                curl: curl, request: fetcher.request(url, headers: headers), destination: destination,
                identity: layer.digest, expected: .init(digest: layer.digest, size: layer.size),
                reserve: fetcher.reserve, logger: logger
            ).run(progress: progress)
        }
    }

    /// A retried fetch whose destination already holds the blob downloads nothing.
    private func alreadyComplete(_ destination: String, layer: Descriptor) throws -> FetchResult? {
        guard let file = try? FileDescriptor(path: destination, flags: O_RDONLY), (try? file.size()) == layer.size,
            "sha256:" + SHA256.hex(try SHA256.hash(file: destination)) == layer.digest
        else { return nil }
        logger.info("the destination already holds the bundle blob", [("path", destination)])
        return FetchResult(path: destination, size: layer.size, resumedFrom: layer.size, digest: layer.digest)
    }

    /// GET the manifest of the reference; an index (multi-platform list) is followed one level
    /// to the entry that is an hcos bundle.
    func resolveManifest() throws -> Manifest {
        let top = try getManifest(reference.reference)
        guard top.isIndex else { return top }
        let entries = top.manifests ?? []
        let candidates = entries.filter { $0.artifactType == BundleArtifact.config }
        guard let entry = candidates.count == 1 ? candidates.first : (entries.count == 1 ? entries.first : nil) else {
            throw HCOSError(
                .ambiguous,
                "\(reference): the index lists \(entries.count) manifests and not exactly one with artifactType \(BundleArtifact.config)"
            )
        }
        let child = try getManifest(entry.digest)
        guard !child.isIndex else {
            throw HCOSError(.unsupported, "\(reference): nested image indexes are not supported")
        }
        return child
    }

    private func getManifest(_ ref: String) throws -> Manifest {
        let url = "\(baseURL)/manifests/\(ref)"
        let (head, bytes) = try authorized { headers in
            try getSmall(url, headers: headers + ["Accept: " + Self.manifestTypes.joined(separator: ", ")])
        }
        let digest = "sha256:" + SHA256.hex(try SHA256.hash(bytes))
        // Content addressing: a manifest asked for by digest must be exactly those bytes.
        if OCIReference.isSHA256Digest(ref), digest != ref {
            throw HCOSError(.corrupt, "GET \(url): the manifest's digest is \(digest), not the requested \(ref)")
        }
        if let claimed = head.header("docker-content-digest"), claimed.hasPrefix("sha256:"), claimed != digest {
            throw HCOSError(.corrupt, "GET \(url): the manifest's digest is \(digest), the registry says \(claimed)")
        }
        var manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: Data(bytes))
        } catch {
            throw HCOSError(.corrupt, "GET \(url): the manifest is not valid JSON: \(error)")
        }
        manifest.contentType = head.header("content-type")
        manifest.digest = digest
        logger.debug("manifest", [("reference", ref), ("digest", digest)])
        return manifest
    }

    /// A small response (a manifest, a token) read into memory, at most `maximumManifest` bytes.
    private func getSmall(_ url: String, headers: [String]) throws -> (HTTPResponseHead, [UInt8]) {
        var body: [UInt8] = []
        var failure: HTTPStatusError?
        let head = try curl.get(
            fetcher.request(url, headers: headers),
            onHead: { head in
                if head.status != 200 { failure = HTTPStatusError(head: head, url: url, body: []) }
            },
            onBody: { bytes in
                guard body.count + bytes.count <= Self.maximumManifest else {
                    throw HCOSError(.corrupt, "GET \(url): the response is larger than \(Self.maximumManifest) bytes")
                }
                body += bytes
            })
        if var failure {
            failure.body = body
            throw failure
        }
        return (head, body)
    }

    /// Runs `body` with the authorization headers; on a 401 with a Bearer challenge, fetches a
    /// token and runs it once more.
    private func authorized<T>(_ body: ([String]) throws -> T) throws -> T {
        do {
            return try body(token.map { ["Authorization: Bearer \($0)"] } ?? [])
        } catch let error as HTTPStatusError where error.head.status == 401 {
            let header = error.head.header("www-authenticate") ?? ""
            guard let challenge = AuthChallenge.parse(header), challenge.scheme.lowercased() == "bearer",
                let realm = challenge.parameters["realm"]
            else {
                throw HCOSError(
                    .unsupported,
                    "GET \(error.url): 401 Unauthorized, and the challenge '\(header)' is not a Bearer token challenge (only anonymous token auth is supported)"
                )
            }
            token = try fetchToken(realm: realm, challenge: challenge)
            return try body(token.map { ["Authorization: Bearer \($0)"] } ?? [])
        }
    }

    /// The token endpoint of the Docker registry token authentication spec, asked anonymously.
    private func fetchToken(realm: String, challenge: AuthChallenge) throws -> String {
        var query: [String] = []
        if let service = challenge.parameters["service"] { query.append("service=\(Self.percentEncode(service))") }
        let scope = challenge.parameters["scope"] ?? "repository:\(reference.repository):pull"
        query.append("scope=\(Self.percentEncode(scope))")
        let url = realm + (realm.contains("?") ? "&" : "?") + query.joined(separator: "&")
        logger.debug("fetching a registry token", [("realm", realm)])
        let (_, bytes) = try getSmall(url, headers: [])
        struct TokenResponse: Decodable {
            var token: String?
            var accessToken: String?
            enum CodingKeys: String, CodingKey {
                case token
                case accessToken = "access_token"
            }
        }
        guard let decoded = try? JSONDecoder().decode(TokenResponse.self, from: Data(bytes)),
            let token = decoded.token ?? decoded.accessToken, !token.isEmpty
        else {
            throw HCOSError(.corrupt, "GET \(realm): the token response has no token")
        }
        return token
    }

    static func percentEncode(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                result.append(Character(Unicode.Scalar(byte)))
            default:
                let hex = Array("0123456789ABCDEF")
                result += "%\(hex[Int(byte >> 4)])\(hex[Int(byte & 0xf)])"
            }
        }
        return result
    }
}

/// An OCI content descriptor (image-spec descriptor.md).
struct Descriptor: Decodable, Sendable {
    var mediaType: String
    var digest: String
    var size: UInt64
    var artifactType: String?
    var annotations: [String: String]?

    var title: String? { annotations?["org.opencontainers.image.title"] }
}

/// An OCI image manifest or index (or their Docker v2 equivalents), the fields we read.
struct Manifest: Decodable, Sendable {
    var schemaVersion: Int?
    var mediaType: String?
    var artifactType: String?
    var config: Descriptor?
    var layers: [Descriptor]?
    var manifests: [Descriptor]?
    var contentType: String?
    var digest: String?

    enum CodingKeys: String, CodingKey {
        case schemaVersion, mediaType, artifactType, config, layers, manifests
    }

    var isIndex: Bool {
        RegistryClient.indexTypes.contains(mediaType ?? contentType ?? "") || (manifests != nil && layers == nil)
    }

    /// The one layer that is the bundle file.
    func bundleLayer(_ reference: OCIReference) throws -> Descriptor {
        let all = layers ?? []
        let bundles = all.filter { $0.mediaType == BundleArtifact.layer }
        guard bundles.count == 1, let layer = bundles.first else {
            if bundles.isEmpty {
                let found = all.map(\.mediaType).joined(separator: ", ")
                throw HCOSError(
                    .invalidArgument,
                    "\(reference) is not an hcos bundle artifact: no layer of media type \(BundleArtifact.layer) (layers: \(found.isEmpty ? "none" : found))"
                )
            }
            throw HCOSError(
                .ambiguous, "\(reference) has \(bundles.count) layers of media type \(BundleArtifact.layer)")
        }
        guard OCIReference.isSHA256Digest(layer.digest) else {
            throw HCOSError(.unsupported, "\(reference): layer digest \(layer.digest) is not a sha256 digest")
        }
        return layer
    }
}

/// A `WWW-Authenticate` challenge (RFC 9110 §11.6.1): `Bearer realm="...",service="...",scope="..."`.
/// Parameter values may be quoted strings with backslash escapes and commas inside.
struct AuthChallenge: Equatable, Sendable {
    var scheme: String
    var parameters: [String: String]

    static func parse(_ text: String) -> AuthChallenge? {
        let characters = Array(text)
        var index = 0
        func skipSpace() { while index < characters.count && characters[index].isWhitespace { index += 1 } }
        skipSpace()
        var scheme = ""
        while index < characters.count && !characters[index].isWhitespace {
            scheme.append(characters[index])
            index += 1
        }
        guard !scheme.isEmpty, !scheme.contains("=") else { return nil }
        var parameters: [String: String] = [:]
        while true {
            skipSpace()
            while index < characters.count && characters[index] == "," { index += 1 }
            skipSpace()
            guard index < characters.count else { break }
            var name = ""
            while index < characters.count && characters[index] != "=" && characters[index] != ","
                && !characters[index].isWhitespace
            {
                name.append(characters[index])
                index += 1
            }
            skipSpace()
            guard !name.isEmpty, index < characters.count, characters[index] == "=" else { return nil }
            index += 1
            skipSpace()
            var value = ""
            if index < characters.count && characters[index] == "\"" {
                index += 1
                var closed = false
                while index < characters.count {
                    let character = characters[index]
                    index += 1
                    if character == "\\" && index < characters.count {
                        value.append(characters[index])
                        index += 1
                    } else if character == "\"" {
                        closed = true
                        break
                    } else {
                        value.append(character)
                    }
                }
                guard closed else { return nil }
            } else {
                while index < characters.count && characters[index] != "," && !characters[index].isWhitespace {
                    value.append(characters[index])
                    index += 1
                }
            }
            parameters[name.lowercased()] = value
        }
        return AuthChallenge(scheme: scheme, parameters: parameters)
    }
}
