import Digest
import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// Streams one HTTP resource into `destination + ".part"` and renames it into place when it is
/// complete. A partial file is resumed with a Range request (RFC 9110 §14); a server that answers
/// 200 instead of 206 gets the file rewritten from the start. `destination + ".part.info"` records
/// which source the partial bytes belong to (and the entity tag, sent as If-Range), so a partial
/// file of another source is never continued.
struct ResumableDownload {
    /// A blob the registry named: its bytes must hash to `digest` and number `size`.
    struct Expected {
        var digest: String
        var size: UInt64
    }

    let curl: CurlEasy
    let request: HTTPRequest
    let destination: String
    /// What the partial file belongs to: the URL, or for a registry blob its digest.
    let identity: String
    let expected: Expected?
    /// Bytes the download must leave free on the destination's file system (`Fetcher.reserve`).
    let reserve: UInt64
    let logger: Logger

    var part: String { destination + ".part" }
    var infoPath: String { destination + ".part.info" }

    /// Writes are gathered to this size: few syscalls, bounded memory.
    static let bufferSize = 1 << 20
    /// Progress is reported at most this often.
    static let progressInterval = Duration.milliseconds(100)

    func run(progress: (FetchProgress) -> Void) throws -> FetchResult {
        do {
            return try withoutActuallyEscaping(progress) { try attempt(progress: $0) }
        } catch let error as SystemError {
            // Every local file failure says which file; a full disk has its own code.
            let subject = error.subject ?? part
            if error.errno == ENOSPC || error.errno == EDQUOT {
                removePart()
                throw HCOSError(
                    .noSpace, "writing \(subject): no space left on the device (partial download deleted)", cause: error
                )
            }
            throw HCOSError(.io, "downloading \(request.url) to \(subject) failed", cause: error)
        } catch let error as HCOSError where error.code == .noSpace {
            // Resuming into a full disk cannot succeed, and the partial file is what fills it.
            removePart()
            throw error
        }
    }

    /// Refuses a download that would not fit, leaving `reserve` bytes free.
    private func checkSpace(remaining: UInt64) throws {
        let directory = FileSystem.parent(of: destination)
        guard let available = try? FileSystem.availableSpace(directory) else { return }
        guard available >= remaining + reserve else {
            let kept = reserve > 0 ? " and must keep \(ByteSize.format(reserve)) free" : ""
            throw HCOSError(
                .noSpace,
                "\(request.url) needs \(ByteSize.format(remaining)) more on \(directory), which has \(ByteSize.format(available)) free\(kept); nothing more was downloaded"
            )
        }
    }

    private func attempt(progress: @escaping (FetchProgress) -> Void) throws -> FetchResult {
        let file = try openPart()
        var offset = try file.size()
        let saved = PartInfo.read(infoPath)
        if offset > 0, let saved, saved.source != identity {
            logger.info("discarding a partial download of another source", [("partial", saved.source)])
            offset = 0
        } else if let expected, offset > expected.size {
            logger.info("discarding a partial download longer than the blob", [("bytes", "\(offset)")])
            offset = 0
        }
        if offset == 0, try file.size() > 0 { try file.truncate(to: 0) }
        let sink = try Sink(file: file, offset: offset, hashing: expected != nil, progress: progress)

        if let expected, offset == expected.size {
            // Complete but not renamed (interrupted just before): verify instead of downloading.
            return try finish(sink, total: expected.size, resumedFrom: offset)
        }

        var request = request
        request.rangeStart = offset > 0 ? offset : nil
        if offset > 0, let validator = saved?.validator { request.headers.append("If-Range: \(validator)") }
        try PartInfo(source: identity, validator: nil).write(infoPath)
        if offset > 0 { logger.info("resuming a partial download", [("from", "\(offset)")]) }

        var total = expected?.size
        var resumedFrom = offset
        var failure: HTTPStatusError?
        var rangeNotSatisfiable = false
        do {
            try curl.get(
                request,
                onHead: { head in
                    switch head.status {
                    case 206:
                        let range = ContentRange(head.header("content-range"))
                        guard let range, range.start == offset else {
                            throw HCOSError(
                                .io,
                                "GET \(request.url): asked for bytes \(offset)- and got Content-Range '\(head.header("content-range") ?? "")'"
                            )
                        }
                        total = range.total ?? total
                    case 200:
                        if offset > 0 {
                            logger.info("the server ignored the Range request; downloading from the start")
                            try sink.restart()
                            offset = 0
                            resumedFrom = 0
                        }
                        total = head.header("content-length").flatMap { UInt64($0) } ?? total
                    case 416 where offset > 0:
                        rangeNotSatisfiable = true
                        total = ContentRange(head.header("content-range"))?.total
                    default:
                        failure = HTTPStatusError(head: head, url: request.url, body: [])
                    }
                    if failure == nil, head.status == 200 || head.status == 206, let total {
                        try checkSpace(remaining: total > offset ? total - offset : 0)
                    }
                    if head.status == 200 || head.status == 206, let validator = Self.validator(head) {
                        try PartInfo(source: identity, validator: validator).write(infoPath)
                    }
                    if failure == nil && !rangeNotSatisfiable { sink.report(total: total, force: true) }
                },
                onBody: { bytes in
                    if failure != nil {
                        // Keep the start of an error body: registries explain the error there.
                        if let count = failure?.body.count, count < 65536 {
                            failure?.body += bytes.prefix(65536 - count)
                        }
                    } else if !rangeNotSatisfiable {
                        try sink.append(bytes, total: total)
                    }
                })
            try sink.flush()
        } catch {
            // Keep every byte that arrived, so the next attempt resumes after them.
            try? sink.flush()
            throw error
        }

        if let failure {
            if sink.offset == 0 { removePart() }
            throw failure
        }
        if rangeNotSatisfiable {
            guard let total, total == sink.offset else {
                // The partial file is longer than (or unrelated to) what the server has now.
                logger.info("the server cannot continue the partial download; downloading from the start")
                removePart()
                return try run(progress: progress)
            }
        }
        // Without a length (chunked encoding) the end of the response is the end of the file.
        let size = total ?? sink.offset
        guard sink.offset == size else {
            throw HCOSError(.io, "GET \(request.url): the response ended after \(sink.offset) of \(size) bytes")
        }
        return try finish(sink, total: size, resumedFrom: resumedFrom)
    }

    /// Checks the digest (registry blobs), then fsyncs the file, renames it over the destination
    /// and fsyncs the directory.
    private func finish(_ sink: Sink, total: UInt64, resumedFrom: UInt64) throws -> FetchResult {
        var digest: String?
        if let expected {
            let actual = try sink.digest()
            guard actual == expected.digest, sink.offset == expected.size else {
                removePart()
                throw HCOSError(
                    .corrupt,
                    "\(request.url): the downloaded blob has \(sink.offset) bytes and digest \(actual); the manifest says \(expected.size) bytes, \(expected.digest) (partial file deleted)"
                )
            }
            digest = actual
        }
        try sink.file.sync()
        try Syscall.call("rename", destination) { rename(part, destination) }
        try FileSystem.syncDirectory(FileSystem.parent(of: destination))
        unlink(infoPath)
        sink.report(total: total, force: true)
        return FetchResult(path: destination, size: sink.offset, resumedFrom: resumedFrom, digest: digest)
    }

    private func openPart() throws -> FileDescriptor {
        do {
            return try FileDescriptor(path: part, flags: O_RDWR | O_CREAT, mode: 0o644)
        } catch let error as SystemError where error.errno == ENOENT {
            throw HCOSError(.notFound, "cannot create \(part): its directory does not exist", cause: error)
        } catch let error as SystemError where error.errno == ENOSPC || error.errno == EDQUOT {
            throw HCOSError(.noSpace, "cannot create \(part): no space left on the device", cause: error)
        } catch let error as SystemError {
            throw HCOSError(.io, "cannot create \(part)", cause: error)
        }
    }

    private func removePart() {
        unlink(part)
        unlink(infoPath)
    }

    /// A strong entity tag, else Last-Modified: what If-Range may carry (RFC 9110 §13.1.5).
    static func validator(_ head: HTTPResponseHead) -> String? {
        if let etag = head.header("etag"), !etag.hasPrefix("W/") { return etag }
        return head.header("last-modified")
    }
}

/// Where received bytes go: a buffer flushed to the partial file, the running digest, progress.
private final class Sink {
    let file: FileDescriptor
    private(set) var offset: UInt64
    private var buffer: [UInt8] = []
    private var bufferStart: UInt64
    private let hashing: Bool
    private var hasher: SHA256?
    private let progress: (FetchProgress) -> Void
    private var lastReport: ContinuousClock.Instant?

    init(file: FileDescriptor, offset: UInt64, hashing: Bool, progress: @escaping (FetchProgress) -> Void) throws {
        self.file = file
        self.offset = offset
        self.bufferStart = offset
        self.hashing = hashing
        self.progress = progress
        buffer.reserveCapacity(ResumableDownload.bufferSize)
        if hashing {
            // The bytes already on disk are part of the digest: hash them first.
            var hasher = try SHA256()
            var position: UInt64 = 0
            while position < offset {
                let chunk = try file.read(at: position, count: Int(min(UInt64(SHA256.chunkSize), offset - position)))
                guard !chunk.isEmpty else { break }
                try hasher.update(chunk)
                position += UInt64(chunk.count)
            }
            self.hasher = consume hasher
        }
    }

    func append(_ bytes: UnsafeRawBufferPointer, total: UInt64?) throws {
        buffer.append(contentsOf: bytes)
        offset += UInt64(bytes.count)
        if buffer.count >= ResumableDownload.bufferSize { try flush() }
        report(total: total, force: false)
    }

    func flush() throws {
        guard !buffer.isEmpty else { return }
        do {
            try file.write(buffer, at: bufferStart)
        } catch let error as SystemError where error.errno == ENOSPC || error.errno == EDQUOT {
            throw HCOSError(
                .noSpace, "writing \(file.path): no space left on the device (partial download deleted)", cause: error)
        } catch let error as SystemError {
            throw HCOSError(.io, "writing \(file.path)", cause: error)
        }
        if hashing { try hasher?.update(buffer) }
        bufferStart += UInt64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }

    /// The server sent the whole file instead of the rest: start over.
    func restart() throws {
        buffer.removeAll(keepingCapacity: true)
        try file.truncate(to: 0)
        offset = 0
        bufferStart = 0
        if hashing { hasher = try SHA256() }
    }

    func digest() throws -> String {
        try flush()
        guard let hasher = hasher.take() else { return "" }
        return "sha256:" + (try hasher.finalizeHex())
    }

    func report(total: UInt64?, force: Bool) {
        let now = ContinuousClock.now
        if !force, let lastReport, now - lastReport < ResumableDownload.progressInterval { return }
        lastReport = now
        progress(FetchProgress(done: offset, total: total))
    }
}

/// `Content-Range: bytes 100-999/1000` or `bytes */1000` (RFC 9110 §14.4).
struct ContentRange: Equatable {
    var start: UInt64?
    var total: UInt64?

    init(start: UInt64?, total: UInt64?) {
        self.start = start
        self.total = total
    }

    init?(_ text: String?) {
        guard let text, text.hasPrefix("bytes ") else { return nil }
        let spec = text.dropFirst(6).split(separator: "/", maxSplits: 1)
        guard spec.count == 2 else { return nil }
        total = spec[1] == "*" ? nil : UInt64(spec[1])
        if spec[0] == "*" {
            start = nil
        } else {
            guard let dash = spec[0].firstIndex(of: "-"), let first = UInt64(spec[0][..<dash]) else { return nil }
            start = first
        }
    }
}

/// The small record next to a partial file: which source it belongs to and its validator.
struct PartInfo: Equatable {
    var source: String
    var validator: String?

    static func read(_ path: String) -> PartInfo? {
        guard let text = try? FileSystem.readString(path) else { return nil }
        var source: String?
        var validator: String?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("source ") { source = String(line.dropFirst(7)) }
            if line.hasPrefix("validator ") { validator = String(line.dropFirst(10)) }
        }
        return source.map { PartInfo(source: $0, validator: validator) }
    }

    func write(_ path: String) throws {
        var text = "source \(source)\n"
        if let validator { text += "validator \(validator)\n" }
        try FileSystem.writeDurably(text, to: path)
    }
}
