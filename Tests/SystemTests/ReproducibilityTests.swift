import Foundation
import Bundle
import HCOSCore
import Testing

@testable import Builder

/// The same configuration and the same package versions give the same root image.
@Suite("reproducible builds", .serialized)
struct ReproducibilityTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @Test("a second build from scratch (new bootstrap, cached packages) gives the same root image digest")
    func secondBuildHasTheSameRootDigest() throws {
        let image = try SystemSupport.requireImage()
        let record = (image as NSString).deletingPathExtension + ".build.json"
        let first = try JSONDecoder().decode(BuildResult.self, from: Data(contentsOf: URL(fileURLWithPath: record)))
        let output = try SystemSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: output) }
        let hcos = "\(Self.packageRoot)/.build/release/hcos"
        try #require(FileManager.default.isExecutableFile(atPath: hcos), "build \(hcos) first (make binaries)")
        // The test image was signed with HCOS_TEST_KEY (make test); the public key is part of the root.
        let key = ProcessInfo.processInfo.environment["HCOS_TEST_KEY"]
        let sign = key.map { ["--sign", "\($0).key"] } ?? []
        try Command(hcos, ["build", "--output", output, "--no-qcow2"] + sign, workingDirectory: Self.packageRoot).run()
        let second = try JSONDecoder().decode(
            BuildResult.self, from: Data(contentsOf: URL(fileURLWithPath: "\(output)/hcos-\(first.version).build.json"))
        )
        #expect(second.rootDigest == first.rootDigest)
        #expect(second.rootSize == first.rootSize)
        // The initramfs is deterministic too (cpio with fixed mtimes, zstd).
        let firstInitrd = try Data(contentsOf: URL(fileURLWithPath: first.initramfs))
        let secondInitrd = try Data(contentsOf: URL(fileURLWithPath: second.initramfs))
        #expect(firstInitrd == secondInitrd)

        // Both signed bundles verify against the key, and carry the root image that was built.
        if let key {
            let trusted = try BundleKeys.read("\(Self.packageRoot)/\(key).pub", kind: "public")
            for build in [first, second] {
                let bundle = try #require(build.bundle)
                let path = bundle.hasPrefix("/") ? bundle : "\(Self.packageRoot)/\(bundle)"
                let file = try FileDescriptor(path: path, flags: O_RDONLY)
                let head = try UpdateBundle.readHead(file, trustedKeys: [trusted])
                try UpdateBundle.verifyPayloads(file, head: head)
                #expect(head.manifest.payload("rootfs")?.sha256 == build.rootDigest)
                #expect(head.manifest.version == build.version)
            }
        } else {
            Issue.record("HCOS_TEST_KEY is not set (make test sets it): the signed bundle was not checked")
        }
    }
}
