import CShim
import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

/// Runs an external program (posix_spawn, no shell) and collects its output. Used for the tools
/// of the trade (mmdebstrap, mkfs.*, grub-mkimage, qemu-img) and, on a node, systemctl.
public struct Command: Sendable {
    public var executable: String
    public var arguments: [String]
    public var environment: [String: String]?
    public var workingDirectory: String?
    /// Seconds after which the program (and its process group) is killed; the result then has
    /// status 128+SIGKILL and `timedOut` set. nil: wait as long as it takes.
    public var timeout: Double?

    public init(
        _ executable: String, _ arguments: [String] = [], environment: [String: String]? = nil,
        workingDirectory: String? = nil
    ) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
    }

    public struct Result: Sendable {
        public let status: Int32
        public let stdout: [UInt8]
        public let stderr: [UInt8]
        public var timedOut = false
        public var output: String { String(decoding: stdout, as: UTF8.self) }
        public var errorOutput: String { String(decoding: stderr, as: UTF8.self) }
    }

    /// Where a line of output goes while the program runs (progress display); nil collects only.
    public typealias LineHandler = @Sendable (String) -> Void

    public var display: String { ([executable] + arguments).joined(separator: " ") }

    /// Runs to completion. Throws `.missingTool` when the program cannot be found and
    /// `.toolFailed` (with the tail of stderr) when it exits non-zero, unless `check` is false.
    @discardableResult
    public func run(check: Bool = true, input: [UInt8]? = nil, onLine: LineHandler? = nil) throws -> Result {
        guard let path = Command.resolve(executable) else {
            throw HCOSError(.missingTool, "'\(executable)' is not installed (not found in PATH); run 'make setup'")
        }
        let result = try spawn(path: path, input: input, onLine: onLine)
        if check && result.timedOut {
            throw HCOSError(.timeout, "\(executable) did not finish within \(timeout ?? 0) s: \(display.prefix(300))")
        }
        if check && result.status != 0 {
            let tail = result.errorOutput.split(separator: "\n").suffix(15).joined(separator: "\n")
            throw HCOSError(
                .toolFailed, "\(executable) exited with status \(result.status): \(display.prefix(300))\n\(tail)")
        }
        return result
    }

    public static func resolve(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        for dir in directories {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    public static func exists(_ name: String) -> Bool { resolve(name) != nil }

    private func spawn(path: String, input: [UInt8]?, onLine: LineHandler?) throws -> Result {
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        var inPipe: [Int32] = [-1, -1]
        try Syscall.call("pipe2") { hcos_pipe2_cloexec(&outPipe) }
        try Syscall.call("pipe2") { hcos_pipe2_cloexec(&errPipe) }
        try Syscall.call("pipe2") { hcos_pipe2_cloexec(&inPipe) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        // A child sees stdin, stdout and stderr only. Descriptors a host process left
        // inheritable (a test runner's, a library's) would otherwise reach every tool, and
        // some tools break on them: mmdebstrap's apt hook redirects to its pipe's number, which
        // dash cannot parse above 9.
        hcos_spawn_addclosefrom(&actions, 3)
        if let workingDirectory {
            hcos_spawn_addchdir(&actions, workingDirectory)
        }

        var env = environment ?? ProcessInfo.processInfo.environment
        if environment != nil {
            // Keep PATH unless the caller set it: tools spawn their own helpers.
            env["PATH"] = env["PATH"] ?? ProcessInfo.processInfo.environment["PATH"]
        }
        let argv = [path] + arguments
        let envp = env.map { "\($0.key)=\($0.value)" }.sorted()

        // With a timeout the child leads its own process group, so that everything it started dies with it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        if timeout != nil {
            posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        var pid: pid_t = 0
        let status = withCStrings(argv) { cArgv in
            withCStrings(envp) { cEnvp in
                posix_spawn(&pid, path, &actions, &attributes, cArgv, cEnvp)
            }
        }
        close(outPipe[1])
        close(errPipe[1])
        close(inPipe[0])
        guard status == 0 else {
            close(outPipe[0])
            close(errPipe[0])
            close(inPipe[1])
            throw HCOSError(.toolFailed, "cannot start \(path)", cause: SystemError("posix_spawn", errno: status))
        }
        if let input {
            var offset = 0
            while offset < input.count {
                let n = input[offset...].withUnsafeBytes { write(inPipe[1], $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                offset += n
            }
        }
        close(inPipe[1])

        var stdout: [UInt8] = []
        var stderr: [UInt8] = []
        var pending: [UInt8] = []
        var fds = [
            pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0),
            pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0),
        ]
        var open = 2
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = timeout.map { Command.monotonicSeconds() + $0 }
        var timedOut = false
        while open > 0 {
            var wait: Int32 = -1
            if let deadline {
                let left = deadline - Command.monotonicSeconds()
                if left <= 0 {
                    kill(-pid, SIGKILL)
                    timedOut = true
                    for index in fds.indices where fds[index].fd >= 0 { close(fds[index].fd) }
                    break
                }
                wait = Int32(min(left * 1000 + 1, 1000))
            }
            let ready = poll(&fds, nfds_t(fds.count), wait)
            if ready < 0 && errno == EINTR { continue }
            for index in fds.indices where fds[index].fd >= 0 && fds[index].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(fds[index].fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    close(fds[index].fd)
                    fds[index].fd = -1
                    open -= 1
                    continue
                }
                let chunk = buffer[0..<n]
                if index == 0 { stdout += chunk } else { stderr += chunk }
                if let onLine {
                    pending += chunk
                    while let newline = pending.firstIndex(where: { $0 == 10 || $0 == 13 }) {
                        let line = String(decoding: pending[..<newline], as: UTF8.self)
                        pending.removeSubrange(...newline)
                        if !line.isEmpty { onLine(line) }
                    }
                }
            }
        }
        var waitStatus: Int32 = 0
        while waitpid(pid, &waitStatus, 0) < 0 && errno == EINTR {}
        let exit: Int32 = (waitStatus & 0x7f) == 0 ? (waitStatus >> 8) & 0xff : 128 + (waitStatus & 0x7f)
        var result = Result(status: exit, stdout: stdout, stderr: stderr)
        result.timedOut = timedOut
        return result
    }

    static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}

/// Builds a NULL-terminated C string array for exec-style calls.
func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
    let pointers = strings.map { strdup($0) }
    defer { pointers.forEach { free($0) } }
    return body(pointers + [nil])
}
