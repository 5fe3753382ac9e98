// swift-tools-version:6.0
import PackageDescription

// Node-side targets (everything os-agent links) import FoundationEssentials only, so the
// statically linked binary in the image stays small (no ICU data). Host-side targets may use Foundation.
let package = Package(
    name: "hcos",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "hcos", targets: ["hcos"]),
        .executable(name: "os-agent", targets: ["os-agent"]),
        .executable(name: "hcos-bench", targets: ["hcos-bench"]),
    ],
    targets: [
        // C libraries from Debian, wrapped once each.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CCrypto", path: "Sources/CCrypto"),
        .systemLibrary(name: "CCurl", path: "Sources/CCurl"),

        // What Glibc does not export: GNU extensions and ioctl numbers, prefixed hcos_.
        .target(name: "CShim"),
        // Shared foundations: errors, logging, subprocesses, durable files, syscalls.
        .target(name: "HCOSCore", dependencies: ["CShim"]),
        // GPT / protective MBR / GRUB BIOS boot sectors / block-device ioctls.
        .target(name: "Disk", dependencies: ["HCOSCore", "CZlib"]),
        // The GRUB environment block and the A/B slot state kept in it.
        .target(name: "GrubEnv", dependencies: ["HCOSCore"]),
        // ELF dynamic-dependency reader (used to keep shared libraries of kept binaries).
        .target(name: "ELF", dependencies: ["HCOSCore"]),
        // Deterministic cpio (newc) writer for the initramfs.
        .target(name: "Archive", dependencies: ["HCOSCore"]),
        // SHA-256 over libcrypto.
        .target(name: "Digest", dependencies: ["HCOSCore", "CCrypto"]),
        // The signed update bundle: manifest, signature, payloads (DESIGN §4).
        .target(name: "Bundle", dependencies: ["HCOSCore", "Digest"]),
        // Update sources for os-agent: a file, http(s) with resume, an OCI registry (libcurl).
        .target(name: "Fetch", dependencies: ["HCOSCore", "Digest", "Bundle", "CCurl"]),
        // hcos build: Debian packages -> trimmed root -> read-only image -> GPT disk.
        .target(
            name: "Builder", dependencies: ["HCOSCore", "Disk", "GrubEnv", "ELF", "Archive", "Digest", "Bundle"]),
        // qemu runner, serial console and debug-shell client.
        .target(name: "VM", dependencies: ["HCOSCore", "Disk", "GrubEnv"]),
        // HTTP/1.1 over a Unix socket: os-agent's API server and hcosctl's client.
        .target(name: "AgentHTTP", dependencies: ["HCOSCore"]),
        // Code that runs on the node: first-boot PERSIST growth, boot report.
        .target(name: "Node", dependencies: ["HCOSCore", "Disk"]),

        // os-agent's engine: slots, GRUB environment transitions, upgrade steps, health gate.
        .target(name: "Agent", dependencies: ["HCOSCore", "Disk", "GrubEnv", "Digest", "Bundle", "Node", "AgentHTTP"]),

        .executableTarget(
            name: "hcos", dependencies: ["Builder", "VM", "HCOSCore", "GrubEnv", "Node", "Bundle", "Digest"]),
        // make bench: hcos vs a standard Debian cloud-style image booted the same way; slot writes; upgrades.
        .executableTarget(
            name: "hcos-bench",
            dependencies: ["Builder", "VM", "HCOSCore", "Node", "Disk", "Agent", "Bundle", "Digest"]),
        .executableTarget(
            name: "os-agent", dependencies: ["Node", "HCOSCore", "Agent", "AgentHTTP", "Fetch", "Digest"]),

        .testTarget(
            name: "HCOSTests",
            dependencies: [
                "HCOSCore", "Disk", "GrubEnv", "ELF", "Archive", "Digest", "Builder", "VM", "Node", "Bundle", "Agent",
                "AgentHTTP", "Fetch",
            ]),
        .testTarget(
            name: "SystemTests",
            dependencies: [
                "HCOSCore", "Disk", "GrubEnv", "Builder", "VM", "Digest", "Node", "Agent", "Bundle", "AgentHTTP",
            ]),
    ]
)
