import Digest
import Foundation
import HCOSCore
import Node
import Testing
import VM

/// containerd on the node runs a container from an image imported locally (no registry), with
/// the overlayfs snapshotter on PERSIST.
@Suite("containers on an hcos node", .serialized)
struct ContainerTests {
    /// A one-layer OCI image archive (image-spec "image layout", tarred) holding a static busybox.
    static func makeImageArchive(in directory: String) throws -> String {
        let busybox = "/bin/busybox"
        guard FileManager.default.fileExists(atPath: busybox) else {
            Issue.record("\(busybox) is missing (package busybox-static; run 'make setup')")
            throw HCOSError(.notFound, busybox)
        }
        let rootfs = "\(directory)/layer-root"
        try FileManager.default.createDirectory(atPath: "\(rootfs)/bin", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: busybox, toPath: "\(rootfs)/bin/busybox")
        let layout = "\(directory)/layout"
        let blobs = "\(layout)/blobs/sha256"
        try FileManager.default.createDirectory(atPath: blobs, withIntermediateDirectories: true)
        let layerTar = "\(directory)/layer.tar"
        try Command(
            "tar", ["--sort=name", "--owner=0", "--group=0", "--mtime=@0", "-C", rootfs, "-cf", layerTar, "bin"]
        )
        .run()

        func store(_ bytes: [UInt8]) throws -> (digest: String, size: Int) {
            let digest = "sha256:" + SHA256.hex(try SHA256.hash(bytes))
            try Data(bytes).write(to: URL(fileURLWithPath: "\(blobs)/\(digest.dropFirst(7))"))
            return (digest, bytes.count)
        }
        let layer = try store(Array(try Data(contentsOf: URL(fileURLWithPath: layerTar))))
        let config = try store(
            Array(
                """
                {"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/busybox"]},\
                "rootfs":{"type":"layers","diff_ids":["\(layer.digest)"]}}
                """.utf8))
        let manifest = try store(
            Array(
                """
                {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
                "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(config.digest)","size":\(config.size)},\
                "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\(layer.digest)","size":\(layer.size)}]}
                """.utf8))
        try """
        {"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",\
        "digest":"\(manifest.digest)","size":\(manifest.size),\
        "annotations":{"io.containerd.image.name":"hcos.test/hello:1","org.opencontainers.image.ref.name":"1"}}]}
        """.write(toFile: "\(layout)/index.json", atomically: true, encoding: .utf8)
        try #"{"imageLayoutVersion":"1.0.0"}"#.write(toFile: "\(layout)/oci-layout", atomically: true, encoding: .utf8)
        let archive = "\(directory)/hello.oci.tar"
        try Command("tar", ["--sort=name", "--owner=0", "--group=0", "-C", layout, "-cf", archive, "."]).run()
        return archive
    }

    @Test("containerd imports a local image and runs a container with the overlayfs snapshotter")
    func runsALocallyImportedContainer() async throws {
        let directory = try SystemSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let archive = try Self.makeImageArchive(in: directory)
        // The archive reaches the guest as a second, read-only disk (/dev/vdb): no network needed.
        let vm = try await SystemSupport.boot(
            disk: try SystemSupport.disk(in: directory), directory: directory,
            extraArguments: ["-drive", "file=\(archive),format=raw,if=virtio,readonly=on"])
        try await SystemSupport.using(vm) {
            _ = try await SystemSupport.ready(vm)
            let shell = try await SystemSupport.shell(vm)
            _ = try await shell.check("cat /dev/vdb > /tmp/hello.oci.tar", timeout: .seconds(120))
            let imported = try await shell.check(
                "ctr images import --snapshotter overlayfs /tmp/hello.oci.tar", timeout: .seconds(300))
            #expect(imported.contains("hcos.test/hello:1"))
            let output = try await shell.check(
                "ctr run --rm --snapshotter overlayfs hcos.test/hello:1 hello /bin/busybox echo hello-from-a-container",
                timeout: .seconds(300))
            #expect(output.split(separator: "\n").contains("hello-from-a-container"))
            let snapshots = try await shell.check("ctr snapshots --snapshotter overlayfs ls")
            #expect(snapshots.contains("Committed"))
            // The snapshotter's layers live on PERSIST's ext4, not inside an overlay.
            let fsType = try await shell.check(
                "stat -f -c %T /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"
            ).trimmed()
            #expect(fsType == "ext2/ext3")
        }
    }
}
