import Foundation
import HCOSCore
import Synchronization

/// What a command run in the debug shell printed (stdout and stderr merged, `\r` removed) and
/// its exit status.
public struct ShellResult: Sendable, Equatable {
    public let status: Int32
    public let output: String

    public init(status: Int32, output: String) {
        self.status = status
        self.output = output
    }
}

/// The root shell the image runs on serial1 when booted with `hcos.debug-shell`.
///
/// The other end is an interactive `sh` on a tty: input is echoed, prompts appear, `\n` comes
/// back as `\r\n`. Each command is therefore framed by markers that only the *output* can
/// contain: the shell is sent `printf '%s_%s\n' HCOSBEGIN TAG`, so its echo shows
/// `HCOSBEGIN TAG` and only the executed printf prints `HCOSBEGIN_TAG`. The command runs in
/// `sh -c` with stdin from /dev/null, so it can contain any quotes and cannot swallow the next
/// command's input.
public final class DebugShell: Sendable {
    let port: SerialPort
    private let state = Mutex(State())
    /// A canonical-mode tty line holds at most 4095 bytes; longer input lines are cut.
    static let maximumLineBytes = 3900

    private struct State {
        var sequence: UInt64 = 0
        var busy = false
        var answered = false
    }

    init(port: SerialPort) {
        self.port = port
    }

    /// Talks to a shell served on a unix socket (qemu's serial1 chardev, or a test peer).
    public convenience init(connectingTo path: String, logPath: String? = nil) throws {
        self.init(port: try SerialPort(name: "shell", connectingTo: path, logPath: logPath))
    }

    /// True once a command has completed: the shell is up.
    public var hasAnswered: Bool { state.withLock { $0.answered } }

    /// Runs `command` with `sh -c` and returns its exit status and merged output. Commands run
    /// one at a time; a timeout sends Ctrl-C and throws `.timeout` with the shell's last output.
    public func run(_ command: String, timeout: Duration = .seconds(60)) async throws -> ShellResult {
        if let bad = command.unicodeScalars.first(where: { $0.value < 32 && $0 != "\n" && $0 != "\t" }) {
            throw HCOSError(
                .invalidArgument,
                "debug shell commands cannot contain control character \(bad.value): \(command)")
        }
        let tag: String = try state.withLock { state in
            guard !state.busy else {
                throw HCOSError(.invalidArgument, "the debug shell runs one command at a time")
            }
            state.busy = true
            state.sequence += 1
            return "\(state.sequence)x\(UInt32.random(in: 0...UInt32.max))"
        }
        defer { state.withLock { $0.busy = false } }

        let text = DebugShell.frame(command, tag: tag)
        if let long = text.split(separator: "\n").first(where: {
            $0.utf8.count > DebugShell.maximumLineBytes
        }) {
            throw HCOSError(
                .invalidArgument,
                "a debug shell command line may be at most \(DebugShell.maximumLineBytes) bytes (tty line limit), this one is \(long.utf8.count); split it"
            )
        }
        let start = port.rawEnd
        // Ctrl-U first: discard whatever partial line an earlier, interrupted exchange left.
        try port.write([0x15] + Array(text.utf8))

        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            let (bytes, _) = port.raw(from: start)
            if let (result, consumed) = DebugShell.parse(bytes, tag: tag) {
                port.discardRaw(before: start + consumed)
                state.withLock { $0.answered = true }
                return result
            }
            if port.isClosed {
                throw HCOSError(
                    .io,
                    "the debug shell connection closed while running: \(command)\n\(recentOutput(from: start))"
                )
            }
            if clock.now >= deadline {
                try? port.write([0x03])
                throw HCOSError(
                    .timeout,
                    "debug shell command did not finish within \(timeout): \(command)\n\(recentOutput(from: start))"
                )
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Runs `command` and returns its output; a non-zero status throws `.toolFailed`.
    @discardableResult
    public func check(_ command: String, timeout: Duration = .seconds(60)) async throws -> String {
        let result = try await run(command, timeout: timeout)
        guard result.status == 0 else {
            throw HCOSError(
                .toolFailed,
                "debug shell command exited with status \(result.status): \(command)\n\(result.output)")
        }
        return result.output
    }

    /// Probes until the shell answers: early in boot nothing reads serial1 yet, and the probe
    /// input sent then is lost or arrives as a stale line, so each try is short and independent.
    public func waitUntilReady(timeout: Duration, probeTimeout: Duration = .seconds(3)) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var lastError = "no probe finished"
        while clock.now < deadline {
            do {
                let result = try await run(
                    "echo hcos-shell-ready", timeout: min(probeTimeout, deadline - clock.now))
                if result.output.contains("hcos-shell-ready") { return }
            } catch let error as HCOSError where error.code == .timeout {
                lastError = "\(error)"
            }
            if port.isClosed { break }
        }
        throw HCOSError(
            .timeout,
            "the debug shell on serial1 did not answer within \(timeout) (was the image booted with hcos.debug-shell?); last probe: \(lastError)"
        )
    }

    /// Sends raw text without waiting for anything (`systemctl poweroff`, which never answers).
    public func send(_ text: String) throws { try port.write(Array(text.utf8)) }

    /// The shell's recent output, for diagnostics.
    public func recentOutput(lines count: Int = 30) -> String {
        port.tail(count).joined(separator: "\n")
    }

    private func recentOutput(from start: Int) -> String {
        let bytes = port.raw(from: start).bytes.suffix(4000)
        return "shell output since the command was sent:\n" + SerialPort.decode(Array(bytes))
    }

    static func frame(_ command: String, tag: String) -> String {
        let quoted = "'" + command.replacingOccurrences(of: "'", with: "'\\''") + "'"
        return "printf '%s_%s\\n' HCOSBEGIN \(tag); sh -c \(quoted) </dev/null 2>&1; "
            + "printf '\\n%s_%s_%s\\n' HCOSEND \(tag) \"$?\"\n"
    }

    /// Finds the framed result in the shell's output; returns it and how many raw bytes it used.
    static func parse(_ raw: [UInt8], tag: String) -> (ShellResult, Int)? {
        let text = Array(raw)
        let begin = Array("HCOSBEGIN_\(tag)".utf8)
        let end = Array("HCOSEND_\(tag)_".utf8)
        guard let beginAt = find(begin, in: text, from: 0) else { return nil }
        // The begin marker's own line ends with \r\n (tty) or \n.
        var outputStart = beginAt + begin.count
        while outputStart < text.count && text[outputStart] == 13 { outputStart += 1 }
        guard outputStart < text.count, text[outputStart] == 10 else { return nil }
        outputStart += 1
        guard let endAt = find(end, in: text, from: outputStart) else { return nil }
        var cursor = endAt + end.count
        var digits: [UInt8] = []
        while cursor < text.count, (48...57).contains(text[cursor]) {
            digits.append(text[cursor])
            cursor += 1
        }
        guard cursor < text.count, !digits.isEmpty, text[cursor] == 13 || text[cursor] == 10 else {
            return nil
        }
        while cursor < text.count && text[cursor] == 13 { cursor += 1 }
        guard cursor < text.count, text[cursor] == 10 else { return nil }
        var output = rendered(Array(text[outputStart..<endAt]))
        // The end marker is printed after a newline of its own, so output without a final
        // newline still ends the line; remove exactly that one.
        if output.last == 10 { output.removeLast() }
        let status = Int32(String(decoding: digits, as: UTF8.self)) ?? -1
        return (
            ShellResult(status: status, output: String(decoding: output, as: UTF8.self)), cursor + 1
        )
    }

    /// The text as a terminal shows it: `\r\n` ends a line, and a bare `\r` (a progress bar
    /// redrawn in place) returns to the start of the line, so only its last drawing stays.
    static func rendered(_ bytes: [UInt8]) -> [UInt8] {
        var output: [UInt8] = []
        var lineStart = 0
        var index = 0
        while index < bytes.count {
            guard bytes[index] == 13 else {
                output.append(bytes[index])
                if bytes[index] == 10 { lineStart = output.count }
                index += 1
                continue
            }
            var next = index
            while next < bytes.count && bytes[next] == 13 { next += 1 }
            if next < bytes.count && bytes[next] != 10 { output.removeSubrange(lineStart...) }
            index = next
        }
        return output
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard needle.count <= haystack.count, start <= haystack.count - needle.count else { return nil }
        var index = start
        while index <= haystack.count - needle.count {
            if haystack[index] == needle[0] && Array(haystack[index..<(index + needle.count)]) == needle {
                return index
            }
            index += 1
        }
        return nil
    }
}
