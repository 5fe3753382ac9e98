import Disk
import Foundation
import HCOSCore
import Node
import Testing
import VM

/// Shared setup of the system tests: the image `make test` built (HCOS_TEST_IMAGE), a private
/// copy of it per test, and a VM booted on that copy with the debug shell.
enum SystemSupport {
    static let bootTimeout = Duration.seconds(600)

    static var image: String? { ProcessInfo.processInfo.environment["HCOS_TEST_IMAGE"] }

    /// The test image, or a recorded failure saying how to get one (`make test` sets it).
    static func requireImage() throws -> String {
        guard let image, FileManager.default.fileExists(atPath: image) else {
            Issue.record("HCOS_TEST_IMAGE is not set to a built image; run the system tests with 'make test'")
            throw HCOSError(.notFound, "no test image")
        }
        return image
    }

    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "hcos-systest-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A fresh copy of the test image (optionally grown to `size`).
    static func disk(in directory: String, size: UInt64? = nil) throws -> String {
        let disk = "\(directory)/disk.raw"
        try DiskImage.prepareVMDisk(from: try requireImage(), to: disk, size: size)
        return disk
    }

    static func boot(
        disk: String, directory: String, debugShell: Bool = true, uefi: Bool = false, extraArguments: [String] = []
    ) async throws -> VirtualMachine {
        var config = VMConfiguration(diskPath: disk)
        config.debugShell = debugShell
        config.uefi = uefi
        config.serialLogPath = "\(directory)/console.log"
        config.extraArguments = extraArguments
        return try await VirtualMachine.start(config)
    }

    /// Waits for the next HCOS-READY after `mark` and decodes the node's report.
    static func ready(_ vm: VirtualMachine, after mark: ConsoleMark = .start) async throws -> BootReport {
        let json = try await vm.console.waitForMarker("HCOS-READY", after: mark, timeout: bootTimeout)
        return try JSONDecoder().decode(BootReport.self, from: Data(json.utf8))
    }

    /// The slot named by the next HCOS-BOOT line (printed by the initramfs) after `mark`.
    static func bootedSlot(_ vm: VirtualMachine, after mark: ConsoleMark = .start) async throws -> String {
        let line = try await vm.console.waitForMarker("HCOS-BOOT", after: mark, timeout: bootTimeout)
        return line.split(separator: " ").first { $0.hasPrefix("slot=") }.map { String($0.dropFirst(5)) } ?? "?"
    }

    /// Shuts the VM down cleanly (through the debug shell when it answered, else with the ACPI
    /// power button, which os-agent handles); returns whether the guest powered itself off.
    @discardableResult
    static func shutDown(_ vm: VirtualMachine) async -> Bool {
        await vm.stop(timeout: .seconds(120))
    }

    /// Runs `body` against `vm` and shuts the VM down afterwards, also when `body` throws.
    /// Returns whether the guest powered itself off.
    @discardableResult
    static func using(_ vm: VirtualMachine, _ body: () async throws -> Void) async throws -> Bool {
        do {
            try await body()
        } catch {
            await shutDown(vm)
            throw error
        }
        return await shutDown(vm)
    }

    static func shell(_ vm: VirtualMachine) async throws -> DebugShell {
        guard let shell = vm.shell else { throw HCOSError(.notFound, "the VM has no debug shell") }
        try await shell.waitUntilReady(timeout: .seconds(120))
        return shell
    }
}
