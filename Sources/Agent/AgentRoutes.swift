import AgentHTTP
import FoundationEssentials
import HCOSCore

/// The agent's HTTP API (README "Agent API"): routes requests to `AgentCore` and turns its
/// refusals into 4xx answers with a JSON error body. Every route answers; none blocks behind a
/// running upgrade (those run in the background and are polled through their operation id).
public struct AgentRoutes: Sendable {
    let core: AgentCore

    public init(core: AgentCore) { self.core = core }

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        do {
            return try route(request)
        } catch let error as AgentError {
            return .error(error.status, code: error.code, message: error.message)
        } catch let error as HCOSError {
            let status =
                switch error.code {
                case .invalidArgument: 400
                case .notFound: 404
                case .noSpace: 507
                default: 500
                }
            return .error(status, code: error.code.rawValue.replacingSpaces(), message: error.description)
        } catch {
            return .error(500, code: "internal", message: "\(error)")
        }
    }

    func route(_ request: HTTPRequest) throws -> HTTPResponse {
        let path =
            request.path.count > 1 && request.path.hasSuffix("/") ? String(request.path.dropLast()) : request.path
        switch (request.method, path) {
        case ("GET", "/v1/ping"):
            return .json(["ok": true])
        case ("GET", "/v1/status"):
            return .json(core.status())
        case ("POST", "/v1/upgrade"):
            let body: UpgradeRequest = try decode(request)
            let operation = try core.startUpgrade(body)
            return .json(ActionResponse(message: "upgrade accepted", operation: operation), status: 202)
        case ("POST", "/v1/rollback"):
            let body: RollbackRequest = request.body.isEmpty ? RollbackRequest() : try decode(request)
            return .json(try core.rollback(body))
        case ("POST", "/v1/reboot"):
            return .json(core.reboot(), status: 202)
        case ("POST", "/v1/mark-good"):
            return .json(try core.markGood())
        case ("GET", "/v1/settings"):
            return .json(core.status().settings)
        case ("PUT", "/v1/settings"):
            let body: SettingsUpdate = try decode(request)
            return .json(try core.updateSettings(body))
        case ("GET", "/v1/health"):
            guard let health = core.status().health else {
                throw AgentError(404, "no-health-report", "no health gate has run on this boot's state")
            }
            return .json(health)
        case ("GET", _) where path.hasPrefix("/v1/operations/"):
            let id = String(path.dropFirst("/v1/operations/".count))
            guard let operation = core.operation(id: id) else {
                throw AgentError(404, "no-such-operation", "no operation \(id) (only the latest one is kept)")
            }
            return .json(operation)
        default:
            let known: [String: [String]] = [
                "/v1/ping": ["GET"], "/v1/status": ["GET"], "/v1/upgrade": ["POST"], "/v1/rollback": ["POST"],
                "/v1/reboot": ["POST"], "/v1/mark-good": ["POST"], "/v1/settings": ["GET", "PUT"],
                "/v1/health": ["GET"],
            ]
            if let methods = known[path] ?? (path.hasPrefix("/v1/operations/") ? ["GET"] : nil) {
                var response = HTTPResponse.error(
                    405, code: "method-not-allowed",
                    message: "\(request.method) is not allowed on \(path) (allowed: \(methods.joined(separator: ", ")))"
                )
                response.headers.append((name: "Allow", value: methods.joined(separator: ", ")))
                return response
            }
            throw AgentError(404, "not-found", "no such endpoint: \(request.method) \(path) (see README \"Agent API\")")
        }
    }

    func decode<T: Decodable>(_ request: HTTPRequest) throws -> T {
        if let type = request.header("Content-Type"), !type.lowercased().hasPrefix("application/json") {
            throw AgentError(415, "unsupported-media-type", "the body must be application/json, not \(type)")
        }
        guard !request.body.isEmpty else { throw AgentError(400, "bad-request", "the request needs a JSON body") }
        do {
            return try JSONDecoder().decode(T.self, from: Data(request.body))
        } catch let DecodingError.keyNotFound(key, _) {
            throw AgentError(400, "bad-request", "the JSON body lacks the field \"\(key.stringValue)\"")
        } catch let DecodingError.typeMismatch(_, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            guard !field.isEmpty else { throw AgentError(400, "bad-request", "the JSON body must be an object") }
            throw AgentError(400, "bad-request", "the JSON field \"\(field)\" has the wrong type")
        } catch {
            throw AgentError(400, "bad-request", "the body is not valid JSON for this request")
        }
    }
}

extension String {
    fileprivate func replacingSpaces() -> String { String(map { $0 == " " ? "-" : $0 }) }
}
