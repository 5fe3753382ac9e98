import Foundation
import HCOSCore
import Testing

@testable import VM

#if canImport(Glibc)
    import Glibc
#endif

// MARK: Helpers

/// A fresh directory under /tmp with a short path (unix socket paths are limited to 107 bytes).
private func scratchDirectory() throws -> String {
    var template = Array("/tmp/hcos-vmtest.XXXXXX".utf8CString)
    let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    #expect(created != nil)
    return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

private func blocksAllocated(_ path: String) -> Int {
    var st = stat()
    _ = stat(path, &st)
    return Int(st.st_blocks) * 512
}

private func waitForFile(_ path: String, timeout: Duration = .seconds(10)) async throws {
    let deadline = ContinuousClock.now + timeout
    while !FileSystem.exists(path) {
        if ContinuousClock.now >= deadline { throw HCOSError(.timeout, "\(path) did not appear") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// A fake console: listens on a unix socket and writes `chunks` to the first client, pausing
/// `pause` between them, then closes the connection if `closeAfter`.
private final class FakeConsolePeer: Sendable {
    let path: String
    let listener: Int32

    init(path: String, chunks: [String], pause: Duration, closeAfter: Bool) throws {
        self.path = path
        let listener = try UnixSocket.listen(path: path)
        self.listener = listener
        let thread = Thread {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            for chunk in chunks {
                try? UnixSocket.writeAll(client, Array(chunk.utf8))
                Thread.sleep(
                    forTimeInterval: Double(pause.components.attoseconds) / 1e18
                        + Double(pause.components.seconds))
            }
            if closeAfter {
                close(client)
            } else {
                // Keep the connection open until the listener goes away.
                var byte: UInt8 = 0
                while read(client, &byte, 1) > 0 {}
                close(client)
            }
        }
        thread.start()
    }

    deinit {
        close(listener)
        unlink(path)
    }
}

/// An interactive `sh -i` on a pseudo-terminal with echo on, served on a unix socket: the same
/// shape as the image's debug shell behind qemu's serial1 chardev. For `startDelay` seconds after
/// a client connects, input is read and dropped (the shell is "not up yet").
private let shellPeerScript = """
    import os, pty, select, socket, sys, time
    path, delay = sys.argv[1], float(sys.argv[2])
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    conn, _ = server.accept()
    end = time.time() + delay
    while time.time() < end:
        r, _, _ = select.select([conn], [], [], 0.05)
        if r and not conn.recv(4096):
            sys.exit(0)
    pid, fd = pty.fork()
    if pid == 0:
        os.environ['PS1'] = 'root@hcos:~# '
        os.execv('/bin/sh', ['sh', '-i'])
    while True:
        r, _, _ = select.select([conn, fd], [], [])
        if conn in r:
            data = conn.recv(4096)
            if not data:
                break
            os.write(fd, data)
        if fd in r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            conn.sendall(data)
    """

private struct ShellPeer {
    let process: Process
    let directory: String
    let socket: String

    static func start(delay: Double = 0) async throws -> ShellPeer {
        let directory = try scratchDirectory()
        let socket = directory + "/shell.sock"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Command.resolve("python3") ?? "/usr/bin/python3")
        process.arguments = ["-c", shellPeerScript, socket, String(delay)]
        try process.run()
        try await waitForFile(socket)
        return ShellPeer(process: process, directory: directory, socket: socket)
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

// MARK: qemu arguments

@Suite("QEMU arguments")
struct QEMUArgumentsTests {
    let paths = VMPaths(directory: "/tmp/vm1")

    private func value(after flag: String, in args: [String]) -> [String] {
        args.indices.filter { args[$0] == flag && $0 + 1 < args.count }.map { args[$0 + 1] }
    }

    @Test("uses TCG with the max CPU model, one CPU and the configured memory")
    func tcg() {
        var config = VMConfiguration(diskPath: "/images/hcos.raw")
        config.memoryMiB = 2048
        let args = QEMUArguments.make(config, paths: paths, accelerator: .tcg)
        #expect(value(after: "-accel", in: args) == ["tcg"])
        #expect(value(after: "-cpu", in: args) == ["max"])
        #expect(value(after: "-smp", in: args) == ["1"])
        #expect(value(after: "-m", in: args) == ["2048"])
        #expect(value(after: "-machine", in: args) == ["q35"])
        #expect(args.contains("-nodefaults") && args.contains("-no-user-config"))
        #expect(value(after: "-display", in: args) == ["none"])
        #expect(args.last == "-S")
    }

    @Test("uses the host CPU model under KVM")
    func kvm() {
        let args = QEMUArguments.make(
            VMConfiguration(diskPath: "/d.raw"), paths: paths, accelerator: .kvm)
        #expect(value(after: "-accel", in: args) == ["kvm"])
        #expect(value(after: "-cpu", in: args) == ["host"])
    }

    @Test("boots SeaBIOS by default and OVMF pflash with a per-VM variable store with --uefi")
    func uefi() {
        var config = VMConfiguration(diskPath: "/d.raw")
        let bios = QEMUArguments.make(config, paths: paths, accelerator: .tcg)
        #expect(!value(after: "-drive", in: bios).contains { $0.contains("pflash") })
        config.uefi = true
        let drives = value(
            after: "-drive", in: QEMUArguments.make(config, paths: paths, accelerator: .tcg))
        #expect(
            drives.contains(
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"))
        #expect(drives.contains("if=pflash,format=raw,unit=1,file=/tmp/vm1/OVMF_VARS.fd"))
    }

    @Test("attaches the disk as virtio with writeback caching and discard, and user networking")
    func diskAndNetwork() {
        var config = VMConfiguration(diskPath: "/images/a,b.raw")
        config.portForwards = [PortForward(host: 2222, guest: 22)]
        let args = QEMUArguments.make(config, paths: paths, accelerator: .tcg)
        #expect(
            value(after: "-drive", in: args) == [
                "file=/images/a,,b.raw,format=raw,if=virtio,cache=writeback,discard=unmap"
            ])
        #expect(
            value(after: "-nic", in: args) == ["user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22"]
        )
    }

    @Test("puts the console on serial0, the debug shell on serial1 and QMP on unix sockets")
    func serialAndQMP() {
        let args = QEMUArguments.make(
            VMConfiguration(diskPath: "/d.raw"), paths: paths, accelerator: .tcg)
        #expect(
            value(after: "-chardev", in: args) == [
                "socket,id=con,path=/tmp/vm1/console.sock,server=on,wait=off",
                "socket,id=dbg,path=/tmp/vm1/shell.sock,server=on,wait=off",
            ])
        #expect(value(after: "-serial", in: args) == ["chardev:con", "chardev:dbg"])
        #expect(value(after: "-qmp", in: args) == ["unix:/tmp/vm1/qmp.sock,server=on,wait=off"])
    }

    @Test("passes SMBIOS OEM strings through and appends extra arguments last")
    func oemStringsAndExtras() {
        var config = VMConfiguration(diskPath: "/d.raw")
        // The debug shell is asked for through the disk's GRUB environment, not qemu's arguments.
        config.debugShell = true
        config.oemStrings = ["io.example.note=1"]
        config.extraArguments = ["-snapshot"]
        let args = QEMUArguments.make(config, paths: paths, accelerator: .tcg, paused: false)
        #expect(value(after: "-smbios", in: args) == ["type=11,value=io.example.note=1"])
        #expect(!args.contains("-S"))
        #expect(args.last == "-snapshot")
    }

    @Test("takes the accelerator from HCOS_ACCEL and rejects unknown values")
    func acceleratorOverride() throws {
        #expect(try Accelerator.detect(environment: ["HCOS_ACCEL": "tcg"]) == .tcg)
        #expect(try Accelerator.detect(environment: ["HCOS_ACCEL": "KVM"]) == .kvm)
        #expect(throws: HCOSError.self) { try Accelerator.detect(environment: ["HCOS_ACCEL": "hvf"]) }
    }

    @Test("does not pick KVM without a hardware KVM module")
    func kvmDetection() throws {
        let hardware = ["kvm_intel", "kvm_amd"].contains { FileSystem.isDirectory("/sys/module/\($0)") }
        if !hardware {
            #expect(!Accelerator.kvmUsable())
            #expect(try Accelerator.detect(environment: [:]) == .tcg)
        }
    }
}

// MARK: Disk preparation

@Suite("VM disk preparation")
struct DiskImageTests {
    @Test("copies a raw image sparsely and grows the copy to the requested size")
    func sparseCopyAndGrow() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let image = dir + "/image.raw"
        let file = try FileDescriptor(path: image, flags: O_RDWR | O_CREAT)
        try file.truncate(to: 64 << 20)
        try file.write(Array(repeating: 0xAB, count: 4096), at: 1 << 20)
        try file.write(Array(repeating: 0xCD, count: 4096), at: (64 << 20) - 4096)

        let disk = dir + "/vm.raw"
        try DiskImage.prepareVMDisk(from: image, to: disk, size: 256 << 20)
        let copy = try FileDescriptor(path: disk, flags: O_RDONLY)
        #expect(try copy.size() == 256 << 20)
        #expect(try copy.read(at: 1 << 20, count: 4096) == Array(repeating: 0xAB, count: 4096))
        #expect(
            try copy.read(at: (64 << 20) - 4096, count: 4096) == Array(repeating: 0xCD, count: 4096))
        #expect(try copy.read(at: 100 << 20, count: 16) == Array(repeating: 0, count: 16))
        #expect(blocksAllocated(disk) < 4 << 20)
        #expect(!FileManager.default.fileExists(atPath: disk + ".partial.\(getpid())"))
    }

    @Test("keeps the image size when no size is given")
    func copyWithoutSize() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let image = dir + "/image.raw"
        try FileDescriptor(path: image, flags: O_RDWR | O_CREAT).truncate(to: 8 << 20)
        try DiskImage.prepareVMDisk(from: image, to: dir + "/vm.raw")
        #expect(try FileDescriptor(path: dir + "/vm.raw", flags: O_RDONLY).size() == 8 << 20)
    }

    @Test("refuses to shrink a disk and names both sizes")
    func refusesToShrink() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let image = dir + "/image.raw"
        try FileDescriptor(path: image, flags: O_RDWR | O_CREAT).truncate(to: 16 << 20)
        let error = #expect(throws: HCOSError.self) {
            try DiskImage.prepareVMDisk(from: image, to: dir + "/vm.raw", size: 8 << 20)
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("16777216") == true)
        #expect(error?.message.contains("8388608") == true)
        #expect(!FileManager.default.fileExists(atPath: dir + "/vm.raw"))
    }

    @Test("converts a qcow2 image to raw")
    func convertsQcow2() throws {
        guard Command.exists("qemu-img") else { return }
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let raw = dir + "/src.raw"
        let file = try FileDescriptor(path: raw, flags: O_RDWR | O_CREAT)
        try file.truncate(to: 4 << 20)
        try file.write(Array("hcos".utf8), at: 512)
        try Command("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, dir + "/src.qcow2"])
            .run()
        #expect(try DiskImage.format(of: dir + "/src.qcow2") == .qcow2)
        try DiskImage.prepareVMDisk(from: dir + "/src.qcow2", to: dir + "/vm.raw", size: 8 << 20)
        #expect(try DiskImage.format(of: dir + "/vm.raw") == .raw)
        let copy = try FileDescriptor(path: dir + "/vm.raw", flags: O_RDONLY)
        #expect(try copy.size() == 8 << 20)
        #expect(try copy.read(at: 512, count: 4) == Array("hcos".utf8))
    }
}

// MARK: Console

@Suite("Serial console")
struct SerialConsoleTests {
    @Test("waits for the next marker after a mark, not an earlier one, and logs every byte")
    func markerAfterMark() async throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let peer = try FakeConsolePeer(
            path: dir + "/con.sock",
            chunks: [
                "SeaBIOS\r\n", "HCOS-BOOT slot=A\r\n", "[  1.0] kernel HCOS-READY {\"boot\":1}\r\n",
                "reboot\r\n", "HCOS-BOOT slot=B\r\n", "HCOS-READY {\"boot\":2}\r\n", "tail without newline",
            ], pause: .milliseconds(100), closeAfter: false)
        let console = try SerialConsole(connectingTo: peer.path, logPath: dir + "/serial.log")

        let first = try await console.waitForMarkerMatch("HCOS-READY", timeout: .seconds(10))
        #expect(first.payload == "{\"boot\":1}")
        let second = try await console.waitForMarker(
            "HCOS-READY", after: first.next, timeout: .seconds(10))
        #expect(second == "{\"boot\":2}")
        let slot = try await console.waitForMarker(
            "HCOS-BOOT", after: first.next, timeout: .seconds(10))
        #expect(slot == "slot=B")
        #expect(console.lines().contains("SeaBIOS"))
        try await Task.sleep(for: .milliseconds(300))
        let log = try FileSystem.readString(dir + "/serial.log")
        #expect(log.hasPrefix("SeaBIOS\r\nHCOS-BOOT slot=A\r\n"))
        #expect(log.hasSuffix("tail without newline"))
        console.port.shutdown()
    }

    @Test("stamps each line with the moment it arrived, not the moment a caller looked for it")
    func lineArrivalTimes() async throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let started = ContinuousClock.now
        let peer = try FakeConsolePeer(
            path: dir + "/con.sock", chunks: ["early\n", "late\n"], pause: .milliseconds(200), closeAfter: false)
        let console = try SerialConsole(connectingTo: peer.path)
        let late = try await console.waitForMatch(timeout: .seconds(10)) { $0 == "late" }
        let lookedForEarly = ContinuousClock.now
        let early = try await console.waitForMatch(timeout: .seconds(10)) { $0 == "early" }
        #expect(started <= early.at)
        #expect(early.at < late.at)
        #expect(late.at <= lookedForEarly)
        console.port.shutdown()
    }

    @Test("a timeout reports the last console lines")
    func timeoutShowsTail() async throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let peer = try FakeConsolePeer(
            path: dir + "/con.sock", chunks: ["Loading Linux\n", "Kernel panic - not syncing\n"],
            pause: .milliseconds(10), closeAfter: false)
        let console = try SerialConsole(connectingTo: peer.path)
        let error = await #expect(throws: HCOSError.self) {
            try await console.waitForMarker("HCOS-READY", timeout: .milliseconds(500))
        }
        #expect(error?.code == .timeout)
        #expect(error?.message.contains("Kernel panic - not syncing") == true)
        console.port.shutdown()
    }

    @Test("stops waiting as soon as the console closes")
    func closedConsole() async throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let peer = try FakeConsolePeer(
            path: dir + "/con.sock", chunks: ["bye\n"], pause: .milliseconds(10), closeAfter: true)
        let console = try SerialConsole(connectingTo: peer.path)
        let started = ContinuousClock.now
        let error = await #expect(throws: HCOSError.self) {
            try await console.waitForLine(containing: "never", timeout: .seconds(30))
        }
        #expect(error?.code == .io)
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(!console.isOpen)
    }

    @Test("finds marker names only as whole words")
    func markerPayload() {
        #expect(SerialConsole.payload(of: "HCOS-READY", in: "HCOS-READY {\"a\":1}") == "{\"a\":1}")
        #expect(SerialConsole.payload(of: "HCOS-READY", in: "x HCOS-READY") == "")
        #expect(SerialConsole.payload(of: "HCOS-READY", in: "NOT-HCOS-READY {}") == nil)
        #expect(SerialConsole.payload(of: "HCOS-READY", in: "HCOS-READYNESS") == nil)
    }
}

// MARK: Debug shell

@Suite("Debug shell protocol", .serialized)
struct DebugShellTests {
    @Test("shows output as a terminal would: CRLF ends a line, a bare CR redraws it")
    func rendersCarriageReturns() throws {
        let output = "[writing]\r\n  [#---] 25%\r  [##--] 50%\r  [####] 100%\r\ndone\r\n"
        let raw = Array("HCOSBEGIN_7q\r\n\(output)HCOSEND_7q_0\r\n".utf8)
        let parsed = try #require(DebugShell.parse(raw, tag: "7q"))
        #expect(parsed.0.output == "[writing]\n  [####] 100%\ndone")
    }

    @Test("parses framed output split across echo, prompts and CRLF")
    func parseFrame() throws {
        let raw = Array(
            ("root@hcos:~# printf '%s_%s\\n' HCOSBEGIN 1x2; sh -c 'echo hi' </dev/null 2>&1; "
                + "printf '\\n%s_%s_%s\\n' HCOSEND 1x2 \"$?\"\r\nHCOSBEGIN_1x2\r\nhi\r\n\r\nHCOSEND_1x2_3\r\nroot@hcos:~# ")
                .utf8)
        let parsed = try #require(DebugShell.parse(raw, tag: "1x2"))
        #expect(parsed.0 == ShellResult(status: 3, output: "hi\n"))
        #expect(DebugShell.parse(Array(raw.prefix(raw.count - 20)), tag: "1x2") == nil)
        #expect(DebugShell.parse(raw, tag: "1x3") == nil)
    }

    @Test("runs commands with quotes, multi-line output and exit statuses through an echoing tty")
    func commandsThroughPTY() async throws {
        guard Command.exists("python3") else { return }
        let peer = try await ShellPeer.start()
        defer { peer.stop() }
        let shell = try DebugShell(connectingTo: peer.socket)
        defer { shell.port.shutdown() }
        try await shell.waitUntilReady(timeout: .seconds(20))

        let quoted = try await shell.run(#"echo "double" 'single' "it's" \$HOME; printf 'a\tb\n'"#)
        #expect(quoted == ShellResult(status: 0, output: "double single it's $HOME\na\tb\n"))

        let failing = try await shell.run("echo to-stderr >&2; exit 7")
        #expect(failing == ShellResult(status: 7, output: "to-stderr\n"))

        let lines = try await shell.run("for i in 1 2 3; do echo line $i; done\necho 'multi\nline'")
        #expect(lines.output == "line 1\nline 2\nline 3\nmulti\nline\n")

        let noNewline = try await shell.run("printf 'no newline'")
        #expect(noNewline.output == "no newline")
        let empty = try await shell.run("true")
        #expect(empty == ShellResult(status: 0, output: ""))
        let blankLine = try await shell.run("echo")
        #expect(blankLine.output == "\n")

        let big = try await shell.run("seq 1 2000")
        #expect(big.output.split(separator: "\n").count == 2000)

        await #expect(throws: HCOSError.self) { try await shell.check("false") }
        #expect(try await shell.check("echo ok") == "ok\n")
        #expect(shell.hasAnswered)
    }

    @Test("a command that hangs times out, and the shell answers the next command")
    func timeoutThenRecover() async throws {
        guard Command.exists("python3") else { return }
        let peer = try await ShellPeer.start()
        defer { peer.stop() }
        let shell = try DebugShell(connectingTo: peer.socket)
        defer { shell.port.shutdown() }
        try await shell.waitUntilReady(timeout: .seconds(20))
        let error = await #expect(throws: HCOSError.self) {
            try await shell.run("sleep 30", timeout: .milliseconds(500))
        }
        #expect(error?.code == .timeout)
        let next = try await shell.run("echo after", timeout: .seconds(10))
        #expect(next.output.hasSuffix("after\n"))
    }

    @Test("the readiness probe waits for a shell that comes up late")
    func readinessProbe() async throws {
        guard Command.exists("python3") else { return }
        let peer = try await ShellPeer.start(delay: 2)
        defer { peer.stop() }
        let shell = try DebugShell(connectingTo: peer.socket)
        defer { shell.port.shutdown() }
        #expect(!shell.hasAnswered)
        try await shell.waitUntilReady(timeout: .seconds(20), probeTimeout: .milliseconds(1500))
        #expect(try await shell.run("echo up").output == "up\n")
    }

    @Test("rejects control characters and over-long lines")
    func rejectsBadInput() async throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let peer = try FakeConsolePeer(
            path: dir + "/s.sock", chunks: [], pause: .zero, closeAfter: false)
        let shell = try DebugShell(connectingTo: peer.path)
        defer { shell.port.shutdown() }
        await #expect(throws: HCOSError.self) { try await shell.run("echo \u{03}") }
        await #expect(throws: HCOSError.self) {
            try await shell.run("echo " + String(repeating: "x", count: 5000))
        }
    }
}

// MARK: qemu

@Suite("qemu", .serialized)
struct QEMUTests {
    @Test("QMP reports a paused qemu and quit ends the process")
    func qmpQueryStatusAndQuit() async throws {
        guard let qemu = Command.resolve("qemu-system-x86_64") else { return }
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: qemu)
        process.arguments = [
            "-nodefaults", "-no-user-config", "-machine", "none", "-accel", "tcg", "-display", "none",
            "-S",
            "-qmp", "unix:\(dir)/qmp.sock,server=on,wait=off",
        ]
        process.standardInput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        try await waitForFile(dir + "/qmp.sock")
        let qmp = try QMPClient(path: dir + "/qmp.sock")
        #expect(try qmp.status() == "prelaunch" || qmp.status() == "paused")
        #expect(throws: HCOSError.self) { try qmp.execute("no-such-command") }
        _ = try? qmp.execute("quit")
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(!process.isRunning)
    }

    @Test("a VM starts running, answers QMP, resets, and stop leaves no qemu or work files behind")
    func virtualMachineLifecycle() async throws {
        guard Command.exists("qemu-system-x86_64") else { return }
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = dir + "/empty.raw"
        try FileDescriptor(path: disk, flags: O_RDWR | O_CREAT).truncate(to: 1 << 20)
        var config = VMConfiguration(diskPath: disk)
        config.memoryMiB = 128
        config.accelerator = .tcg
        config.serialLogPath = dir + "/serial.log"
        let vm = try await VirtualMachine.start(config)
        let pid = vm.processIdentifier
        #expect(vm.isRunning)
        #expect(try vm.qmp.status() == "running")
        try vm.reset()
        #expect(vm.shell != nil)
        #expect(FileManager.default.fileExists(atPath: vm.paths.qmpSocket))
        // Nothing in SeaBIOS answers the power button without a booted OS: stop must end qemu anyway.
        let clean = await vm.stop(timeout: .seconds(2))
        #expect(!clean)
        #expect(!vm.isRunning)
        #expect(kill(pid, 0) != 0)
        #expect(!FileManager.default.fileExists(atPath: vm.paths.directory))
        #expect(FileManager.default.fileExists(atPath: dir + "/serial.log"))
    }

    @Test("a VM boots OVMF with --uefi from a per-VM copy of the variable store")
    func uefiStarts() async throws {
        guard Command.exists("qemu-system-x86_64"), FileSystem.exists(UEFIFirmware.debian.code) else {
            return
        }
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = dir + "/empty.raw"
        try FileDescriptor(path: disk, flags: O_RDWR | O_CREAT).truncate(to: 1 << 20)
        var config = VMConfiguration(diskPath: disk)
        config.memoryMiB = 256
        config.uefi = true
        config.accelerator = .tcg
        config.workDirectory = dir + "/work"
        let vm = try await VirtualMachine.start(config, attachShell: false)
        #expect(FileManager.default.fileExists(atPath: dir + "/work/OVMF_VARS.fd"))
        #expect(try vm.qmp.status() == "running")
        vm.kill()
        let status = try await vm.waitForExit(timeout: .seconds(10))
        #expect(status == 128 + SIGKILL)
        await vm.stop()
        #expect(!FileManager.default.fileExists(atPath: dir + "/work/OVMF_VARS.fd"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/work/qmp.sock"))
    }

    @Test("a missing disk fails before qemu starts")
    func missingDisk() async throws {
        await #expect(throws: HCOSError.self) {
            _ = try await VirtualMachine.start(VMConfiguration(diskPath: "/nonexistent/disk.raw"))
        }
    }
}

// MARK: hcos vm

@Suite("hcos vm command line")
struct VMCommandTests {
    @Test("parses every option of hcos vm")
    func parsesOptions() throws {
        let options = try VMCommand.parse([
            "out/hcos.raw", "--memory", "2048", "--disk-size", "8G", "--wait-ready", "--serial-log",
            "s.log",
            "--debug-shell", "--uefi",
        ])
        var expected = VMCommand.Options(image: "out/hcos.raw")
        expected.memoryMiB = 2048
        expected.diskSize = 8 << 30
        expected.waitReady = true
        expected.serialLog = "s.log"
        expected.debugShell = true
        expected.uefi = true
        #expect(options == expected)
        #expect(try VMCommand.parse(["img"]) == VMCommand.Options(image: "img"))
    }

    @Test("rejects a missing image, unknown flags and bad sizes")
    func rejectsBadArguments() {
        #expect(throws: HCOSError.self) { try VMCommand.parse([]) }
        #expect(throws: HCOSError.self) { try VMCommand.parse(["img", "--cpus", "2"]) }
        #expect(throws: HCOSError.self) { try VMCommand.parse(["img", "--disk-size", "big"]) }
        #expect(throws: HCOSError.self) { try VMCommand.parse(["img", "--memory"]) }
        #expect(throws: HCOSError.self) { try VMCommand.parse(["a", "b"]) }
    }
}
