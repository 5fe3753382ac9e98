import Foundation
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
        try Command(hcos, ["build", "--output", output, "--no-qcow2"], workingDirectory: Self.packageRoot).run()
        let second = try JSONDecoder().decode(
            BuildResult.self, from: Data(contentsOf: URL(fileURLWithPath: "\(output)/hcos-\(first.version).build.json"))
        )
        #expect(second.rootDigest == first.rootDigest)
        #expect(second.rootSize == first.rootSize)
        // The initramfs is deterministic too (cpio with fixed mtimes, zstd).
        let firstInitrd = try Data(contentsOf: URL(fileURLWithPath: first.initramfs))
        let secondInitrd = try Data(contentsOf: URL(fileURLWithPath: second.initramfs))
        #expect(firstInitrd == secondInitrd)
    }
}
