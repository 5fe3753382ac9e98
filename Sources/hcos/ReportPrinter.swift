import Builder
import Foundation
import HCOSCore
import Node

/// Renders a node's boot report (the HCOS-READY JSON) for `hcos vm --report` and `make demo`,
/// with the image sizes from the build record next to the image.
enum ReportPrinter {
    static func render(json: String, image: String) -> String {
        guard let report = try? JSONDecoder().decode(BootReport.self, from: Data(json.utf8)) else {
            return "boot report (unparsed): \(json)"
        }
        func seconds(_ value: Double?) -> String { value.map { String(format: "%.1f s", $0) } ?? "?" }
        func mib(_ kib: UInt64) -> String { String(format: "%.0f MiB", Double(kib) / 1024) }
        var lines = [
            "hcos \(report.version) booted from slot \(report.slot)\(report.trial ? " (trial boot)" : "") — kernel \(report.kernel)",
            "boot time   kernel → userspace \(seconds(report.timings.userspaceStart)) → systemd ready "
                + "\(seconds(report.timings.systemdReady)) → containerd ready \(seconds(report.timings.containerdReady))",
            "memory      \(mib(report.memory.usedKiB)) in use (total − available), "
                + "\(mib(report.memory.usedWithoutCacheKiB)) without page cache, of \(mib(report.memory.totalKiB))",
            "processes   \(report.processes), running units \(report.runningUnits), failed units: "
                + (report.failedUnits.isEmpty ? "none" : report.failedUnits.joined(separator: ", ")),
            "root        \(report.rootReadOnly ? "read-only" : "WRITABLE")",
        ]
        for mount in report.mounts {
            let path = mount.path.padding(toLength: 11, withPad: " ", startingAt: 0)
            lines.append("\(path) \(mount.fsType) from \(mount.source) (\(mount.readOnly ? "ro" : "rw"))")
        }
        lines.append("PERSIST     \(ByteSize.format(report.persistBytes)) ext4")
        let record = (image as NSString).deletingPathExtension + ".build.json"
        if let data = FileManager.default.contents(atPath: record),
            let build = try? JSONDecoder().decode(BuildResult.self, from: data)
        {
            lines.append(
                "images      root \(ByteSize.format(build.rootSize)) (\(build.rootFormat)/\(build.rootCompression)), "
                    + "disk \(ByteSize.format(build.diskSize)) raw (\(ByteSize.format(build.diskAllocated)) allocated)"
                    + (build.qcow2Size.map { ", qcow2 \(ByteSize.format($0))" } ?? ""))
        }
        return lines.joined(separator: "\n")
    }
}
