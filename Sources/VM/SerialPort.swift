import Foundation
import HCOSCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One connected serial line. A dedicated thread reads it continuously (qemu drops what a
/// chardev client does not read fast enough), appends every byte to an optional log file and
/// keeps both the raw bytes and the completed lines (carriage returns removed) in memory.
/// Positions are absolute, so a caller's mark stays valid when old data is dropped.
final class SerialPort: Sendable {
    struct Buffer {
        var raw: [UInt8] = []
        var rawBase = 0
        var lines: [String] = []
        /// When each line was completed, on the host's monotonic clock (parallel to `lines`).
        var times: [ContinuousClock.Instant] = []
        var lineBase = 0
        var partial: [UInt8] = []
        var closed = false
    }

    static let maximumRawBytes = 8 << 20
    static let maximumLines = 200_000

    let name: String
    private let buffer = Mutex(Buffer())
    /// The socket; -1 once the reader has closed it. Writers hold the lock while writing, so the
    /// descriptor cannot be closed (and its number reused) under them.
    private let socket: Mutex<Int32>
    private let onOutput: (@Sendable ([UInt8]) -> Void)?

    /// Takes ownership of `fd` and starts reading it.
    init(name: String, fd: Int32, logPath: String?, onOutput: (@Sendable ([UInt8]) -> Void)? = nil)
        throws
    {
        self.name = name
        self.onOutput = onOutput
        self.socket = Mutex(fd)
        var logFD: Int32 = -1
        if let logPath {
            do {
                logFD = try Syscall.call("open", logPath) {
                    open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
                }
            } catch {
                close(fd)
                throw HCOSError(.io, "cannot open serial log \(logPath)", cause: error)
            }
        }
        UnixSocket.setSendTimeout(fd, seconds: 10)
        let log = logFD
        let thread = Thread { [self] in self.readLoop(fd: fd, log: log) }
        thread.name = "hcos-serial-\(name)"
        thread.start()
    }

    /// Connects to a socket (qemu's chardev server) and starts reading it.
    convenience init(
        name: String, connectingTo path: String, logPath: String?,
        onOutput: (@Sendable ([UInt8]) -> Void)? = nil
    ) throws {
        let fd = try UnixSocket.connect(path: path)
        try self.init(name: name, fd: fd, logPath: logPath, onOutput: onOutput)
    }

    private func readLoop(fd: Int32, log: Int32) {
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            let bytes = Array(chunk[0..<n])
            if log >= 0 { try? LogFile.writeAll(log, bytes) }
            onOutput?(bytes)
            let now = ContinuousClock.now
            buffer.withLock { $0.append(bytes, at: now) }
        }
        buffer.withLock { state in
            if !state.partial.isEmpty {
                state.lines.append(SerialPort.decode(state.partial))
                state.times.append(.now)
                state.partial = []
            }
            state.closed = true
        }
        socket.withLock { fd in
            close(fd)
            fd = -1
        }
        if log >= 0 { close(log) }
    }

    /// Sends bytes to the guest. Throws when the line is closed.
    func write(_ bytes: [UInt8]) throws {
        try socket.withLock { fd in
            guard fd >= 0 else { throw HCOSError(.io, "serial line \(name) is closed") }
            try UnixSocket.writeAll(fd, bytes)
        }
    }

    /// Ends the connection; the reader thread sees EOF, closes the socket and exits.
    func shutdown() {
        socket.withLock { fd in
            if fd >= 0 { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    var isClosed: Bool { buffer.withLock { $0.closed } }
    var lineEnd: Int { buffer.withLock { $0.lineBase + $0.lines.count } }
    var rawEnd: Int { buffer.withLock { $0.rawBase + $0.raw.count } }

    /// Completed lines from absolute index `start` (or the oldest kept) and the index after them.
    func lines(from start: Int) -> (lines: [String], first: Int) {
        buffer.withLock { state in
            let first = max(start, state.lineBase)
            let offset = first - state.lineBase
            guard offset < state.lines.count else { return ([], first) }
            return (Array(state.lines[offset...]), first)
        }
    }

    /// When the line at absolute index `index` was completed (nil once it was dropped).
    func time(ofLine index: Int) -> ContinuousClock.Instant? {
        buffer.withLock { state in
            let offset = index - state.lineBase
            return state.times.indices.contains(offset) ? state.times[offset] : nil
        }
    }

    /// The last `count` lines, including an unterminated last line.
    func tail(_ count: Int) -> [String] {
        buffer.withLock { state in
            var result = Array(state.lines.suffix(count))
            if !state.partial.isEmpty {
                result.append(SerialPort.decode(state.partial))
                if result.count > count { result.removeFirst() }
            }
            return result
        }
    }

    /// Raw bytes from absolute offset `start` (or the oldest kept).
    func raw(from start: Int) -> (bytes: [UInt8], first: Int) {
        buffer.withLock { state in
            let first = max(start, state.rawBase)
            let offset = first - state.rawBase
            guard offset < state.raw.count else { return ([], first) }
            return (Array(state.raw[offset...]), first)
        }
    }

    /// Forgets raw bytes before absolute offset `end` (consumed by the reader).
    func discardRaw(before end: Int) {
        buffer.withLock { state in
            let count = min(max(0, end - state.rawBase), state.raw.count)
            state.raw.removeFirst(count)
            state.rawBase += count
        }
    }

    static func decode(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.filter { $0 != 13 }, as: UTF8.self)
    }
}

extension SerialPort.Buffer {
    mutating func append(_ bytes: [UInt8], at now: ContinuousClock.Instant) {
        raw += bytes
        if raw.count > SerialPort.maximumRawBytes {
            let drop = raw.count - SerialPort.maximumRawBytes
            raw.removeFirst(drop)
            rawBase += drop
        }
        var start = bytes.startIndex
        while let newline = bytes[start...].firstIndex(of: 10) {
            partial += bytes[start..<newline]
            lines.append(SerialPort.decode(partial))
            times.append(now)
            partial = []
            start = newline + 1
        }
        partial += bytes[start...]
        if lines.count > SerialPort.maximumLines {
            let drop = lines.count - SerialPort.maximumLines
            lines.removeFirst(drop)
            times.removeFirst(drop)
            lineBase += drop
        }
    }
}

/// Plain file writes for the serial log (not a socket: no MSG_NOSIGNAL).
enum LogFile {
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = try bytes.withUnsafeBytes { buffer in
                try Syscall.call("write") {
                    Glibc.write(fd, buffer.baseAddress.map { $0 + done }, bytes.count - done)
                }
            }
            done += n
        }
    }
}
