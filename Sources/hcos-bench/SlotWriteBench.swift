import Agent
import Digest
import Foundation
import HCOSCore
import VM

/// One payload written to a slot several times by each writer.
struct SlotWriteMeasurement: Codable {
    var payload: String
    var bytes: UInt64
    /// `dd bs=4M conv=notrunc,fsync` of the same bytes to the same place.
    var ddSeconds: [Double]
    /// os-agent's `SlotWriter.copy`: 4 MiB chunks, SHA-256 as they stream, fsync.
    var writeSeconds: [Double]
    /// os-agent's `SlotWriter.verify`: the slot read back from the disk (cache dropped) and hashed.
    var verifySeconds: [Double]

    static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    func rate(_ seconds: [Double]) -> Double? { Self.median(seconds).map { Double(bytes) / $0 } }
    var ddRate: Double? { rate(ddSeconds) }
    var writeRate: Double? { rate(writeSeconds) }
    /// Write and read-back together: what an upgrade's writing phase costs.
    var writeAndVerifyRate: Double? {
        let totals = zip(writeSeconds, verifySeconds).map { $0 + $1 }
        return rate(totals)
    }
}

/// Slot write throughput on the build host: os-agent's slot writer (the code a node runs)
/// against `dd` writing the same bytes to the same partition of the same disk file, rounds
/// alternating which goes first. Both read a source that is in the page cache and end with
/// fsync, so the disk sets the pace; the writer's SHA-256 is what it adds.
struct SlotWriteBench {
    static let rounds = 3
    static let largeSize: UInt64 = 1 << 30

    let directory: String
    let logger: Logger

    func run(diskImage: String, rootImage: String) throws -> [SlotWriteMeasurement] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let disk = "\(directory)/disk.raw"
        try DiskImage.prepareVMDisk(from: diskImage, to: disk)
        defer { unlink(disk) }
        let slot = try NodeDisk.image(disk).rootB
        let large = "\(directory)/random.img"
        try Self.writeRandomFile(large, size: min(Self.largeSize, slot.size))
        defer { unlink(large) }
        return [
            try measure(payload: "root image", source: rootImage, slot: slot),
            try measure(payload: "1 GiB of random bytes", source: large, slot: slot),
        ]
    }

    func measure(payload: String, source path: String, slot: PartitionRef) throws -> SlotWriteMeasurement {
        let source = try FileDescriptor(path: path, flags: O_RDONLY)
        let size = try source.size()
        // Hashing the source also brings it into the page cache for both writers.
        let digest = SHA256.hex(try SHA256.hash(file: path))
        logger.info("slot write: \(payload)", [("bytes", String(size)), ("slot", slot.description)])
        // A first write allocates the slot's blocks in the sparse disk file; not timed.
        try dd(path, to: slot)
        let writer = SlotWriter(target: slot)
        var result = SlotWriteMeasurement(
            payload: payload, bytes: size, ddSeconds: [], writeSeconds: [], verifySeconds: [])
        for round in 1...Self.rounds {
            let ddFirst = round % 2 == 1
            for which in ddFirst ? ["dd", "agent"] : ["agent", "dd"] {
                // The slot's pages leave the host's page cache (they are clean after the fsync).
                try FileDescriptor(path: slot.path, flags: O_RDONLY).dropCache(at: slot.offset, count: slot.size)
                if which == "dd" {
                    result.ddSeconds.append(try Self.time { try dd(path, to: slot) })
                } else {
                    result.writeSeconds.append(
                        try Self.time {
                            try writer.copy(from: source, offset: 0, size: size, digest: digest, progress: { _ in })
                        })
                    result.verifySeconds.append(try Self.time { try writer.verify(size: size, digest: digest) })
                }
            }
        }
        logger.info(
            "slot write measured",
            [
                ("payload", payload), ("dd_MiBps", Self.format(result.ddRate)),
                ("agent_MiBps", Self.format(result.writeRate)),
            ])
        return result
    }

    /// The same bytes to the same offset, the way an administrator would copy an image by hand.
    func dd(_ source: String, to slot: PartitionRef) throws {
        try Command(
            "dd",
            [
                "if=\(source)", "of=\(slot.path)", "bs=4M", "seek=\(slot.offset)", "oflag=seek_bytes",
                "conv=notrunc,fsync", "status=none",
            ]
        ).run()
    }

    static func time(_ body: () throws -> Void) throws -> Double {
        let clock = ContinuousClock()
        let elapsed = try clock.measure(body)
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// Incompressible bytes, so no layer below (sparse files, compression) makes the write cheap.
    static func writeRandomFile(_ path: String, size: UInt64) throws {
        let random = try FileDescriptor(path: "/dev/urandom", flags: O_RDONLY)
        let file = try FileDescriptor(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        var done: UInt64 = 0
        while done < size {
            let chunk = try random.read(at: 0, count: Int(min(UInt64(4 << 20), size - done)))
            try file.write(chunk, at: done)
            done += UInt64(chunk.count)
        }
        try file.sync()
    }

    static func format(_ rate: Double?) -> String { rate.map { String(format: "%.0f", $0 / 1_048_576) } ?? "-" }
}
