import Foundation
import HCOSCore
import Testing

@testable import Fetch

@Suite("update sources")
struct FetchTests {
    @Test(
        "paths, http(s) URLs and registry references parse to the source they name",
        arguments: [
            ("/var/lib/hcos/hcos-2.0.0.bundle", UpdateSource.file("/var/lib/hcos/hcos-2.0.0.bundle")),
            ("./hcos.bundle", .file("./hcos.bundle")),
            ("../up/hcos.bundle", .file("../up/hcos.bundle")),
            ("http://updates.example.com/hcos-2.0.0.bundle", .http("http://updates.example.com/hcos-2.0.0.bundle")),
            ("HTTPS://updates.example.com:8443/b?x=1", .http("HTTPS://updates.example.com:8443/b?x=1")),
            (
                "registry.example.com/hcos/bundle:2.0.0",
                .oci(OCIReference(registry: "registry.example.com", repository: "hcos/bundle", tag: "2.0.0"))
            ),
            (
                "127.0.0.1:5000/hcos/bundle:1.0.0",
                .oci(OCIReference(registry: "127.0.0.1:5000", repository: "hcos/bundle", tag: "1.0.0"))
            ),
            ("localhost/bundle:v1", .oci(OCIReference(registry: "localhost", repository: "bundle", tag: "v1"))),
            (
                "[::1]:5000/a/b/c:latest",
                .oci(OCIReference(registry: "[::1]:5000", repository: "a/b/c", tag: "latest"))
            ),
            (
                "ghcr.io/org/hcos-bundle@sha256:" + String(repeating: "ab", count: 32),
                .oci(
                    OCIReference(
                        registry: "ghcr.io", repository: "org/hcos-bundle",
                        digest: "sha256:" + String(repeating: "ab", count: 32)))
            ),
            (
                "r.example.com:443/x/y_z__w.v:1.0@sha256:" + String(repeating: "0", count: 64),
                .oci(
                    OCIReference(
                        registry: "r.example.com:443", repository: "x/y_z__w.v", tag: "1.0",
                        digest: "sha256:" + String(repeating: "0", count: 64)))
            ),
        ])
    func parsesSources(text: String, expected: UpdateSource) throws {
        #expect(try UpdateSource.parse(text) == expected)
        if case .oci(let reference) = expected { #expect(reference.description == text) }
    }

    @Test(
        "malformed sources are refused with .invalidArgument and a message that names the problem",
        arguments: [
            ("", "empty"),
            ("hcos/bundle:1.0.0", "registry"),
            ("bundle:1.0.0", "registry"),
            ("registry.example.com/hcos/bundle", "tag"),
            ("registry.example.com/Hcos/bundle:1", "lowercase"),
            ("registry.example.com/hcos//bundle:1", "component ''"),
            ("registry.example.com/hcos/bundle:-bad", "tag"),
            ("registry.example.com/hcos/bundle:1@sha256:abc", "sha256:<64"),
            ("registry.example.com/hcos/bundle@md5:" + String(repeating: "a", count: 32), "digest"),
            ("registry.example.com/hcos/bundle@sha256:" + String(repeating: "A", count: 64), "lowercase hex"),
            ("registry.example.com:99999/hcos/bundle:1", "registry host"),
            ("-bad-.example.com/hcos/bundle:1", "registry host"),
            ("ftp://example.com/hcos.bundle", "unsupported URL scheme 'ftp'"),
            ("http:///hcos.bundle", "no host"),
            ("/path with space", "whitespace"),
        ])
    func refusesMalformedSources(text: String, fragment: String) {
        do {
            let source = try UpdateSource.parse(text)
            Issue.record("'\(text)' parsed as \(source)")
        } catch let error as HCOSError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains(fragment), "\(error.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("a Bearer challenge yields realm, service and a scope with a comma inside quotes")
    func parsesBearerChallenge() throws {
        let challenge = try #require(
            AuthChallenge.parse(
                #"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:hcos/bundle:pull,push""#
            ))
        #expect(challenge.scheme == "Bearer")
        #expect(
            challenge.parameters == [
                "realm": "https://auth.example.com/token", "service": "registry.example.com",
                "scope": "repository:hcos/bundle:pull,push",
            ])
        let spaced = try #require(AuthChallenge.parse(#"Bearer  realm = "a\"b" , error=insufficient_scope"#))
        #expect(spaced.parameters == ["realm": #"a"b"#, "error": "insufficient_scope"])
        #expect(AuthChallenge.parse(#"Basic realm="registry""#)?.scheme == "Basic")
        #expect(AuthChallenge.parse(#"Bearer realm="unterminated"#) == nil)
        #expect(AuthChallenge.parse("") == nil)
    }

    @Test("Content-Range headers give the start of the range and the total size")
    func parsesContentRange() {
        #expect(ContentRange("bytes 100-999/1000") == ContentRange(start: 100, total: 1000))
        #expect(ContentRange("bytes */1000") == ContentRange(start: nil, total: 1000))
        #expect(ContentRange("bytes 0-9/*") == ContentRange(start: 0, total: nil))
        #expect(ContentRange("items 0-9/10") == nil)
        #expect(ContentRange(nil) == nil)
    }

    @Test("a file source is read in place, and a missing file is .notFound naming the path")
    func fileSource() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-file")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/hcos.bundle"
        try Data(FetchTestSupport.bytes(12345)).write(to: URL(fileURLWithPath: path))
        let fetcher = Fetcher(logger: .silent)
        let result = try fetcher.fetch(.file(path), to: "\(directory)/unused", progress: { _ in })
        #expect(result == FetchResult(path: path, size: 12345, resumedFrom: 0, digest: nil))
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/unused"))

        let error = #expect(throws: HCOSError.self) {
            try fetcher.fetch(.file("\(directory)/missing.bundle"), to: "\(directory)/unused", progress: { _ in })
        }
        #expect(error?.code == .notFound)
        #expect(error?.message.contains("\(directory)/missing.bundle") == true)
    }
}
