import Builder
import Foundation
import HCOSCore
import VM

// hcos: builds hcos OS images and boots them in qemu. The work is in the Builder and VM
// libraries; this file parses the command line.

let usage = """
    usage: hcos build [--config FILE] [--output DIR] [--cache DIR] [--no-qcow2] [--refresh]
           hcos vm IMAGE [--memory MB] [--disk-size SIZE] [--wait-ready] [--serial-log FILE]
                         [--debug-shell] [--uefi] [--report]

    build   builds the OS image from Debian packages (default config: image/hcos.conf)
            into DIR (default: build/out): hcos-VERSION.img (raw), .qcow2, the root image,
            kernel, initramfs and hcos-VERSION.build.json
    vm      boots IMAGE in qemu on a copy of the image (the image itself is never modified)
    """

let logger = Logger(label: "hcos")

func fail(_ message: String, status: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("hcos: error: \(message)\n".utf8))
    exit(status)
}

/// Parses `--flag value` / `--flag` options; unknown options are errors.
struct Options {
    var values: [String: String] = [:]
    var flags: Set<String> = []
    var positional: [String] = []

    init(_ arguments: [String], valued: Set<String>, flags known: Set<String>) {
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            if valued.contains(argument) {
                guard let value = rest.popFirst() else { fail("\(argument) needs a value\n\(usage)", status: 2) }
                values[argument] = value
            } else if known.contains(argument) {
                flags.insert(argument)
            } else if argument.hasPrefix("-") {
                fail("unknown option \(argument)\n\(usage)", status: 2)
            } else {
                positional.append(argument)
            }
        }
    }
}

/// Where the product's data (image/: default config, keep-list, initramfs /init, grub.cfg)
/// lives: $HCOS_DATA_DIR, ./image, or next to the source tree the executable was built from.
func dataDirectory() -> String {
    if let dir = ProcessInfo.processInfo.environment["HCOS_DATA_DIR"] { return dir }
    let fm = FileManager.default
    if fm.fileExists(atPath: "image/grub/grub.cfg") { return fm.currentDirectoryPath + "/image" }
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    for _ in 0..<5 {
        if fm.fileExists(atPath: dir.appendingPathComponent("image/grub/grub.cfg").path) {
            return dir.appendingPathComponent("image").path
        }
        dir.deleteLastPathComponent()
    }
    fail("cannot find the hcos data directory (image/); run from the source tree or set HCOS_DATA_DIR")
}

func defaultCache() -> String {
    let env = ProcessInfo.processInfo.environment
    if let cache = env["HCOS_CACHE"] { return cache }
    if let xdg = env["XDG_CACHE_HOME"] { return "\(xdg)/hcos" }
    return "\(NSHomeDirectory())/.cache/hcos"
}

func build(_ arguments: [String]) {
    let options = Options(arguments, valued: ["--config", "--output", "--cache"], flags: ["--no-qcow2", "--refresh"])
    guard options.positional.isEmpty else { fail("unexpected argument \(options.positional[0])\n\(usage)", status: 2) }
    let data = dataDirectory()
    let configPath = options.values["--config"] ?? "\(data)/hcos.conf"
    do {
        let config = try BuildConfig.load(path: configPath)
        let agent = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("os-agent").path
        var buildOptions = Build.Options(
            output: options.values["--output"] ?? "build/out", cache: options.values["--cache"] ?? defaultCache(),
            agentBinary: ProcessInfo.processInfo.environment["HCOS_AGENT_BINARY"] ?? agent, imageDirectory: data)
        buildOptions.qcow2 = !options.flags.contains("--no-qcow2")
        buildOptions.refresh = options.flags.contains("--refresh")
        let started = Date()
        let result = try Build(config: config, options: buildOptions, logger: logger).run()
        print(
            """
            built hcos \(result.version) in \(Int(Date().timeIntervalSince(started))) s
              disk image   \(result.diskImage) (\(ByteSize.format(result.diskSize)), \(ByteSize.format(result.diskAllocated)) allocated)
              qcow2        \(result.qcow2Image ?? "-")
              root image   \(result.rootImage) (\(ByteSize.format(result.rootSize)), \(result.rootFormat)/\(result.rootCompression))
              root digest  sha256:\(result.rootDigest)
              kernel       \(result.kernelVersion), initramfs \(ByteSize.format(result.initramfsSize))
            """)
    } catch {
        fail("\(error)")
    }
}

var arguments = Array(CommandLine.arguments.dropFirst())
guard let command = arguments.first else { fail(usage, status: 2) }
arguments.removeFirst()
switch command {
case "build": build(arguments)
case "vm":
    do {
        let image = arguments.first { !$0.hasPrefix("-") } ?? ""
        exit(
            try await VMCommand.run(arguments, logger: logger) { json in
                print(ReportPrinter.render(json: json, image: image))
            })
    } catch {
        fail("\(error)")
    }
case "-h", "--help", "help": print(usage)
default: fail("unknown command '\(command)'\n\(usage)", status: 2)
}
