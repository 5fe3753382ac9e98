import Foundation
import HCOSCore

/// A position in the console output: lines that arrive after it are "new". Take one before an
/// action (reset, reboot, upgrade) and wait for the next boot's marker after it.
public struct ConsoleMark: Sendable, Hashable, Comparable {
    public let line: Int

    public init(line: Int) {
        self.line = line
    }

    /// The very beginning of the output.
    public static let start = ConsoleMark(line: 0)

    public static func < (a: ConsoleMark, b: ConsoleMark) -> Bool { a.line < b.line }
}

/// A console line that matched, with the mark just after it (to wait for the following one).
public struct ConsoleMatch: Sendable {
    public let line: String
    public let index: Int
    /// When the line arrived on the host (monotonic clock): event times measured from the
    /// host, whenever the caller got round to looking.
    public let at: ContinuousClock.Instant
    public var next: ConsoleMark { ConsoleMark(line: index + 1) }
}

/// The system console (serial0): line waits with timeouts that report the console's tail.
public final class SerialConsole: Sendable {
    let port: SerialPort
    /// More context for a failure (qemu's own log, its exit status), supplied by the VM.
    private let diagnostics: @Sendable () -> String
    static let pollInterval = Duration.milliseconds(20)

    init(port: SerialPort, diagnostics: @escaping @Sendable () -> String = { "" }) {
        self.port = port
        self.diagnostics = diagnostics
    }

    /// Reads a console served on a unix socket (qemu's chardev, or a test peer).
    public convenience init(connectingTo path: String, logPath: String? = nil) throws {
        self.init(port: try SerialPort(name: "console", connectingTo: path, logPath: logPath))
    }

    /// Now: only lines completed after this call count as after the mark.
    public func mark() -> ConsoleMark { ConsoleMark(line: port.lineEnd) }

    /// Completed lines since `mark` (carriage returns removed).
    public func lines(after mark: ConsoleMark = .start) -> [String] {
        port.lines(from: mark.line).lines
    }

    /// The last `count` lines, including an unfinished one.
    public func tail(_ count: Int = 30) -> [String] { port.tail(count) }

    /// False once the other end (qemu) closed the console.
    public var isOpen: Bool { !port.isClosed }

    /// Sends input to the console (a getty or GRUB menu on serial0).
    public func send(_ text: String) throws { try port.write(Array(text.utf8)) }

    /// The first line at or after `mark` for which `matching` is true.
    public func waitForMatch(
        after mark: ConsoleMark = .start, timeout: Duration, description: String = "a matching line",
        matching predicate: (String) -> Bool
    ) async throws -> ConsoleMatch {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var next = mark.line
        while true {
            let closed = port.isClosed
            let (lines, first) = port.lines(from: next)
            for (offset, line) in lines.enumerated() where predicate(line) {
                let index = first + offset
                return ConsoleMatch(line: line, index: index, at: port.time(ofLine: index) ?? clock.now)
            }
            next = first + lines.count
            if closed {
                throw HCOSError(
                    .io, failure("the console closed (qemu exited) before \(description) appeared"))
            }
            if clock.now >= deadline {
                throw HCOSError(
                    .timeout, failure("\(description) did not appear on the console within \(timeout)"))
            }
            try await Task.sleep(for: SerialConsole.pollInterval)
        }
    }

    /// The first line after `mark` for which `matching` is true.
    public func waitForLine(
        after mark: ConsoleMark = .start, timeout: Duration, matching predicate: (String) -> Bool
    ) async throws -> String {
        try await waitForMatch(after: mark, timeout: timeout, matching: predicate).line
    }

    /// The first line after `mark` that contains `text`.
    public func waitForLine(
        containing text: String, after mark: ConsoleMark = .start, timeout: Duration
    )
        async throws -> String
    {
        try await waitForMatch(after: mark, timeout: timeout, description: "'\(text)'") {
            $0.contains(text)
        }.line
    }

    /// Waits for a machine-readable marker line (`HCOS-READY {json}`, `HCOS-BOOT slot=A`) and
    /// returns what follows the marker name on that line. The marker may start mid-line: kernel
    /// messages can interleave with a service's console output.
    public func waitForMarker(_ name: String, after mark: ConsoleMark = .start, timeout: Duration)
        async throws -> String
    {
        try await waitForMarkerMatch(name, after: mark, timeout: timeout).payload
    }

    /// Like `waitForMarker`, also returning the mark after the marker line.
    public func waitForMarkerMatch(
        _ name: String, after mark: ConsoleMark = .start, timeout: Duration
    )
        async throws -> (payload: String, next: ConsoleMark)
    {
        let match = try await waitForMatch(after: mark, timeout: timeout, description: "marker \(name)") {
            SerialConsole.payload(of: name, in: $0) != nil
        }
        return (SerialConsole.payload(of: name, in: match.line) ?? "", match.next)
    }

    /// The text after `NAME ` (or an empty payload for a bare `NAME`), if the line carries it.
    public static func payload(of marker: String, in line: String) -> String? {
        var search = line[...]
        while let range = search.range(of: marker) {
            let rest = search[range.upperBound...]
            let startsWord =
                range.lowerBound == line.startIndex
                || !isWordCharacter(line[line.index(before: range.lowerBound)])
            if startsWord {
                if rest.isEmpty { return "" }
                if rest.first == " " { return String(rest.dropFirst()).trimmed() }
            }
            search = rest
        }
        return nil
    }

    private static func isWordCharacter(_ c: Character) -> Bool {
        c.isLetter || c.isNumber || c == "-" || c == "_"
    }

    func failure(_ headline: String) -> String {
        var text =
            headline + "\nlast console lines:\n" + tail(30).map { "  | " + $0 }.joined(separator: "\n")
        let extra = diagnostics()
        if !extra.isEmpty { text += "\n" + extra }
        return text
    }
}
