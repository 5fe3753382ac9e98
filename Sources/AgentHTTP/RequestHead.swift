/// A request's start line and header fields, checked strictly against RFC 9112 (message syntax)
/// and RFC 9110 (field semantics the server relies on), with the framing of its body.
struct RequestHead {
    var method: String
    var target: String
    var path: String
    var query: [String: String]
    var minorVersion: Int
    var headers: [(name: String, value: String)]
    var framing: BodyFraming
    /// The client wants to keep the connection for another request.
    var keepAlive: Bool
    /// `Expect: 100-continue`: the client waits for an interim response before sending the body.
    var expectsContinue: Bool

    init(parsing head: ArraySlice<UInt8>) throws(MessageError) {
        let lines = try HTTPSyntax.lines(head)
        let requestLine = lines[0]
        let parts = requestLine.split(separator: HTTPSyntax.space, omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw .invalid(400, "bad_request", "malformed request line \(HTTPSyntax.quoted(requestLine))")
        }
        guard HTTPSyntax.isToken(parts[0]) else {
            throw .invalid(400, "bad_request", "invalid method \(HTTPSyntax.quoted(parts[0]))")
        }
        method = String(decoding: parts[0], as: UTF8.self)
        minorVersion = try Self.version(parts[2])
        (target, path, query) = try Self.originForm(parts[1])

        headers = []
        for line in lines.dropFirst() {
            headers.append(try HTTPSyntax.field(line))
        }

        let hosts = headers.filter { HTTPSyntax.equalsIgnoringCase($0.name, "host") }
        if minorVersion == 1 && hosts.count != 1 {
            throw .invalid(400, "bad_request", "an HTTP/1.1 request needs exactly one Host header, got \(hosts.count)")
        }

        framing = try Self.framing(headers, minorVersion: minorVersion)
        let connection = Set(
            Self.values("connection", in: headers).flatMap(HTTPSyntax.listElements).map(HTTPSyntax.lowercased))
        keepAlive =
            minorVersion == 1
            ? !connection.contains("close") : connection.contains("keep-alive") && !connection.contains("close")

        let expectations = Self.values("expect", in: headers).flatMap(HTTPSyntax.listElements).map(
            HTTPSyntax.lowercased)
        guard expectations.allSatisfy({ $0 == "100-continue" }) else {
            throw .invalid(417, "expectation_failed", "unsupported Expect: \(expectations.joined(separator: ", "))")
        }
        expectsContinue = !expectations.isEmpty && minorVersion == 1
    }

    static func values(_ name: String, in headers: [(name: String, value: String)]) -> [String] {
        headers.filter { HTTPSyntax.equalsIgnoringCase($0.name, name) }.map(\.value)
    }

    /// HTTP-version = "HTTP/" DIGIT "." DIGIT; 1.0 and 1.1 are served, other versions get 505.
    private static func version(_ bytes: ArraySlice<UInt8>) throws(MessageError) -> Int {
        let text = Array(bytes)
        guard text.count == 8, text.starts(with: Array("HTTP/".utf8)), text[6] == UInt8(ascii: "."),
            let major = HTTPSyntax.decimalDigit(text[5]), let minor = HTTPSyntax.decimalDigit(text[7])
        else {
            throw .invalid(400, "bad_request", "malformed HTTP version \(HTTPSyntax.quoted(bytes))")
        }
        guard major == 1, minor <= 1 else {
            throw .invalid(505, "version_not_supported", "HTTP/\(major).\(minor) is not supported; use HTTP/1.1")
        }
        return minor
    }

    /// origin-form = absolute-path [ "?" query ] (RFC 9112 §3.2.1); the only form an origin
    /// server on a Unix socket needs.
    private static func originForm(_ bytes: ArraySlice<UInt8>) throws(MessageError) -> (
        String, String, [String: String]
    ) {
        guard bytes.first == UInt8(ascii: "/") else {
            throw .invalid(400, "bad_request", "the request target must start with \"/\": \(HTTPSyntax.quoted(bytes))")
        }
        guard bytes.allSatisfy(HTTPSyntax.isTargetChar) else {
            throw .invalid(400, "bad_request", "invalid character in the request target \(HTTPSyntax.quoted(bytes))")
        }
        let question = bytes.firstIndex(of: UInt8(ascii: "?"))
        let rawPath = bytes[bytes.startIndex..<(question ?? bytes.endIndex)]
        guard let path = HTTPSyntax.percentDecoded(rawPath, plusIsSpace: false) else {
            throw .invalid(400, "bad_request", "invalid percent-encoding in the path \(HTTPSyntax.quoted(rawPath))")
        }
        var query: [String: String] = [:]
        if let question {
            for pair in bytes[(question + 1)...].split(separator: UInt8(ascii: "&")) {
                let equals = pair.firstIndex(of: UInt8(ascii: "="))
                let rawKey = pair[pair.startIndex..<(equals ?? pair.endIndex)]
                let rawValue = equals.map { pair[($0 + 1)...] } ?? []
                guard let key = HTTPSyntax.percentDecoded(rawKey, plusIsSpace: true),
                    let value = HTTPSyntax.percentDecoded(rawValue, plusIsSpace: true)
                else {
                    throw .invalid(
                        400, "bad_request", "invalid percent-encoding in the query \(HTTPSyntax.quoted(pair))")
                }
                query[key] = value
            }
        }
        return (String(decoding: bytes, as: UTF8.self), path, query)
    }

    /// Message body length (RFC 9112 §6.3): Transfer-Encoding chunked, or one Content-Length
    /// value (repeats allowed only if identical), or no body. Both at once is refused, as it is
    /// the shape of request smuggling.
    private static func framing(_ headers: [(name: String, value: String)], minorVersion: Int) throws(MessageError)
        -> BodyFraming
    {
        let lengths = headers.filter { HTTPSyntax.equalsIgnoringCase($0.name, "content-length") }
            .flatMap { $0.value.split(separator: ",", omittingEmptySubsequences: false) }
            .map { String(decoding: HTTPSyntax.trimmed(ArraySlice($0.utf8)), as: UTF8.self) }
        let codings = headers.filter { HTTPSyntax.equalsIgnoringCase($0.name, "transfer-encoding") }
            .flatMap { HTTPSyntax.listElements($0.value) }.map(HTTPSyntax.lowercased)
        let hasTransferEncoding = headers.contains { HTTPSyntax.equalsIgnoringCase($0.name, "transfer-encoding") }

        if hasTransferEncoding {
            guard lengths.isEmpty else {
                throw .invalid(400, "bad_request", "both Transfer-Encoding and Content-Length")
            }
            guard minorVersion == 1 else {
                throw .invalid(400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request")
            }
            guard codings.last == "chunked", codings.dropLast().allSatisfy({ $0 != "chunked" }) else {
                throw .invalid(400, "bad_request", "Transfer-Encoding must end in chunked, got \(codings)")
            }
            guard codings.count == 1 else {
                throw .invalid(
                    501, "not_implemented",
                    "unsupported transfer coding \(codings.dropLast().joined(separator: ", ")); send JSON plainly")
            }
            return .chunked
        }
        guard let first = lengths.first else { return .none }
        guard lengths.allSatisfy({ $0 == first }) else {
            throw .invalid(400, "bad_request", "conflicting Content-Length values \(lengths.joined(separator: ", "))")
        }
        guard !first.isEmpty, first.utf8.allSatisfy({ HTTPSyntax.decimalDigit($0) != nil }) else {
            throw .invalid(400, "bad_request", "invalid Content-Length \(HTTPSyntax.quoted(Array(first.utf8)))")
        }
        // Digits beyond Int's range are a length no limit admits.
        return .length(Int(first) ?? Int.max)
    }
}

extension HTTPSyntax {
    static func decimalDigit(_ byte: UInt8) -> Int? {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) ? Int(byte - UInt8(ascii: "0")) : nil
    }
}
