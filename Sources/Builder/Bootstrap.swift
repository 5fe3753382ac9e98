import Foundation
import HCOSCore

/// Runs mmdebstrap (minbase) into a staging directory. Downloaded .debs and apt lists are kept
/// in the cache directory, so a second build downloads nothing new.
public struct Bootstrap {
    let config: BuildConfig
    let cache: String
    let logger: Logger

    public init(config: BuildConfig, cache: String, logger: Logger) {
        self.config = config
        self.cache = cache
        self.logger = logger
    }

    public func run(into staging: String, variant: String = "minbase", extraPackages: [String]) throws {
        let archives = "\(cache)/apt/\(config.suite)-\(config.architecture)/archives"
        try FileManager.default.createDirectory(atPath: archives, withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: staging) { try FileManager.default.removeItem(atPath: staging) }
        let packages = (config.packages + [config.kernelPackage] + extraPackages).joined(separator: ",")
        var arguments = [
            "--variant=\(variant)", "--architecture=\(config.architecture)", "--include=\(packages)",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
            "--setup-hook=sync-in '\(archives)' /var/cache/apt/archives",
            "--customize-hook=sync-out /var/cache/apt/archives '\(archives)'",
            "--skip=essential/unlink",
        ]
        arguments += [config.suite, staging, config.mirror]
        var environment = ProcessInfo.processInfo.environment
        environment["SOURCE_DATE_EPOCH"] = environment["SOURCE_DATE_EPOCH"] ?? String(Build.defaultEpoch)
        let logger = self.logger
        do {
            try Command("mmdebstrap", arguments, environment: environment).run { line in
                // mmdebstrap's own progress lines ("I: downloading packages with apt...")
                if line.hasPrefix("I: ") { logger.info("  " + line.dropFirst(3)) }
            }
        } catch let error as HCOSError where error.code == .toolFailed {
            let unknown = error.message.split(separator: "\n").compactMap { line -> String? in
                guard let range = line.range(of: "Unable to locate package ") else { return nil }
                return String(line[range.upperBound...])
            }
            if !unknown.isEmpty {
                throw HCOSError(
                    .invalidConfig,
                    "unknown package(s) in 'packages': \(unknown.joined(separator: ", ")) (not in \(config.suite) at \(config.mirror))"
                )
            }
            throw error
        }
    }
}
