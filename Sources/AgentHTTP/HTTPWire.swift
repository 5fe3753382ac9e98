import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// Why reading or parsing a message stopped.
enum MessageError: Error {
    /// The bytes break HTTP/1.1; a server answers `status` with `code` and `message`.
    case invalid(Int, String, String)
    /// The deadline passed before the message was complete.
    case timedOut
    /// The server is stopping.
    case woken
    /// The peer closed the connection before the message was complete.
    case closed
    case io(SystemError)
}

/// How a message's body is delimited (RFC 9112 §6.3).
enum BodyFraming: Equatable {
    case none
    case length(Int)
    case chunked
    /// Responses only: everything until the server closes the connection.
    case untilClose
}

/// Buffered reads from a connected socket under one deadline per message; optionally woken by a
/// second descriptor (the server's stop pipe).
struct SocketReader {
    let fd: Int32
    let wake: Int32?
    var deadline: ContinuousClock.Instant
    private var buffer: [UInt8] = []
    private var start = 0
    /// Bytes received over the connection's life.
    private(set) var received = 0

    init(fd: Int32, wake: Int32? = nil, deadline: ContinuousClock.Instant) {
        self.fd = fd
        self.wake = wake
        self.deadline = deadline
    }

    /// The bytes received and not consumed yet.
    var available: ArraySlice<UInt8> { buffer[start...] }

    mutating func consume(_ count: Int) -> ArraySlice<UInt8> {
        let taken = buffer[start..<(start + count)]
        start += count
        return taken
    }

    /// Receives more bytes; false at end of file.
    mutating func fill() throws(MessageError) -> Bool {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 1 << 16 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
        let remaining = ContinuousClock.now.duration(to: deadline)
        guard remaining > .zero else { throw .timedOut }
        let (seconds, attoseconds) = remaining.components
        let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
        do {
            switch try UnixSocket.waitReadable(fd, wake: wake, milliseconds: milliseconds) {
            case .timedOut: throw MessageError.timedOut
            case .woken: throw MessageError.woken
            case .readable: break
            }
            let bytes = try UnixSocket.receive(fd, maxCount: 16384)
            if bytes.isEmpty { return false }
            received += bytes.count
            buffer.append(contentsOf: bytes)
            return true
        } catch let error as MessageError {
            throw error
        } catch let error as SystemError {
            throw .io(error)
        } catch {
            throw .io(SystemError("recv", errno: EIO))
        }
    }

    /// Waits until at least `count` bytes are available; `.closed` if the peer closes first.
    mutating func require(_ count: Int) throws(MessageError) {
        while available.count < count {
            guard try fill() else { throw .closed }
        }
    }

    /// The header section of the next message (start line and fields, without the empty line
    /// that ends it); nil when the peer closed the connection before sending a byte of it.
    /// Empty lines before the start line are skipped (RFC 9112 §2.2). Fails as soon as a bare
    /// LF, a NUL or more than `limit` bytes show up, not only when the section is complete.
    mutating func readHead(limit: Int) throws(MessageError) -> [UInt8]? {
        var skipped = 0
        var scanned = 0
        while true {
            while available.starts(with: [HTTPSyntax.cr, HTTPSyntax.lf]) {
                _ = consume(2)
                skipped += 2
                scanned = 0
                guard skipped <= limit else {
                    throw .invalid(431, "headers_too_large", "more than \(limit) bytes of empty lines")
                }
            }
            // Offsets, not slices, survive fill(): a slice held across it would copy the buffer.
            let terminator: [UInt8] = [HTTPSyntax.cr, HTTPSyntax.lf, HTTPSyntax.cr, HTTPSyntax.lf]
            if let length = offset(of: terminator, from: max(0, scanned - 3)) {
                guard length + 4 <= limit else { throw headTooLarge(limit) }
                try Self.checkEarly(available.prefix(length), from: max(0, scanned - 1))
                return Array(consume(length + 4).dropLast(4))
            }
            try Self.checkEarly(available, from: max(0, scanned - 1))
            scanned = available.count
            guard scanned <= limit else { throw headTooLarge(limit) }
            guard try fill() else {
                if available.isEmpty { return nil }
                throw .closed
            }
        }
    }

    /// Where `pattern` starts in the available bytes, searching from `from`.
    private func offset(of pattern: [UInt8], from: Int) -> Int? {
        let bytes = available
        guard let range = bytes[(bytes.startIndex + from)...].firstRange(of: pattern) else { return nil }
        return range.lowerBound - bytes.startIndex
    }

    private func headTooLarge(_ limit: Int) -> MessageError {
        .invalid(431, "headers_too_large", "the header section is larger than \(limit) bytes")
    }

    /// A bare LF or a NUL is an error however the rest of the head turns out; failing here keeps
    /// a sloppy client from waiting for a timeout.
    private static func checkEarly(_ bytes: ArraySlice<UInt8>, from offset: Int) throws(MessageError) {
        var index = bytes.startIndex + offset
        while index < bytes.endIndex {
            switch bytes[index] {
            case 0:
                throw .invalid(400, "bad_request", "NUL byte in the header section")
            case HTTPSyntax.lf where index == bytes.startIndex || bytes[index - 1] != HTTPSyntax.cr:
                throw .invalid(400, "bad_request", "bare LF in the header section")
            default:
                break
            }
            index += 1
        }
    }

    /// One CRLF-terminated line of at most `limit` bytes (chunk sizes, trailer fields).
    mutating func readLine(limit: Int) throws(MessageError) -> [UInt8] {
        var scanned = 0
        while true {
            if let end = offset(of: [HTTPSyntax.lf], from: scanned) {
                guard end > 0, available.dropFirst(end - 1).first == HTTPSyntax.cr else {
                    throw .invalid(400, "bad_request", "bare LF in chunked framing")
                }
                guard end <= limit else {
                    throw .invalid(400, "bad_request", "a chunk line is longer than \(limit) bytes")
                }
                return Array(consume(end + 1).dropLast(2))
            }
            scanned = available.count
            guard scanned <= limit else {
                throw .invalid(400, "bad_request", "a chunk line is longer than \(limit) bytes")
            }
            guard try fill() else { throw .closed }
        }
    }

    /// A body of `framing`, at most `limit` bytes (413 beyond); trailer fields of a chunked body
    /// are read and dropped, counted against `trailerLimit`.
    mutating func readBody(_ framing: BodyFraming, limit: Int, trailerLimit: Int) throws(MessageError) -> [UInt8] {
        switch framing {
        case .none:
            return []
        case .length(let length):
            guard length <= limit else { throw Self.bodyTooLarge(limit) }
            try require(length)
            return Array(consume(length))
        case .untilClose:
            while try fill() {
                guard available.count <= limit else { throw Self.bodyTooLarge(limit) }
            }
            return Array(consume(available.count))
        case .chunked:
            return try readChunked(limit: limit, trailerLimit: trailerLimit)
        }
    }

    /// chunked transfer coding (RFC 9112 §7.1): hex sizes, extensions ignored, trailers dropped.
    private mutating func readChunked(limit: Int, trailerLimit: Int) throws(MessageError) -> [UInt8] {
        var body: [UInt8] = []
        while true {
            let line = try readLine(limit: 1024)
            let sizeEnd = line.firstIndex { $0 == UInt8(ascii: ";") || $0 == HTTPSyntax.space || $0 == HTTPSyntax.tab }
            let digits = line[line.startIndex..<(sizeEnd ?? line.endIndex)]
            guard !digits.isEmpty, digits.count <= 16, digits.allSatisfy({ HTTPSyntax.hexValue($0) != nil }) else {
                throw .invalid(400, "bad_request", "invalid chunk size \(HTTPSyntax.quoted(line))")
            }
            guard line.allSatisfy(HTTPSyntax.isFieldValueChar) else {
                throw .invalid(400, "bad_request", "control character in a chunk extension")
            }
            let size = digits.reduce(UInt64(0)) { $0 << 4 | UInt64(HTTPSyntax.hexValue($1) ?? 0) }
            guard size <= UInt64(limit - body.count) else { throw Self.bodyTooLarge(limit) }
            if size == 0 { break }
            try require(Int(size) + 2)
            body += consume(Int(size))
            guard consume(2).elementsEqual([HTTPSyntax.cr, HTTPSyntax.lf]) else {
                throw .invalid(400, "bad_request", "chunk data not followed by CRLF")
            }
        }
        var trailerBytes = 0
        while true {
            let line = try readLine(limit: trailerLimit)
            trailerBytes += line.count + 2
            guard trailerBytes <= trailerLimit else {
                throw .invalid(431, "headers_too_large", "the trailer section is larger than \(trailerLimit) bytes")
            }
            if line.isEmpty { return body }
            _ = try HTTPSyntax.field(line[...])
        }
    }

    private static func bodyTooLarge(_ limit: Int) -> MessageError {
        .invalid(413, "body_too_large", "the body is larger than \(limit) bytes")
    }
}
