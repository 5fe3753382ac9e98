import CCurl
import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// One HTTP GET as libcurl should perform it.
struct HTTPRequest: Sendable {
    var url: String
    var headers: [String] = []
    /// Ask for the bytes from this offset on (`Range: bytes=N-`); the server may ignore it.
    var rangeStart: UInt64?
    var userAgent = "hcos-os-agent"
    var caFile: String?
    var connectTimeout = 30
    /// Abort when fewer than `lowSpeedLimit` bytes/s arrive for `lowSpeedTime` seconds: a stalled
    /// server must not hold an upgrade forever, a slow link must not fail it.
    var lowSpeedLimit = 1024
    var lowSpeedTime = 60

    init(url: String) { self.url = url }
}

/// The status line and headers of the final response (after redirects).
struct HTTPResponseHead: Sendable {
    var status: Int
    var reason: String
    /// Header names lowercased, in arrival order.
    var headers: [(name: String, value: String)]
    var url: String

    func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name == lower }?.value
    }

    /// "404 Not Found": the reason phrase the server sent, or the standard one (HTTP/2 sends none).
    var statusText: String {
        let phrase = reason.isEmpty ? Self.standardReasons[status] ?? "" : reason
        return phrase.isEmpty ? "\(status)" : "\(status) \(phrase)"
    }

    static let standardReasons: [Int: String] = [
        200: "OK", 206: "Partial Content", 301: "Moved Permanently", 302: "Found", 307: "Temporary Redirect",
        400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
        408: "Request Timeout", 410: "Gone", 416: "Range Not Satisfiable", 429: "Too Many Requests",
        500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
    ]
}

/// libcurl's easy interface (https://curl.se/libcurl/c/libcurl-easy.html), wrapped once: the only
/// place in the package that holds a `CURL *`, a C callback or an unmanaged pointer. One handle
/// performs requests one after another and keeps connections alive between them.
final class CurlEasy {
    /// A libcurl failure: its CURLcode and the text of CURLOPT_ERRORBUFFER.
    struct Failure: Error, CustomStringConvertible, Sendable {
        var code: Int
        var text: String
        var description: String { "curl error \(code): \(text)" }
    }

    private static let globalInit: CURLcode = curl_global_init(Int(CURL_GLOBAL_DEFAULT))

    private let handle: UnsafeMutableRawPointer
    private let errorBuffer: UnsafeMutablePointer<CChar>

    init() throws {
        guard Self.globalInit == CURLE_OK else {
            throw HCOSError(.io, "libcurl: curl_global_init failed (code \(Self.globalInit.rawValue))")
        }
        guard let handle = curl_easy_init() else { throw HCOSError(.io, "libcurl: curl_easy_init failed") }
        self.handle = handle
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        curl_easy_cleanup(handle)
        errorBuffer.deallocate()
    }

    /// Performs a GET, following redirects. `onHead` sees the final response's head before its
    /// first body byte (or at the end, for an empty body); `onBody` gets the body in pieces as they
    /// arrive. An error thrown by either aborts the transfer and is rethrown. Transport failures
    /// throw an `HCOSError` that names the URL and the problem (refused, TLS, timeout, cut off).
    @discardableResult
    func get(
        _ request: HTTPRequest, onHead: (HTTPResponseHead) throws -> Void,
        onBody: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> HTTPResponseHead {
        try withoutActuallyEscaping(onHead) { onHead in
            try withoutActuallyEscaping(onBody) { onBody in
                let transfer = Transfer(handle: handle, url: request.url, onHead: onHead, onBody: onBody)
                return try perform(request, transfer: transfer)
            }
        }
    }

    private func perform(_ request: HTTPRequest, transfer: Transfer) throws -> HTTPResponseHead {
        curl_easy_reset(handle)
        errorBuffer[0] = 0
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        for header in request.headers {
            guard let appended = curl_slist_append(headerList, header) else {
                throw HCOSError(.io, "libcurl: curl_slist_append failed")
            }
            headerList = appended
        }
        let context = Unmanaged.passUnretained(transfer).toOpaque()
        var status = CURLE_OK
        func set(_ result: CURLcode) { if status == CURLE_OK { status = result } }
        set(hcos_curl_setopt_string(handle, CURLOPT_URL, request.url))
        set(hcos_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer))
        set(hcos_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        set(hcos_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 1))
        set(hcos_curl_setopt_long(handle, CURLOPT_MAXREDIRS, 10))
        set(hcos_curl_setopt_long(handle, CURLOPT_PROTOCOLS, Int(CURLPROTO_HTTP | CURLPROTO_HTTPS)))
        set(hcos_curl_setopt_long(handle, CURLOPT_REDIR_PROTOCOLS, Int(CURLPROTO_HTTP | CURLPROTO_HTTPS)))
        set(hcos_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, request.connectTimeout))
        set(hcos_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, request.lowSpeedLimit))
        set(hcos_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, request.lowSpeedTime))
        set(hcos_curl_setopt_string(handle, CURLOPT_USERAGENT, request.userAgent))
        if let caFile = request.caFile { set(hcos_curl_setopt_string(handle, CURLOPT_CAINFO, caFile)) }
        if let start = request.rangeStart, start > 0 {
            set(hcos_curl_setopt_string(handle, CURLOPT_RANGE, "\(start)-"))
        }
        if let headerList { set(hcos_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, headerList)) }
        set(hcos_curl_setopt_callback(handle, CURLOPT_HEADERFUNCTION, curlHeaderCallback))
        set(hcos_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, context))
        set(hcos_curl_setopt_callback(handle, CURLOPT_WRITEFUNCTION, curlWriteCallback))
        set(hcos_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context))
        guard status == CURLE_OK else {
            throw HCOSError(.io, "libcurl: setting options for \(request.url) failed", cause: failure(status))
        }

        let result = withExtendedLifetime(transfer) { curl_easy_perform(handle) }
        if let error = transfer.error { throw error }
        guard result == CURLE_OK else { throw transportError(result, url: request.url, transfer: transfer) }
        return try transfer.deliverHead()
    }

    private func failure(_ code: CURLcode) -> Failure {
        let text = errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: curl_easy_strerror(code))
        return Failure(code: Int(code.rawValue), text: text)
    }

    /// Names the problem in words an operator can act on; the curl code and text are the cause.
    private func transportError(_ code: CURLcode, url: String, transfer: Transfer) -> HCOSError {
        let cause = failure(code)
        let what: String
        var errorCode = HCOSError.Code.io
        switch code {
        case CURLE_COULDNT_CONNECT:
            var osErrno = 0
            _ = hcos_curl_getinfo_long(handle, CURLINFO_OS_ERRNO, &osErrno)
            what = osErrno == Int(ECONNREFUSED) ? "connection refused" : "cannot connect"
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            what = "cannot resolve the host name"
        case CURLE_OPERATION_TIMEDOUT:
            errorCode = .timeout
            what =
                transfer.bodyBytes == 0 && transfer.head == nil
                ? "timed out waiting for the server"
                : "timed out: the transfer stalled after \(transfer.bodyBytes) bytes"
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
            CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH,
            CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED,
            CURLE_SSL_SHUTDOWN_FAILED, CURLE_SSL_CRL_BADFILE, CURLE_USE_SSL_FAILED:
            what = "TLS failure"
        case CURLE_PARTIAL_FILE, CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_SEND_ERROR, CURLE_HTTP2,
            CURLE_HTTP2_STREAM:
            what = "the connection broke after \(transfer.bodyBytes) bytes of the response body"
        case CURLE_TOO_MANY_REDIRECTS:
            what = "too many redirects"
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT:
            errorCode = .invalidArgument
            what = "not a usable http(s) URL"
        default:
            what = "transfer failed"
        }
        return HCOSError(errorCode, "GET \(url): \(what)", cause: cause)
    }
}

/// The state of one transfer, reached from libcurl's C callbacks through an unmanaged pointer.
private final class Transfer {
    let handle: UnsafeMutableRawPointer
    let url: String
    let onHead: (HTTPResponseHead) throws -> Void
    let onBody: (UnsafeRawBufferPointer) throws -> Void
    /// Header lines of the latest response (a redirect or 1xx starts a new block).
    var statusLine = ""
    var headerLines: [String] = []
    var head: HTTPResponseHead?
    var bodyBytes: UInt64 = 0
    var error: (any Error)?

    init(
        handle: UnsafeMutableRawPointer, url: String, onHead: @escaping (HTTPResponseHead) throws -> Void,
        onBody: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) {
        self.handle = handle
        self.url = url
        self.onHead = onHead
        self.onBody = onBody
    }

    func header(_ line: String) {
        let trimmed = line.trimmed()
        if trimmed.hasPrefix("HTTP/") {
            statusLine = trimmed
            headerLines = []
        } else if !trimmed.isEmpty {
            headerLines.append(trimmed)
        }
    }

    /// Builds the head from what arrived and hands it to `onHead` once.
    @discardableResult
    func deliverHead() throws -> HTTPResponseHead {
        if let head { return head }
        var status = 0
        _ = hcos_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        var effective: UnsafeMutablePointer<CChar>?
        _ = hcos_curl_getinfo_string(handle, CURLINFO_EFFECTIVE_URL, &effective)
        // "HTTP/1.1 404 Not Found": the reason is everything after the code.
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        let reason = parts.count == 3 ? String(parts[2]) : ""
        let headers = headerLines.compactMap { line -> (name: String, value: String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]).lowercased(), String(line[line.index(after: colon)...]).trimmed())
        }
        let made = HTTPResponseHead(
            status: status, reason: reason, headers: headers, url: effective.map { String(cString: $0) } ?? url)
        head = made
        try onHead(made)
        return made
    }

    func body(_ bytes: UnsafeRawBufferPointer) -> Bool {
        do {
            try deliverHead()
            bodyBytes += UInt64(bytes.count)
            try onBody(bytes)
            return true
        } catch {
            self.error = error
            return false
        }
    }
}

private func curlHeaderCallback(
    _ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?
) -> Int {
    guard let data, let context else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
    let bytes = UnsafeRawBufferPointer(start: data, count: size * count)
    transfer.header(String(decoding: bytes, as: UTF8.self))
    return size * count
}

private func curlWriteCallback(
    _ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?
) -> Int {
    guard let context else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
    // Returning less than size * count makes libcurl abort with CURLE_WRITE_ERROR; the Swift
    // error is kept in `transfer.error` and rethrown by `get`.
    return transfer.body(UnsafeRawBufferPointer(start: data, count: size * count)) ? size * count : 0
}
