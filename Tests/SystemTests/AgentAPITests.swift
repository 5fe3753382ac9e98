import Agent
import AgentHTTP
import Foundation
import HCOSCore
import Synchronization
import Testing

/// os-agent's API as clients see it: the real routes and HTTP server on a Unix socket, over the
/// upgrade engine on a copy of the test image.
@Suite(.serialized)
struct AgentAPITests {
    final class Served: Sendable {
        let node: AgentEngineTests.Node
        let core: AgentCore
        let server: UnixHTTPServer
        let socket: String

        init() throws {
            node = try AgentEngineTests.Node()
            core = try node.core(slot: "A")
            // sun_path holds 107 bytes: keep the socket path short.
            socket = "/tmp/hcos-api-\(UUID().uuidString.prefix(8)).sock"
            let routes = AgentRoutes(core: core)
            server = try UnixHTTPServer(
                path: socket, logger: .silent, authorize: { $0.uid == 0 }, handler: { routes.handle($0) })
            server.start()
        }

        var client: UnixHTTPClient { UnixHTTPClient(socketPath: socket, timeout: 10) }

        deinit { server.stop() }
    }

    @Test func statusCallsInALoopNeverFailOrWaitWhileAnUpgradeRuns() throws {
        let served = try Served()
        let (bundle, _) = try AgentEngineTests.bundle(version: "2.0.0", in: served.node.directory)
        let accepted: ActionResponse = try served.client.json(
            "POST", "/v1/upgrade", body: UpgradeRequest(source: bundle, expectVersion: "2.0.0"))
        let id = try #require(accepted.operation?.id)
        var calls = 0
        var phases: [UpgradePhase] = []
        while true {
            let status: NodeStatus = try served.client.json("GET", "/v1/status")
            calls += 1
            let phase = try #require(status.operation?.phase)
            if phases.last != phase { phases.append(phase) }
            if phase == .staged || phase.isFinal { break }
        }
        served.core.waitForBackgroundWork()
        let operation: AgentOperation = try served.client.json("GET", "/v1/operations/\(id)")
        #expect(operation.phase == .staged, "\(operation.error ?? "")")
        // The loop saw the upgrade in flight, not only its end.
        #expect(phases.contains(.writing) || phases.contains(.verifying), "phases seen: \(phases)")
        #expect(calls > 1)
    }

    @Test func malformedRequestsGet4xxAndTheAgentKeepsAnswering() throws {
        let served = try Served()
        let client = served.client
        let json = [("Content-Type", "application/json")]
        let cases:
            [(method: String, path: String, body: String?, headers: [(String, String)], status: Int, says: String)] = [
                ("POST", "/v1/upgrade", "{", json, 400, "not valid JSON"),
                ("POST", "/v1/upgrade", "{}", json, 400, "lacks the field \"source\""),
                ("POST", "/v1/upgrade", "{\"source\": 42}", json, 400, "\"source\" has the wrong type"),
                ("POST", "/v1/upgrade", "{\"source\": \"\"}", json, 400, "source is empty"),
                (
                    "POST", "/v1/upgrade", "{\"source\": \"/x\", \"reboot\": \"yes\"}", json, 400,
                    "\"reboot\" has the wrong type"
                ),
                ("POST", "/v1/upgrade", "source=/x", [("Content-Type", "text/plain")], 415, "application/json"),
                ("POST", "/v1/upgrade", nil, json, 400, "needs a JSON body"),
                ("GET", "/v1/upgrade", nil, [], 405, "allowed: POST"),
                ("DELETE", "/v1/status", nil, [], 405, "allowed: GET"),
                ("GET", "/v1/nothing", nil, [], 404, "no such endpoint"),
                ("GET", "/v2/status", nil, [], 404, "no such endpoint"),
                ("GET", "/v1/operations/op-000000000000", nil, [], 404, "no operation op-000000000000"),
                ("PUT", "/v1/settings", "{\"tries\": 9}", json, 400, "tries must be between 1 and 3"),
                ("PUT", "/v1/settings", "{\"healthTimeoutSeconds\": 1}", json, 400, "between 10 and 3600"),
                ("PUT", "/v1/settings", "[1, 2]", json, 400, "must be an object"),
                ("POST", "/v1/rollback", "{}", json, 409, "holds no valid version"),
                ("POST", "/v1/mark-good", "{}", json, 409, "not on a trial boot"),
            ]
        for item in cases {
            let response = try client.request(
                item.method, item.path, body: item.body.map { Array($0.utf8) }, headers: item.headers)
            // The error body: {"error": {"code": ..., "message": ..., "status": ...}}
            let text =
                ((try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: [String: Any]])?["error"]?[
                    "message"] as? String ?? String(decoding: response.body, as: UTF8.self)
            #expect(response.status == item.status, "\(item.method) \(item.path) \(item.body ?? ""): \(text)")
            #expect(text.contains(item.says), "\(item.method) \(item.path): \(text)")
            let status = try client.request("GET", "/v1/status")
            #expect(status.status == 200)
        }
    }

    @Test func randomlyMutatedJSONBodiesNeverGetA5xxNorStopTheAgent() throws {
        let served = try Served()
        let client = served.client
        var random = SplitMix(seed: 0x6863_6f73)
        let seeds = [
            "{\"source\": \"/nonexistent/hcos.bundle\", \"expectVersion\": \"2.0.0\", \"reboot\": false}",
            "{\"tries\": 2, \"healthTimeoutSeconds\": 60}", "{\"reboot\": false}",
        ]
        let paths = [("POST", "/v1/upgrade"), ("PUT", "/v1/settings"), ("POST", "/v1/rollback")]
        for round in 0..<300 {
            let pick = Int(random.next() % UInt64(seeds.count))
            var body = Array(seeds[pick].utf8)
            for _ in 0...(random.next() % 4) where !body.isEmpty {
                let index = Int(random.next() % UInt64(body.count))
                switch random.next() % 3 {
                case 0: body[index] = UInt8(truncatingIfNeeded: random.next())
                case 1: body.remove(at: index)
                default: body.insert(UInt8(truncatingIfNeeded: random.next()), at: index)
                }
            }
            let (method, path) = paths[pick]
            let response = try client.request(method, path, body: body, headers: [("Content-Type", "application/json")])
            #expect(
                response.status < 500,
                "round \(round): \(String(decoding: body, as: UTF8.self)) -> \(response.status) \(String(decoding: response.body, as: UTF8.self))"
            )
            served.core.waitForBackgroundWork()
        }
        let status = try client.request("GET", "/v1/status")
        #expect(status.status == 200)
    }
}

/// A small seeded generator (SplitMix64): the same mutations on every run.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
