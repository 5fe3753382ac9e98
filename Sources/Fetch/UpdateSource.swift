import FoundationEssentials
import HCOSCore

/// Where os-agent gets an update bundle from.
public enum UpdateSource: Sendable, Equatable, CustomStringConvertible {
    /// A bundle file already on the node; read in place.
    case file(String)
    /// An http:// or https:// URL of the bundle file.
    case http(String)
    /// An OCI artifact in a registry (see `OCIReference`).
    case oci(OCIReference)

    /// `/path` or `./path` (or `../path`) is a file, `http://` and `https://` are URLs, and
    /// anything else must be an OCI reference with an explicit registry:
    /// `registry[:port]/repository[/...]:tag` or `registry[:port]/repository@sha256:<64 hex>`.
    public static func parse(_ text: String) throws -> UpdateSource {
        guard !text.isEmpty else {
            throw HCOSError(
                .invalidArgument, "empty update source (expected a path, an http(s) URL or an OCI reference)")
        }
        guard !text.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 0x20 || $0 == 0x7f } == true })
        else {
            throw HCOSError(.invalidArgument, "update source '\(text)' contains whitespace or control characters")
        }
        if text.hasPrefix("/") || text.hasPrefix("./") || text.hasPrefix("../") { return .file(text) }
        let lower = text.lowercased()
        for scheme in ["http://", "https://"] where lower.hasPrefix(scheme) {
            let rest = text.dropFirst(scheme.count)
            let host = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
            guard !host.isEmpty, !host.hasPrefix(":"), !host.hasPrefix("@") else {
                throw HCOSError(.invalidArgument, "update source '\(text)': the URL has no host")
            }
            return .http(text)
        }
        if let colon = text.firstIndex(of: ":"), text[colon...].hasPrefix("://") {
            throw HCOSError(
                .invalidArgument,
                "update source '\(text)': unsupported URL scheme '\(text[..<colon])' (use http, https, a path or an OCI reference)"
            )
        }
        do {
            return .oci(try OCIReference.parse(text))
        } catch let error as HCOSError {
            throw HCOSError(
                .invalidArgument,
                "update source '\(text)' is not a path (start it with / or ./), an http(s) URL, or an OCI reference: \(error.message)"
            )
        }
    }

    public var description: String {
        switch self {
        case .file(let path): path
        case .http(let url): url
        case .oci(let reference): reference.description
        }
    }
}

/// A reference to an artifact in an OCI registry, as in the distribution reference grammar
/// (github.com/distribution/reference): `registry[:port]/repository[:tag][@sha256:digest]`.
/// Unlike docker, the registry must be named: an OS update does not come from an implied default.
public struct OCIReference: Sendable, Equatable, CustomStringConvertible {
    /// Host with optional port: `registry.example.com`, `127.0.0.1:5000`, `[::1]:5000`.
    public var registry: String
    /// Path components, e.g. `hcos/bundle`.
    public var repository: String
    public var tag: String?
    /// `sha256:<64 lowercase hex>`; when set, it is what is fetched and the tag is informational.
    public var digest: String?

    public init(registry: String, repository: String, tag: String? = nil, digest: String? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// The manifest reference to ask the registry for: the digest if there is one, else the tag.
    public var reference: String { digest ?? tag ?? "latest" }

    public var description: String {
        var text = "\(registry)/\(repository)"
        if let tag { text += ":\(tag)" }
        if let digest { text += "@\(digest)" }
        return text
    }

    public static func parse(_ text: String) throws -> OCIReference {
        func invalid(_ why: String) -> HCOSError { HCOSError(.invalidArgument, "OCI reference '\(text)': \(why)") }
        var rest = Substring(text)
        var digest: String?
        if let at = rest.firstIndex(of: "@") {
            let value = String(rest[rest.index(after: at)...])
            guard isSHA256Digest(value) else {
                throw invalid("the digest must be sha256:<64 lowercase hex digits>, not '\(value)'")
            }
            digest = value
            rest = rest[..<at]
        }
        guard let slash = rest.firstIndex(of: "/") else {
            throw invalid(
                "expected registry/repository:tag (the registry must be named, e.g. registry.example.com/hcos/bundle:1.0.0)"
            )
        }
        let registry = String(rest[..<slash])
        guard isRegistry(registry) else {
            throw invalid(
                "'\(registry)' is not a registry host[:port] (name the registry explicitly, e.g. registry.example.com/\(rest))"
            )
        }
        var path = rest[rest.index(after: slash)...]
        var tag: String?
        // A colon after the last slash starts the tag (a colon before it belongs to the port).
        if let colon = path.lastIndex(of: ":"), !path[colon...].contains("/") {
            let value = String(path[path.index(after: colon)...])
            guard isTag(value) else {
                throw invalid("'\(value)' is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})")
            }
            tag = value
            path = path[..<colon]
        }
        let repository = String(path)
        guard !repository.isEmpty else { throw invalid("the repository name is empty") }
        for component in repository.split(separator: "/", omittingEmptySubsequences: false)
        where !isPathComponent(component) {
            throw invalid(
                "repository component '\(component)' must be lowercase letters and digits separated by '.', '_', '__' or '-'"
            )
        }
        guard tag != nil || digest != nil else {
            throw invalid(
                "name a tag (:1.0.0) or a digest (@sha256:...); an OS update is not fetched by an implied tag")
        }
        return OCIReference(registry: registry, repository: repository, tag: tag, digest: digest)
    }

    static func isSHA256Digest(_ text: String) -> Bool {
        guard text.hasPrefix("sha256:") else { return false }
        let hex = text.utf8.dropFirst(7)
        return hex.count == 64 && hex.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    static func isTag(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, bytes.count <= 128, isWord(first) else { return false }
        return bytes.allSatisfy { isWord($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
    static func isPathComponent(_ text: Substring) -> Bool {
        let bytes = Array(text.utf8)
        func alphanumeric(_ byte: UInt8) -> Bool { (0x61...0x7a).contains(byte) || (0x30...0x39).contains(byte) }
        guard let first = bytes.first, let last = bytes.last, alphanumeric(first), alphanumeric(last) else {
            return false
        }
        var index = 0
        while index < bytes.count {
            if alphanumeric(bytes[index]) {
                index += 1
                continue
            }
            var end = index
            while end < bytes.count && !alphanumeric(bytes[end]) { end += 1 }
            let separator = String(decoding: bytes[index..<end], as: UTF8.self)
            guard separator == "." || separator == "_" || separator == "__" || separator.allSatisfy({ $0 == "-" })
            else { return false }
            index = end
        }
        return true
    }

    /// A domain (`registry.example.com`), `localhost`, an IPv4 address or a bracketed IPv6
    /// address, with an optional `:port`. A single word without dot or port is a repository
    /// path component (docker's implicit docker.io), which we refuse.
    static func isRegistry(_ text: String) -> Bool {
        var host = Substring(text)
        var hasPort = false
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            let inside = host[host.index(after: host.startIndex)..<close]
            guard !inside.isEmpty, inside.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return false }
            let after = host[host.index(after: close)...]
            if after.isEmpty { return true }
            guard after.hasPrefix(":") else { return false }
            return isPort(after.dropFirst())
        }
        if let colon = host.lastIndex(of: ":") {
            guard isPort(host[host.index(after: colon)...]) else { return false }
            host = host[..<colon]
            hasPort = true
        }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        guard !host.isEmpty, host.count <= 253 else { return false }
        for label in labels {
            guard let first = label.first, let last = label.last, first.isASCII && (first.isLetter || first.isNumber),
                last.isASCII && (last.isLetter || last.isNumber),
                label.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
            else { return false }
        }
        return labels.count > 1 || hasPort || host == "localhost"
    }

    private static func isPort(_ text: Substring) -> Bool {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(text)
        else { return false }
        return (1...65535).contains(port)
    }

    private static func isWord(_ byte: UInt8) -> Bool {
        (0x61...0x7a).contains(byte) || (0x41...0x5a).contains(byte) || (0x30...0x39).contains(byte)
            || byte == UInt8(ascii: "_")
    }
}
