import Builder
import Bundle
import Digest
import Foundation
import HCOSCore

/// The hcos side of the benchmark: the default image, signed with the benchmark's own key
/// (DIR/signing.key, made once) so that it accepts the upgrade section's bundles, built with
/// `Build` into DIR/hcos unless a signed build of the same version, newer than everything it is
/// made from (image/, the configuration, os-agent, the key), is already there.
enum HCOSImage {
    static func ensure(
        config: BuildConfig, configPath: String, options: BenchOptions, dataDirectory: String, agent: String,
        logger: Logger
    ) throws -> BuildResult {
        let directory = "\(options.output)/hcos"
        let summary = "\(directory)/hcos-\(config.version).build.json"
        let key = try ensureSigningKey(options)
        let inputs = [dataDirectory, config.baseDirectory, configPath, agent, key]
        if !options.rebuild, let data = FileManager.default.contents(atPath: summary),
            let result = try? JSONDecoder().decode(BuildResult.self, from: data),
            FileManager.default.fileExists(atPath: result.diskImage), result.bundle != nil,
            let built = modificationDate(summary), newestModification(inputs) < built
        {
            logger.info("hcos: reusing \(result.diskImage) (newer than its inputs; --rebuild to build it again)")
            return result
        }
        logger.info("hcos: building the image into \(directory) (missing, or older than image/ or os-agent)")
        var buildOptions = Build.Options(
            output: directory, cache: options.cache, agentBinary: agent, imageDirectory: dataDirectory)
        buildOptions.signingKey = key
        return try Build(config: config, options: buildOptions, logger: logger.with([("image", "hcos")])).run()
    }

    static func signingKey(_ options: BenchOptions) -> String { "\(options.output)/signing.key" }

    /// The benchmark's signing key, made on first use (never overwritten).
    static func ensureSigningKey(_ options: BenchOptions) throws -> String {
        let path = signingKey(options)
        guard !FileManager.default.fileExists(atPath: path) else { return path }
        let pair = try Ed25519.generate()
        try BundleKeys.write(pair.publicKey, kind: "public", to: "\(options.output)/signing.pub", mode: 0o644)
        try BundleKeys.write(pair.privateKey, kind: "private", to: path, mode: 0o600)
        return path
    }

    static func modificationDate(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    /// The newest modification time of the given files and of everything under the given directories.
    static func newestModification(_ paths: [String]) -> Date {
        var newest = Date.distantPast
        for path in paths {
            if let date = modificationDate(path) { newest = max(newest, date) }
            guard let walker = FileManager.default.enumerator(atPath: path) else { continue }
            while let relative = walker.nextObject() as? String {
                if let date = modificationDate("\(path)/\(relative)") { newest = max(newest, date) }
            }
        }
        return newest
    }

    /// Where the product's data (image/) lives: $HCOS_DATA_DIR, ./image, or next to the source
    /// tree the executable was built from (as `hcos build` finds it).
    static func dataDirectory(environment: [String: String]) throws -> String {
        if let dir = environment["HCOS_DATA_DIR"], !dir.isEmpty { return dir }
        let fm = FileManager.default
        if fm.fileExists(atPath: "image/grub/grub.cfg") { return fm.currentDirectoryPath + "/image" }
        var dir = executableDirectory()
        for _ in 0..<5 {
            if fm.fileExists(atPath: dir.appendingPathComponent("image/grub/grub.cfg").path) {
                return dir.appendingPathComponent("image").path
            }
            dir.deleteLastPathComponent()
        }
        throw HCOSError(
            .notFound, "cannot find the hcos data directory (image/); run from the source tree or set HCOS_DATA_DIR")
    }

    /// os-agent from the same build as this executable (`make bench` builds both).
    static func agentBinary(environment: [String: String]) throws -> String {
        let path = environment["HCOS_AGENT_BINARY"] ?? executableDirectory().appendingPathComponent("os-agent").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw HCOSError(
                .notFound,
                "os-agent not found at \(path); build it first: swift build -c release --static-swift-stdlib --product os-agent"
            )
        }
        return path
    }

    static func executableDirectory() -> URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }
}
