import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// How far a download is; `total` is nil while the server has not said.
public struct FetchProgress: Sendable, Equatable {
    public var done: UInt64
    public var total: UInt64?

    public init(done: UInt64, total: UInt64?) {
        self.done = done
        self.total = total
    }
}

/// A bundle file that is complete on local disk.
public struct FetchResult: Sendable, Equatable {
    /// The complete file: the destination, or for a `.file` source the source path itself.
    public var path: String
    public var size: UInt64
    /// Bytes that were already in the partial file and not downloaded again (0: from scratch).
    public var resumedFrom: UInt64
    /// For an OCI source, the verified digest of the bundle blob ("sha256:...").
    public var digest: String?

    public init(path: String, size: UInt64, resumedFrom: UInt64, digest: String?) {
        self.path = path
        self.size = size
        self.resumedFrom = resumedFrom
        self.digest = digest
    }
}

/// Turns an `UpdateSource` into a complete local file: streaming with bounded memory, resumable,
/// with progress. It checks what the transport can check (sizes, and for OCI the blob digest);
/// the caller verifies the bundle's signature and payload digests.
public struct Fetcher: Sendable {
    public let logger: Logger
    /// Registries (`host` or `host:port`) spoken to over plain http. `localhost`, `127.0.0.1` and
    /// `[::1]` always are.
    public let insecureRegistries: [String]
    /// CA bundle to trust instead of the system's.
    public let caFile: String?
    public let userAgent: String
    /// A transfer slower than `lowSpeedLimit` bytes/s for `lowSpeedTime` seconds is a timeout.
    var lowSpeedLimit = 1024
    var lowSpeedTime = 60
    var connectTimeout = 30
    /// Bytes a download must leave free on the destination's file system. A download that
    /// would not fit is refused once the server has said its length, before its first byte is
    /// written, and one that runs out of space deletes its partial file: a node's PERSIST full
    /// of a half-downloaded bundle would break containerd and the journal.
    public var reserve: UInt64 = 0

    public init(
        logger: Logger, insecureRegistries: [String] = [], caFile: String? = nil, userAgent: String = "hcos-os-agent"
    ) {
        self.logger = logger
        self.insecureRegistries = insecureRegistries
        self.caFile = caFile
        self.userAgent = userAgent
    }

    /// Makes `destination` a complete copy of the source (for `.file`, returns the source path
    /// itself: the bundle is read in place). Resumes from `destination + ".part"` when present;
    /// renames into place (fsync file and directory) only when complete. `progress` is called at
    /// most about ten times a second, and once at the end.
    public func fetch(
        _ source: UpdateSource, to destination: String, progress: @Sendable (FetchProgress) -> Void
    ) throws -> FetchResult {
        do {
            switch source {
            case .file(let path):
                let result = try local(path)
                progress(FetchProgress(done: result.size, total: result.size))
                return result
            case .http(let url):
                let download = ResumableDownload(
                    curl: try CurlEasy(), request: request(url), destination: destination, identity: url,
                    expected: nil, reserve: reserve, logger: logger.with([("source", url)]))
                return try download.run(progress: progress)
            case .oci(let reference):
                let client = RegistryClient(reference: reference, fetcher: self, curl: try CurlEasy())
                return try client.fetchBundle(to: destination, progress: progress)
            }
        } catch let status as HTTPStatusError {
            throw status.hcosError
        }
    }

    func request(_ url: String, headers: [String] = []) -> HTTPRequest {
        var request = HTTPRequest(url: url)
        request.headers = headers
        request.userAgent = userAgent
        request.caFile = caFile
        request.lowSpeedLimit = lowSpeedLimit
        request.lowSpeedTime = lowSpeedTime
        request.connectTimeout = connectTimeout
        return request
    }

    private func local(_ path: String) throws -> FetchResult {
        let file: FileDescriptor
        do {
            file = try FileDescriptor(path: path, flags: O_RDONLY)
        } catch let error as SystemError where error.errno == ENOENT {
            throw HCOSError(.notFound, "update bundle \(path) does not exist")
        } catch let error as SystemError {
            throw HCOSError(.io, "cannot open update bundle \(path)", cause: error)
        }
        var info = stat()
        try Syscall.call("fstat", path) { fstat(file.fd, &info) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw HCOSError(.invalidArgument, "update bundle \(path) is not a regular file")
        }
        return FetchResult(path: path, size: UInt64(info.st_size), resumedFrom: 0, digest: nil)
    }
}

/// A response whose status is not what the request needed. Kept inside the module so the
/// registry client can answer a 401 challenge; callers see `hcosError`.
struct HTTPStatusError: Error, Sendable {
    var head: HTTPResponseHead
    var url: String
    /// The start of the response body (registries explain errors there).
    var body: [UInt8]

    var hcosError: HCOSError {
        let code: HCOSError.Code =
            switch head.status {
            case 404, 410: .notFound
            case 408, 504: .timeout
            case 401, 403: .invalidArgument
            default: .io
            }
        var message = "GET \(url): \(head.statusText)"
        if let detail = registryErrors { message += " (\(detail))" }
        return HCOSError(code, message)
    }

    /// The `errors` array of the distribution spec's error body: "MANIFEST_UNKNOWN: manifest unknown".
    var registryErrors: String? {
        struct Body: Decodable {
            struct Entry: Decodable {
                var code: String
                var message: String?
            }
            var errors: [Entry]
        }
        guard let decoded = try? JSONDecoder().decode(Body.self, from: Data(body)), !decoded.errors.isEmpty else {
            return nil
        }
        return decoded.errors.map { entry in entry.message.map { "\(entry.code): \($0)" } ?? entry.code }.joined(
            separator: "; ")
    }
}
