import Builder
import Bundle
import Digest
import Foundation
import HCOSCore
import VM

// hcos: builds hcos OS images and boots them in qemu. The work is in the Builder and VM
// libraries; this file parses the command line.

let usage = """
    usage: hcos build [--config FILE] [--set KEY=VALUE]... [--output DIR] [--cache DIR] [--no-qcow2]
                      [--refresh] [--sign KEY]
           hcos vm IMAGE [--memory MB] [--disk-size SIZE] [--wait-ready] [--serial-log FILE]
                         [--debug-shell] [--uefi] [--report]
           hcos demo IMAGE --bundle BUNDLE [--disk-size SIZE] [--memory MB] [--serial-log FILE]
           hcos keygen --output PREFIX
           hcos bundle verify BUNDLE --key PUBLIC-KEY
           hcos bundle oci BUNDLE --output DIR

    build   builds the OS image from Debian packages (default config: image/hcos.conf)
            into DIR (default: build/out): hcos-VERSION.img (raw), .qcow2, the root image,
            kernel, initramfs and hcos-VERSION.build.json
            with --sign KEY also a signed update bundle, hcos-VERSION.bundle, whose public key
            the image trusts, and hcos-VERSION.oci/, an OCI image layout holding that bundle
            as an OCI artifact (push it with: skopeo copy oci:DIR:VERSION docker://REGISTRY/REPO:VERSION)
            --set overrides one configuration key (e.g. --set version=2.0.0)
    keygen  makes an Ed25519 signing key pair: PREFIX.key (private, mode 0600) and PREFIX.pub
    bundle verify  checks a bundle's signature against a public key and every payload's digest
    bundle oci     writes BUNDLE as an OCI artifact in the OCI image layout DIR, tagged with its version
    vm      boots IMAGE in qemu on a copy of the image (the image itself is never modified)
    demo    boots IMAGE, upgrades it with hcosctl to BUNDLE (served over http), shows the new
            version committed, then rolls back (all on a copy of IMAGE)
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

func build(_ arguments: [String]) {
    // --set may repeat: collect it before the single-valued options.
    var overrides: [String] = []
    var rest: [String] = []
    var remaining = arguments[...]
    while let argument = remaining.popFirst() {
        if argument == "--set" {
            guard let value = remaining.popFirst() else { fail("--set needs KEY=VALUE\n\(usage)", status: 2) }
            overrides.append(value)
        } else {
            rest.append(argument)
        }
    }
    let options = Options(
        rest, valued: ["--config", "--output", "--cache", "--sign"], flags: ["--no-qcow2", "--refresh"])
    guard options.positional.isEmpty else { fail("unexpected argument \(options.positional[0])\n\(usage)", status: 2) }
    let data = dataDirectory()
    let configPath = options.values["--config"] ?? "\(data)/hcos.conf"
    do {
        let config = try BuildConfig.load(path: configPath, overrides: overrides)
        let agent = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("os-agent").path
        var buildOptions = Build.Options(
            output: options.values["--output"] ?? "build/out",
            cache: options.values["--cache"] ?? Build.defaultCacheDirectory(),
            agentBinary: ProcessInfo.processInfo.environment["HCOS_AGENT_BINARY"] ?? agent, imageDirectory: data)
        buildOptions.qcow2 = !options.flags.contains("--no-qcow2")
        buildOptions.refresh = options.flags.contains("--refresh")
        buildOptions.signingKey = options.values["--sign"]
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
              bundle       \(result.bundle ?? "- (no --sign)")
              OCI layout   \(result.ociLayout ?? "-")
            """)
    } catch {
        fail("\(error)")
    }
}

func keygen(_ arguments: [String]) {
    let options = Options(arguments, valued: ["--output"], flags: [])
    guard let prefix = options.values["--output"], options.positional.isEmpty else {
        fail("keygen needs --output PREFIX\n\(usage)", status: 2)
    }
    do {
        for path in ["\(prefix).key", "\(prefix).pub"] where FileManager.default.fileExists(atPath: path) {
            fail("\(path) exists; refusing to overwrite a key")
        }
        try FileSystem.makeDirectories(FileSystem.parent(of: prefix))
        let pair = try Ed25519.generate()
        try BundleKeys.write(pair.privateKey, kind: "private", to: "\(prefix).key", mode: 0o600)
        try BundleKeys.write(pair.publicKey, kind: "public", to: "\(prefix).pub", mode: 0o644)
        print("wrote \(prefix).key (private: keep it secret) and \(prefix).pub")
    } catch {
        fail("\(error)")
    }
}

func bundle(_ arguments: [String]) {
    let options = Options(arguments, valued: ["--key", "--output"], flags: [])
    if options.positional.first == "oci" {
        guard options.positional.count == 2, let output = options.values["--output"] else {
            fail("usage: hcos bundle oci BUNDLE --output DIR", status: 2)
        }
        do {
            let written = try BundleOCILayout.write(bundle: options.positional[1], to: output)
            print("wrote \(written.directory): hcos \(written.version) bundle as an OCI artifact")
            print("  manifest \(written.manifestDigest), bundle blob \(written.bundleDigest)")
            print(
                "  push: skopeo copy oci:\(written.directory):\(written.version) docker://REGISTRY/REPOSITORY:\(written.version)"
            )
        } catch {
            fail("\(error)")
        }
        return
    }
    guard options.positional.count == 2, options.positional[0] == "verify", let key = options.values["--key"] else {
        fail("usage: hcos bundle verify BUNDLE --key PUBLIC-KEY | hcos bundle oci BUNDLE --output DIR", status: 2)
    }
    do {
        let file = try FileDescriptor(path: options.positional[1], flags: O_RDONLY)
        let head = try UpdateBundle.readHead(file, trustedKeys: [try BundleKeys.read(key, kind: "public")])
        try UpdateBundle.verifyPayloads(file, head: head)
        let manifest = head.manifest
        print("valid hcos \(manifest.version) bundle (\(manifest.architecture), kernel \(manifest.kernelVersion))")
        for payload in manifest.payloads {
            print("  \(payload.name)  \(ByteSize.format(payload.size))  sha256:\(payload.sha256)")
        }
    } catch {
        fail("\(error)")
    }
}

var arguments = Array(CommandLine.arguments.dropFirst())
guard let command = arguments.first else { fail(usage, status: 2) }
arguments.removeFirst()
switch command {
case "build": build(arguments)
case "keygen": keygen(arguments)
case "bundle": bundle(arguments)
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
case "demo":
    do {
        let options = try UpgradeDemo.parse(arguments)
        exit(
            try await UpgradeDemo.run(options, logger: logger) { json in
                print(ReportPrinter.render(json: json, image: options.image))
            })
    } catch {
        fail("\(error)")
    }
case "-h", "--help", "help": print(usage)
default: fail("unknown command '\(command)'\n\(usage)", status: 2)
}
