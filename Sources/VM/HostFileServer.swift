import Foundation
import HCOSCore

/// A real HTTP server on the build host serving one directory (Python's `http.server`), for
/// guests to download update bundles from: qemu's user network shows the host's 127.0.0.1 to
/// the guest as 10.0.2.2.
public final class HostFileServer: @unchecked Sendable {
    public let port: Int
    let process: Process

    /// The address a qemu guest (user networking) uses for `name` in the served directory.
    public func guestURL(_ name: String) -> String { "http://10.0.2.2:\(port)/\(name)" }
    public func hostURL(_ name: String) -> String { "http://127.0.0.1:\(port)/\(name)" }

    /// Starts serving `directory` on an ephemeral port of 127.0.0.1 and returns once the server
    /// has said which port it listens on.
    public init(directory: String) throws {
        guard let python = Command.resolve("python3") else {
            throw HCOSError(.missingTool, "python3 is not installed; run 'make setup'")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", directory]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        var text = ""
        var found: Int?
        while found == nil {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
            if let range = text.range(of: " port ") {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                if !digits.isEmpty, text[range.upperBound...].dropFirst(digits.count).first == " " {
                    found = Int(digits)
                }
            }
        }
        guard let found else {
            kill(process.processIdentifier, SIGKILL)
            throw HCOSError(.toolFailed, "python3 http.server did not start: \(text)")
        }
        port = found
    }

    /// Kills the server and reaps it (Process.waitUntilExit can spin off the main thread here).
    public func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        for _ in 0..<500 where process.isRunning { usleep(10_000) }
    }

    deinit { stop() }
}
