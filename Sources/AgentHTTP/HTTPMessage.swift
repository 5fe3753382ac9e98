import FoundationEssentials

/// Who is on the other end of the socket (SO_PEERCRED, taken when it connected).
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }
}

/// One parsed HTTP/1.1 request (RFC 9112), body complete.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The raw request-target, in origin form (`/v1/status?verbose=1`).
    public var target: String
    /// The target's path, percent-decoded.
    public var path: String
    /// The target's query, percent-decoded (`+` is a space); of a repeated key, the last wins.
    public var query: [String: String]
    /// The header fields in the order received; names as sent, values without surrounding spaces.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    public var peer: PeerCredentials

    public init(
        method: String, target: String, path: String, query: [String: String] = [:],
        headers: [(name: String, value: String)] = [], body: [UInt8] = [],
        peer: PeerCredentials = PeerCredentials(pid: 0, uid: 0, gid: 0)
    ) {
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.peer = peer
    }

    /// The first value of the header `name` (compared case-insensitively).
    public func header(_ name: String) -> String? {
        headers.first { HTTPSyntax.equalsIgnoringCase($0.name, name) }?.value
    }
}

/// What a handler answers. The server sets `Content-Length` and `Connection` itself, and
/// `Content-Type: application/json` unless the handler chose another type.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// `value` as JSON with sorted keys and a trailing newline (a 500 if it cannot be encoded).
    public static func json<T: Encodable>(_ value: T, status: Int = 200) -> HTTPResponse {
        do {
            return HTTPResponse(status: status, body: try JSONCoding.encode(value) + [0x0A])
        } catch {
            return .error(500, code: "internal", message: "cannot encode the response: \(error)")
        }
    }

    /// The API's error shape: `{"error":{"code":..,"message":..,"status":..}}`.
    public static func error(_ status: Int, code: String, message: String) -> HTTPResponse {
        let body = ErrorBody(error: .init(code: code, message: message, status: status))
        let bytes = (try? JSONCoding.encode(body)) ?? Array(#"{"error":{"code":"internal"}}"#.utf8)
        return HTTPResponse(status: status, body: bytes + [0x0A])
    }

    /// The standard reason phrase of `status` (RFC 9110 §15).
    static func reason(_ status: Int) -> String {
        switch status {
        case 100: "Continue"
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 304: "Not Modified"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 411: "Length Required"
        case 412: "Precondition Failed"
        case 413: "Content Too Large"
        case 415: "Unsupported Media Type"
        case 417: "Expectation Failed"
        case 422: "Unprocessable Content"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        case 505: "HTTP Version Not Supported"
        default: "Status \(status)"
        }
    }
}

/// The JSON body of every error response.
struct ErrorBody: Codable {
    struct Detail: Codable {
        var code: String
        var message: String
        var status: Int
    }
    var error: Detail
}

/// One JSON style for the whole API: sorted keys (stable output for diffs and tests), slashes
/// unescaped (paths read as paths).
enum JSONCoding {
    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}
