import Builder
import Foundation
import HCOSCore
import VM

// hcos-bench (`make bench`): builds hcos and a standard Debian cloud-style image with the same
// kernel, boots both in qemu with the same settings, and prints sizes, boot times and memory
// side by side with hcos's targets. The pieces: HCOSImage, StandardImage, BootRunner, Results.

let logger = Logger(label: "hcos-bench")
let environment = ProcessInfo.processInfo.environment

func fail(_ message: String, status: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("hcos-bench: error: \(message)\n".utf8))
    exit(status)
}

func printTable(_ results: BenchResults, output: String) throws {
    let table = ResultsTable(results: results).render()
    try table.write(toFile: "\(output)/results.md", atomically: true, encoding: .utf8)
    print(table, terminator: "")
}

func run(_ options: BenchOptions) async throws {
    if options.help {
        print(BenchOptions.usage)
        return
    }
    if options.tableOnly {
        let path = "\(options.output)/results.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HCOSError(.notFound, "no results at \(path): run hcos-bench without --table-only first")
        }
        try printTable(try JSONDecoder().decode(BenchResults.self, from: data), output: options.output)
        return
    }
    let dataDirectory = try HCOSImage.dataDirectory(environment: environment)
    let configPath = options.config ?? "\(dataDirectory)/hcos.conf"
    let config = try BuildConfig.load(path: configPath)
    let agent = try HCOSImage.agentBinary(environment: environment)
    let accelerator = try Accelerator.detect()
    try FileManager.default.createDirectory(atPath: options.output, withIntermediateDirectories: true)

    let hcos = try HCOSImage.ensure(
        config: config, configPath: configPath, options: options, dataDirectory: dataDirectory, agent: agent,
        logger: logger)
    let boots = options.sections.contains(.boot) ? try await bootComparison(options, config: config, hcos: hcos) : nil
    let slotWrite =
        options.sections.contains(.slotWrite)
        ? try SlotWriteBench(directory: "\(options.output)/slot-write", logger: logger).run(
            diskImage: hcos.diskImage, rootImage: hcos.rootImage) : nil
    var upgrade: UpgradeBenchResult?
    if options.sections.contains(.upgrade) {
        await BootRunner(directory: "\(options.output)/vm", timeout: options.timeout, logger: logger).waitForIdleHost()
        upgrade = try await UpgradeBench(
            directory: "\(options.output)/upgrade", timeout: options.timeout, logger: logger
        )
        .run(hcos: hcos, signingKey: HCOSImage.signingKey(options))
    }

    let formatter = ISO8601DateFormatter()
    let results = BenchResults(
        date: formatter.string(from: Date()), accelerator: accelerator.rawValue, hcos: hcos, standard: boots?.standard,
        boots: boots?.measurements ?? [], slotWrite: slotWrite, upgrade: upgrade)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(results).write(to: URL(fileURLWithPath: "\(options.output)/results.json"))
    try printTable(results, output: options.output)
    logger.info("results written to \(options.output)/results.md and \(options.output)/results.json")
}

/// hcos against the standard image: both built (or reused), both booted the same way.
func bootComparison(_ options: BenchOptions, config: BuildConfig, hcos: BuildResult) async throws -> (
    standard: StandardBuildResult, measurements: [BootMeasurement]
) {
    let agent = try HCOSImage.agentBinary(environment: environment)
    let standard = try StandardImage(
        config: config, options: options, agent: agent, overlay: config.resolve(config.overlay), logger: logger
    ).ensure()
    guard standard.kernelVersion == hcos.kernelVersion else {
        throw HCOSError(
            .invalidConfig,
            "the images have different kernels (hcos \(hcos.kernelVersion), standard \(standard.kernelVersion)); "
                + "run with --rebuild")
    }

    let runner = BootRunner(directory: "\(options.output)/vm", timeout: options.timeout, logger: logger)
    // hcos takes hcos.debug-shell from its GRUB environment; the standard image has it in grub.cfg.
    var systems = [
        (name: "hcos", image: hcos.diskImage, disk: "", grubenvShell: true),
        (name: "standard", image: standard.diskImage, disk: "", grubenvShell: false),
    ]
    for index in systems.indices {
        systems[index].disk = try runner.prepareDisk(system: systems[index].name, image: systems[index].image)
    }
    var boots: [BootMeasurement] = []
    for number in 1...options.boots {
        for index in systems.indices {
            let system = systems[index]
            var retries = 0
            while true {
                var measurement = try await runner.boot(
                    system: system.name, disk: system.disk, number: number, shellViaGrubenv: system.grubenvShell)
                measurement.retries = retries
                if !measurement.disturbed || retries == BootRunner.maximumRetries {
                    boots.append(measurement)
                    break
                }
                retries += 1
                logger.warning(
                    "other load on the host slowed this boot down; measuring it again",
                    [("system", system.name), ("boot", String(number))])
                if number == 1 {
                    // A first boot again needs a fresh copy of the image.
                    _ = try runner.prepareDisk(system: system.name, image: system.image)
                }
            }
        }
    }
    for system in systems { try? FileManager.default.removeItem(atPath: system.disk) }
    return (standard, boots)
}

do {
    try await run(try BenchOptions.parse(Array(CommandLine.arguments.dropFirst()), environment: environment))
} catch let error as HCOSError where error.code == .invalidArgument {
    fail("\(error)", status: 2)
} catch {
    fail("\(error)")
}
