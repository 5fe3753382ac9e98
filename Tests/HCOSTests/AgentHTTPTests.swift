import AgentHTTP
import Foundation
import HCOSCore
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

struct AgentHTTPServerTests {
    @Test func theClientGetsAndPostsJSONAndSeesThePeerCredentials() throws {
        let server = try HTTPTestServer()
        defer { server.finish() }
        try server.expectHealthy()

        struct Name: Codable { var name: String }
        let echo: EchoReply = try server.client.json("POST", "/v1/echo?verbose=1&name=a%20b+c", body: Name(name: "x"))
        #expect(echo.method == "POST")
        #expect(echo.path == "/v1/echo")
        #expect(echo.query == ["verbose": "1", "name": "a b c"])
        #expect(echo.body == #"{"name":"x"}"#)
        #expect(echo.contentType == "application/json")
        #expect(echo.pid == getpid())
        #expect(echo.uid == getuid())
    }

    @Test func theClientThrowsTheServersErrorForANon2xxStatus() throws {
        let server = try HTTPTestServer()
        defer { server.finish() }
        #expect {
            let _: AgentStatus = try server.client.json("GET", "/v1/nothing")
        } throws: { error in
            guard case AgentHTTPError.status(404, "not_found", "no route for GET /v1/nothing") = error else {
                return false
            }
            return "\(error)".contains("no route for GET /v1/nothing")
        }
    }

    @Test func aBodyOfExactlyTheLimitArrivesWholeAndOneByteMoreGets413() throws {
        let limit = 1024 * 1024
        let server = try HTTPTestServer(extra: { request in
            request.path == "/v1/size" ? .json(["size": request.body.count]) : nil
        })
        defer { server.finish() }
        let body = (0..<limit).map { UInt8(truncatingIfNeeded: $0 % 251) }
        let accepted = try server.client.request("POST", "/v1/size", body: body)
        #expect(accepted.status == 200 && accepted.body == Array("{\"size\":\(limit)}\n".utf8))
        let refused = try server.client.request("POST", "/v1/size", body: body + [0])
        #expect(refused.status == 413)
    }

    @Test func responsesCarryContentLengthAndJSONContentType() throws {
        let server = try HTTPTestServer()
        defer { server.finish() }
        let response = try server.client.request("GET", "/v1/status")
        #expect(response.status == 200)
        #expect(response.body == Array("{\"state\":\"ok\"}\n".utf8))
        let fields = Dictionary(
            response.headers.map { ($0.name.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
        #expect(fields["content-length"] == String(response.body.count))
        #expect(fields["content-type"] == "application/json")
    }

    @Test(.enabled(if: Command.exists("curl"))) func curlTalksToTheServerOverTheUnixSocket() throws {
        let server = try HTTPTestServer()
        defer { server.finish() }
        let base = ["--unix-socket", server.path, "--silent", "--show-error", "--max-time", "10"]

        let get = try Command("curl", base + ["http://localhost/v1/status"]).run()
        #expect(get.output == "{\"state\":\"ok\"}\n")

        let post = try Command(
            "curl",
            base + [
                "-H", "Content-Type: application/json", "--data-binary", #"{"name":"x"}"#,
                "http://localhost/v1/echo?a=1",
            ]
        ).run()
        let echo = try JSONDecoder().decode(EchoReply.self, from: Data(post.stdout))
        #expect(echo.method == "POST" && echo.body == #"{"name":"x"}"# && echo.query == ["a": "1"])

        // curl 7.x sends Expect: 100-continue for bodies over 1 KiB; chunked when told to.
        let large = String(repeating: "y", count: 4000)
        for extra in [[], ["-H", "Transfer-Encoding: chunked"]] {
            let result = try Command(
                "curl", base + extra + ["--data-binary", large, "http://localhost/v1/echo"]
            ).run()
            let reply = try JSONDecoder().decode(EchoReply.self, from: Data(result.stdout))
            #expect(reply.body == large)
        }

        let missing = try Command(
            "curl", base + ["--output", "/dev/null", "--write-out", "%{http_code}", "http://localhost/v1/missing"]
        ).run()
        #expect(missing.output == "404")
    }

    @Test func twoRequestsShareOneKeepAliveConnectionUntilConnectionClose() throws {
        let server = try HTTPTestServer()
        defer { server.finish() }
        let connection = try RawHTTPConnection(server.path)
        connection.send("GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        let first = try #require(connection.readResponse())
        #expect(first.status == 200 && first.header("connection") == nil)

        connection.send("POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi")
        let second = try #require(connection.readResponse())
        #expect(second.status == 200 && second.text.contains(#""body":"hi""#))

        // Pipelined, the last one asking to close.
        connection.send(
            "GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n"
                + "GET /v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        #expect(connection.readResponse()?.status == 200)
        let last = try #require(connection.readResponse())
        #expect(last.status == 200 && last.header("connection") == "close")
        #expect(connection.readToEnd().isEmpty)
    }

    @Test func anHTTP10RequestGetsItsResponseAndTheConnectionCloses() throws {
        let server = try HTTPTestServer()
        defer { server.finish() }
        let bytes = try exchange(server.path, Array("GET /v1/status HTTP/1.0\r\n\r\n".utf8), halfClose: false)
        let response = try #require(RawHTTPResponse(bytes))
        #expect(response.status == 200 && response.header("connection") == "close")
        #expect(response.text == "{\"state\":\"ok\"}\n")
    }

    @Test func aHeadRequestGetsTheLengthButNoBody() throws {
        let server = try HTTPTestServer()
        defer { server.finish() }
        let bytes = try exchange(server.path, Array("HEAD /v1/status HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let response = try #require(RawHTTPResponse(bytes))
        #expect(response.status == 200 && response.header("content-length") == "15" && response.body.isEmpty)
    }

    @Test func aChunkedBodyWithExtensionsAndTrailersArrivesWhole() throws {
        let server = try HTTPTestServer()
        defer { server.finish() }
        let request =
            "POST /v1/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n"
        let response = try #require(RawHTTPResponse(try exchange(server.path, Array(request.utf8))))
        #expect(response.status == 200 && response.text.contains(#""body":"hello world""#))
    }

    @Test func expectContinueGetsAnInterimResponseBeforeTheBody() throws {
        let server = try HTTPTestServer()
        defer { server.finish() }
        let connection = try RawHTTPConnection(server.path)
        connection.send("POST /v1/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        let interim = try #require(connection.readResponse())
        #expect(interim.status == 100)
        connection.send("abc")
        let final = try #require(connection.readResponse())
        #expect(final.status == 200 && final.text.contains(#""body":"abc""#))
    }

    /// Each case gets its status, and the server goes on answering good requests.
    @Test(arguments: [
        ("no version", "GET /\r\n\r\n", 400),
        ("double space", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("lowercase version", "GET / http/1.1\r\nHost: x\r\n\r\n", 400),
        ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        ("HTTP/3.1", "GET / HTTP/3.1\r\nHost: x\r\n\r\n", 505),
        ("absolute-form target", "GET http://localhost/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("bad method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("bad percent escape", "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("escaped NUL", "GET /a%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("no Host", "GET / HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (
            "huge header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 20000) + "\r\n\r\n",
            431
        ),
        ("huge header, never ended", "GET / HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 20000), 431),
        ("bad Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        ("negative Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (
            "conflicting Content-Length",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400
        ),
        ("conflicting Content-Length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd", 400),
        ("body too large", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413),
        (
            "enormous Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            413
        ),
        ("NUL in header", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{0}b\r\n\r\n", 400),
        ("bare LF", "GET / HTTP/1.1\nHost: x\n\n", 400),
        ("bare CR", "GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n", 400),
        ("space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        ("header without colon", "GET / HTTP/1.1\r\nHost: x\r\nnonsense\r\n\r\n", 400),
        ("truncated head", "GET / HTTP/1.1\r\nHost: x\r\n", 400),
        ("truncated body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", 400),
        ("both framings", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("unsupported coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("chunked not last", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("bad chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (
            "chunk without CRLF",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 400
        ),
        ("chunked too large", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n", 413),
        ("truncated chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 400),
        ("unknown expectation", "GET / HTTP/1.1\r\nHost: x\r\nExpect: telepathy\r\n\r\n", 417),
    ])
    func aMalformedRequestGetsItsStatusAndTheServerKeepsServing(_ name: String, _ request: String, _ status: Int)
        throws
    {
        let server = try HTTPTestServer(limits: .init(maxHeaderBytes: 16 * 1024, maxBodyBytes: 1024))
        defer { server.finish() }
        let bytes = try exchange(server.path, Array(request.utf8))
        let response = try #require(RawHTTPResponse(bytes), "\(name): \(String(decoding: bytes, as: UTF8.self))")
        #expect(response.status == status, "\(name): \(response.text)")
        #expect(response.header("connection") == "close", "\(name)")
        #expect(response.text.hasPrefix(#"{"error":{"code":""#), "\(name): \(response.text)")
        try server.expectHealthy()
    }

    @Test func aClientThatStopsMidRequestGets408() throws {
        let server = try HTTPTestServer(limits: .init(readTimeout: 0.2))
        defer { server.finish() }
        // The server's timeout ends the wait: readToEnd returns when the server closes.
        let bytes = try exchange(server.path, Array("GET /v1/status HTTP/1.1\r\nHo".utf8), halfClose: false)
        #expect(RawHTTPResponse(bytes)?.status == 408)
        try server.expectHealthy()
    }

    @Test func anIdleKeepAliveConnectionClosesQuietlyAfterTheTimeout() throws {
        let server = try HTTPTestServer(limits: .init(readTimeout: 0.2))
        defer { server.finish() }
        let connection = try RawHTTPConnection(server.path)
        connection.send("GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(connection.readResponse()?.status == 200)
        #expect(connection.readToEnd().isEmpty)
    }

    @Test func aRandomlyMutatedRequestNeverTakesTheServerDown() throws {
        let server = try HTTPTestServer(limits: .init(maxHeaderBytes: 2048, maxBodyBytes: 512, readTimeout: 2))
        defer { server.finish() }
        let templates = [
            "GET /v1/status?x=1&y=%41 HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
            "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"name\":\"x\"}\n",
            "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
            "GET /v1/status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            "PUT /v1/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"
                + "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
        ].map { Array($0.utf8) }
        let nasty = [
            "Content-Length: 99999999999999999999\r\n", "Transfer-Encoding: chunked\r\n", "Content-Length: -5\r\n",
            "Expect: 100-continue\r\n", "Content-Length: 0\r\n", "Connection: close\r\n", "X: \u{1}\r\n",
            "Host: y\r\n", ":\r\n", "\r\n", "\n", "\r", " ",
        ].map { Array($0.utf8) }
        let special: [UInt8] = [0, 9, 10, 13, 32, 0x3A, 0x3B, 0x25, 0x30, 0x66, 0x7F, 0x80, 0xFF]
        var random = HTTPFuzzGenerator(seed: 0x6863_6F73)

        for round in 0..<300 {
            var bytes = templates.randomElement(using: &random) ?? []
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let at = Int.random(in: 0...bytes.count, using: &random)
                switch Int.random(in: 0..<7, using: &random) {
                case 0 where at < bytes.count:
                    bytes[at] = UInt8.random(in: 0...255, using: &random)
                case 1:
                    bytes.insert(special.randomElement(using: &random) ?? 0, at: at)
                case 2 where at < bytes.count:
                    bytes.removeSubrange(at..<min(bytes.count, at + Int.random(in: 1...8, using: &random)))
                case 3:
                    bytes.insert(contentsOf: nasty.randomElement(using: &random) ?? [], at: at)
                case 4:
                    bytes.removeSubrange(at...)
                case 5 where at < bytes.count:
                    let end = min(bytes.count, at + Int.random(in: 1...64, using: &random))
                    bytes.insert(contentsOf: bytes[at..<end], at: at)
                default:
                    bytes.insert(contentsOf: (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) }, at: at)
                }
            }
            let reply = try exchange(server.path, bytes)
            if !reply.isEmpty {
                let statusLine = reply.prefix(while: { $0 != 13 })
                let text = String(decoding: statusLine, as: UTF8.self)
                #expect(text.hasPrefix("HTTP/1.1 "), "round \(round): \(text)")
            }
            if round % 50 == 49 { try server.expectHealthy() }
        }
        try server.expectHealthy()
    }

    @Test func aPeerTheAuthorizerRejectsGets403AndTheConnectionCloses() throws {
        let seen = Mutex<[PeerCredentials]>([])
        let server = try HTTPTestServer(authorize: { peer in
            seen.withLock { $0.append(peer) }
            return false
        })
        defer { server.finish() }
        #expect {
            let _: AgentStatus = try server.client.json("GET", "/v1/status")
        } throws: { error in
            (error as? AgentHTTPError)?.status == 403
        }
        let connection = try RawHTTPConnection(server.path)
        connection.send("GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        let response = try #require(RawHTTPResponse(connection.readToEnd()))
        #expect(response.status == 403 && response.header("connection") == "close")
        #expect(response.text.contains(#""code":"forbidden""#))
        #expect(seen.withLock { $0 } == [PeerCredentials(pid: getpid(), uid: getuid(), gid: getgid())].repeated(2))
    }

    @Test func aSlowHandlerDoesNotBlockAConcurrentRequest() throws {
        let entered = HTTPTestGate()
        let release = HTTPTestGate()
        let server = try HTTPTestServer(extra: { request in
            guard request.path == "/v1/slow" else { return nil }
            entered.open()
            _ = release.wait()
            return .json(AgentStatus(state: "slow"))
        })
        defer { server.finish() }
        let client = server.client
        // The slow request blocks its thread: a GCD thread, never one of Swift's few
        // cooperative threads, which parallel tests may all be holding.
        let answer = Mutex<AgentStatus?>(nil)
        let answered = HTTPTestGate()
        DispatchQueue.global().async {
            let status: AgentStatus? = try? client.json("GET", "/v1/slow")
            answer.withLock { $0 = status }
            answered.open()
        }
        #expect(entered.wait())
        try server.expectHealthy()
        release.open()
        #expect(answered.wait())
        #expect(answer.withLock { $0 } == AgentStatus(state: "slow"))
    }

    @Test func connectionsBeyondTheLimitGet503UntilOneCloses() throws {
        let server = try HTTPTestServer(limits: .init(maxConnections: 2))
        defer { server.finish() }
        let first = try RawHTTPConnection(server.path)
        let second = try RawHTTPConnection(server.path)
        // A response on each proves both are admitted before the third connects.
        for connection in [first, second] {
            connection.send("GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(connection.readResponse()?.status == 200)
        }
        let third = try exchange(server.path, Array("GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(RawHTTPResponse(third)?.status == 503)
        // The server frees the slot before it closes, so end of file means the slot is free.
        first.send("GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(first.readResponse()?.status == 200)
        #expect(first.readToEnd().isEmpty)
        try server.expectHealthy()
    }

    @Test func anInvalidHandlerResponseBecomesA500() throws {
        let server = try HTTPTestServer(extra: { request in
            switch request.path {
            case "/v1/split": HTTPResponse(status: 200, headers: [("X-A", "a\r\nSet-Cookie: b")], body: [])
            case "/v1/interim": HTTPResponse(status: 101)
            default: nil
            }
        })
        defer { server.finish() }
        #expect(try server.client.request("GET", "/v1/split").status == 500)
        #expect(try server.client.request("GET", "/v1/interim").status == 500)
    }

    @Test func aStaleSocketFileIsReplacedAndARegularFileIsRefused() throws {
        let directory = try httpScratchDirectory()
        defer { rmdir(directory) }
        let path = directory + "/agent.sock"

        close(try UnixSocket.listen(path: path))  // leaves a socket file nobody listens on
        let server = try UnixHTTPServer(
            path: path, logger: .silent, authorize: { _ in true }, handler: HTTPTestServer.route)
        server.start()
        let status: AgentStatus = try UnixHTTPClient(socketPath: path).json("GET", "/v1/status")
        #expect(status.state == "ok")
        var info = stat()
        #expect(lstat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)

        // A live server's socket is not taken over.
        #expect(throws: AgentHTTPError.self) {
            _ = try UnixHTTPServer(path: path, logger: .silent, authorize: { _ in true }, handler: HTTPTestServer.route)
        }
        server.stop()
        #expect(!FileSystem.exists(path))

        try FileSystem.writeDurably("precious", to: path)
        defer { unlink(path) }
        #expect {
            _ = try UnixHTTPServer(path: path, logger: .silent, authorize: { _ in true }, handler: HTTPTestServer.route)
        } throws: { error in
            "\(error)".contains("not a socket")
        }
        #expect(try FileSystem.readString(path) == "precious")
    }

    @Test func stopUnlinksTheSocketAndTheClientSaysTheAgentIsNotRunning() throws {
        let server = try HTTPTestServer()
        try server.expectHealthy()
        server.finish()
        #expect(!FileSystem.exists(server.path))
        server.server.stop()  // a second stop is harmless
        #expect {
            let _: AgentStatus = try server.client.json("GET", "/v1/status")
        } throws: { error in
            "\(error)" == "os-agent is not running: \(server.path) does not exist"
        }
    }

    @Test func stopBeforeServeReturnsAndServeThenReturnsAtOnce() throws {
        let directory = try httpScratchDirectory()
        defer { rmdir(directory) }
        let server = try UnixHTTPServer(
            path: directory + "/agent.sock", logger: .silent, authorize: { _ in true }, handler: HTTPTestServer.route)
        server.stop()
        server.serve()
        #expect(!FileSystem.exists(directory + "/agent.sock"))
    }

    @Test func aChunkedResponseIsReadByTheClient() throws {
        // A hand-written server, since UnixHTTPServer itself always sends Content-Length.
        let directory = try httpScratchDirectory()
        defer { rmdir(directory) }
        let path = directory + "/chunked.sock"
        let listener = try UnixSocket.listen(path: path)
        defer {
            close(listener)
            unlink(path)
        }
        let peer = Thread {
            guard let fd = try? UnixSocket.accept(listener) else { return }
            var request: [UInt8] = []
            while request.firstRange(of: Array("\r\n\r\n".utf8)) == nil,
                let bytes = try? UnixSocket.receive(fd), !bytes.isEmpty
            {
                request += bytes
            }
            try? UnixSocket.writeAll(
                fd,
                Array(
                    ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + "7\r\n{\"state\r\n8\r\n\":\"ok\"}\n\r\n0\r\n\r\n").utf8))
            close(fd)
        }
        peer.start()
        let status: AgentStatus = try UnixHTTPClient(socketPath: path).json("GET", "/v1/status")
        #expect(status == AgentStatus(state: "ok"))
    }
}

extension Array {
    fileprivate func repeated(_ times: Int) -> [Element] {
        (0..<times).flatMap { _ in self }
    }
}
