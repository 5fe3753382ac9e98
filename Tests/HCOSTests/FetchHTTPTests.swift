import Foundation
import HCOSCore
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@testable import Fetch

/// Downloads over http from a real server on the loopback interface.
@Suite("fetch over http")
struct FetchHTTPTests {
    let source = FetchTestSupport.bytes(3 << 20 + 12345)

    func readFile(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    @Test("a download equals the served bytes, is renamed into place and reports progress up to the total")
    func fullDownload() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-http")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try TestHTTPServer(handler: TestHTTPServer.files(["/hcos.bundle": source]))
        defer { server.stop() }
        let reports = Mutex<[FetchProgress]>([])
        let destination = "\(directory)/hcos.bundle"
        let result = try Fetcher(logger: .silent).fetch(.http("\(server.baseURL)/hcos.bundle"), to: destination) {
            progress in reports.withLock { $0.append(progress) }
        }
        #expect(result == FetchResult(path: destination, size: UInt64(source.count), resumedFrom: 0, digest: nil))
        #expect(try readFile(destination) == source)
        #expect(!FileManager.default.fileExists(atPath: destination + ".part"))
        #expect(!FileManager.default.fileExists(atPath: destination + ".part.info"))
        let seen = reports.withLock { $0 }
        #expect(seen.last == FetchProgress(done: UInt64(source.count), total: UInt64(source.count)))
        #expect(zip(seen, seen.dropFirst()).allSatisfy { $0.done <= $1.done })
        #expect(server.requests.allSatisfy { $0.headers["range"] == nil })
        #expect(server.requests.first?.headers["user-agent"] == "hcos-os-agent")
    }

    @Test(
        "a download that cannot fit is refused before its first byte; one that fills the disk deletes its partial file",
        .enabled(if: getuid() == 0, "mounts a 2 MiB tmpfs as the download directory: needs root (CI runs as root)"))
    func fullDisk() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-full")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Command("mount", ["-t", "tmpfs", "-o", "size=2m", "hcos-fetch-test", directory]).run()
        defer { _ = try? Command("umount", [directory]).run() }
        let withLength = try TestHTTPServer(handler: TestHTTPServer.files(["/hcos.bundle": source]))
        defer { withLength.stop() }
        let destination = "\(directory)/hcos.bundle"
        let refused = #expect(throws: HCOSError.self) {
            try Fetcher(logger: .silent).fetch(.http("\(withLength.baseURL)/hcos.bundle"), to: destination) { _ in }
        }
        #expect(refused?.code == .noSpace)
        #expect(refused?.message.contains("needs 3.0 MiB more on \(directory)") == true, "\(refused?.message ?? "")")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)

        // Without a Content-Length the size is known only at the end: the disk fills first.
        let source = self.source
        let withoutLength = try TestHTTPServer { _ in
            var response = TestHTTPServer.Response(status: 200, body: source)
            response.sendLength = false
            return response
        }
        defer { withoutLength.stop() }
        let filled = #expect(throws: HCOSError.self) {
            try Fetcher(logger: .silent).fetch(.http("\(withoutLength.baseURL)/hcos.bundle"), to: destination) { _ in }
        }
        #expect(filled?.code == .noSpace)
        #expect(filled?.message.contains("no space left on the device (partial download deleted)") == true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
        #expect(try FileSystem.availableSpace(directory) > 1 << 20)
    }

    @Test("a partial .part file is resumed with a Range request and completes to the same bytes")
    func resumesPartialFile() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-http")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try TestHTTPServer(handler: TestHTTPServer.files(["/hcos.bundle": source]))
        defer { server.stop() }
        let destination = "\(directory)/hcos.bundle"
        try Data(source.prefix(1_000_000)).write(to: URL(fileURLWithPath: destination + ".part"))
        let result = try Fetcher(logger: .silent).fetch(
            .http("\(server.baseURL)/hcos.bundle"), to: destination, progress: { _ in })
        #expect(result.resumedFrom == 1_000_000)
        #expect(server.requests.map { $0.headers["range"] } == ["bytes=1000000-"])
        #expect(try readFile(destination) == source)
    }

    @Test("a server that ignores Range gets the file rewritten from the start")
    func restartsWhenRangeIgnored() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-http")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try TestHTTPServer(handler: TestHTTPServer.files(["/b": source], honourRange: false))
        defer { server.stop() }
        let destination = "\(directory)/hcos.bundle"
        // Wrong bytes in the partial file: had they been kept, the result would differ.
        try Data([UInt8](repeating: 0xee, count: 500_000)).write(to: URL(fileURLWithPath: destination + ".part"))
        let result = try Fetcher(logger: .silent).fetch(.http("\(server.baseURL)/b"), to: destination) { _ in }
        #expect(server.requests.first?.headers["range"] == "bytes=500000-")
        #expect(result.resumedFrom == 0)
        #expect(try readFile(destination) == source)
    }

    @Test("a partial file left by another URL is not continued")
    func doesNotContinueAnotherSourcesPartialFile() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-http")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try TestHTTPServer(handler: TestHTTPServer.files(["/new": source]))
        defer { server.stop() }
        let destination = "\(directory)/hcos.bundle"
        try Data([UInt8](repeating: 1, count: 4096)).write(to: URL(fileURLWithPath: destination + ".part"))
        try "source \(server.baseURL)/old\n".write(
            toFile: destination + ".part.info", atomically: true, encoding: .utf8)
        let result = try Fetcher(logger: .silent).fetch(.http("\(server.baseURL)/new"), to: destination) { _ in }
        #expect(result.resumedFrom == 0)
        #expect(server.requests.first?.headers["range"] == nil)
        #expect(try readFile(destination) == source)
    }

    @Test("404 is .notFound and the message names the URL and the status")
    func notFound() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-http")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try TestHTTPServer(handler: TestHTTPServer.files([:]))
        defer { server.stop() }
        let url = "\(server.baseURL)/missing.bundle"
        let error = #expect(throws: HCOSError.self) {
            try Fetcher(logger: .silent).fetch(.http(url), to: "\(directory)/b", progress: { _ in })
        }
        #expect(error?.code == .notFound)
        #expect(error?.message == "GET \(url): 404 Not Found")
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/b"))
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/b.part"))
    }

    @Test("a server that closes mid-transfer gives an error and leaves a .part that the next fetch resumes")
    func resumesAfterConnectionCut() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-http")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let serveFiles = TestHTTPServer.files(["/b": source], etag: "\"v1\"")
        let calls = Mutex(0)
        let server = try TestHTTPServer { request in
            var response = serveFiles(request)
            if calls.withLock({ count in
                count += 1
                return count == 1
            }) {
                response.cutAfter = 1_500_000
            }
            return response
        }
        defer { server.stop() }
        let destination = "\(directory)/hcos.bundle"
        let fetcher = Fetcher(logger: .silent)
        let error = #expect(throws: HCOSError.self) {
            try fetcher.fetch(.http("\(server.baseURL)/b"), to: destination, progress: { _ in })
        }
        #expect(error?.code == .io)
        #expect(
            error?.message.contains("GET \(server.baseURL)/b: the connection broke") == true,
            "\(String(describing: error))")
        let partial = try readFile(destination + ".part")
        #expect(partial == Array(source.prefix(1_500_000)))
        #expect(!FileManager.default.fileExists(atPath: destination))

        let result = try fetcher.fetch(.http("\(server.baseURL)/b"), to: destination, progress: { _ in })
        #expect(result.resumedFrom == 1_500_000)
        #expect(server.requests.last?.headers["range"] == "bytes=1500000-")
        #expect(server.requests.last?.headers["if-range"] == "\"v1\"")
        #expect(try readFile(destination) == source)
    }

    @Test("a refused connection names the URL and says the connection was refused")
    func connectionRefused() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-http")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let url = "http://127.0.0.1:\(try FetchTestSupport.freePort())/b"
        let error = #expect(throws: HCOSError.self) {
            try Fetcher(logger: .silent).fetch(.http(url), to: "\(directory)/b", progress: { _ in })
        }
        #expect(error?.code == .io)
        #expect(error?.message == "GET \(url): connection refused")
    }

    @Test("a stalled transfer is a .timeout once it stays below the low-speed limit")
    func stalledTransferTimesOut() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-http")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try TestHTTPServer { _ in
            var response = TestHTTPServer.Response(status: 200, headers: [("Content-Length", "1000000")])
            response.stall = true
            return response
        }
        defer { server.stop() }
        var fetcher = Fetcher(logger: .silent)
        fetcher.lowSpeedTime = 2
        let error = #expect(throws: HCOSError.self) {
            try fetcher.fetch(.http("\(server.baseURL)/b"), to: "\(directory)/b", progress: { _ in })
        }
        #expect(error?.code == .timeout)
        #expect(error?.message.contains("GET \(server.baseURL)/b: timed out") == true)
    }

    @Test("a full disk is .noSpace naming the file being written")
    func diskFull() throws {
        let directory = try FetchTestSupport.temporaryDirectory("fetch-http")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try TestHTTPServer(handler: TestHTTPServer.files(["/b": source]))
        defer { server.stop() }
        // Writes to /dev/full fail with ENOSPC, as on a full file system.
        try FileManager.default.createSymbolicLink(atPath: "\(directory)/b.part", withDestinationPath: "/dev/full")
        let error = #expect(throws: HCOSError.self) {
            try Fetcher(logger: .silent).fetch(.http("\(server.baseURL)/b"), to: "\(directory)/b", progress: { _ in })
        }
        #expect(error?.code == .noSpace)
        #expect(error?.message.contains("\(directory)/b.part") == true)
    }
}
