import Builder
import Foundation
import HCOSCore

/// The command line of `hcos-bench`.
struct BenchOptions {
    static let usage = """
        usage: hcos-bench [--output DIR] [--config FILE] [--cache DIR] [--boots 1|2] [--timeout SECONDS]
                          [--sections LIST] [--rebuild] [--table-only]
          --output DIR       where the images, console logs and results go (default: build/bench)
          --config FILE      hcos build configuration (default: image/hcos.conf)
          --cache DIR        apt download cache shared with hcos build (default: $HCOS_CACHE or ~/.cache/hcos)
          --boots N          boots per image: 1 (first boot) or 2 (first and second boot; default)
          --timeout SECONDS  longest wait for one boot's HCOS-READY line (default 900)
          --sections LIST    what to measure, comma-separated (default: boot,slot-write,upgrade):
                               boot        hcos vs the standard image: sizes, boot times, memory
                               slot-write  os-agent's slot writer vs dd on this host
                               upgrade     upgrade downtime vs a plain reboot, os-agent memory
                                           during a 1 GiB upgrade (in qemu)
          --rebuild          build both images again even when build/bench holds them
          --table-only       print the table of the last run again (from DIR/results.json)
        Builds hcos and a standard Debian cloud-style image with the same kernel, boots both in
        qemu with the same settings, measures slot writes and upgrades, and prints the results
        (also written to DIR/results.md).
        """

    var output = "build/bench"
    var config: String?
    var cache: String
    var boots = 2
    var timeout = Duration.seconds(900)
    var sections: Set<Section> = Set(Section.allCases)
    var rebuild = false
    var tableOnly = false
    var help = false

    init(cache: String) {
        self.cache = cache
    }

    static func parse(_ arguments: [String], environment: [String: String]) throws -> BenchOptions {
        var options = BenchOptions(cache: Build.defaultCacheDirectory(environment: environment))
        var rest = arguments[...]
        func value(_ flag: String) throws -> String {
            guard let next = rest.popFirst() else {
                throw HCOSError(.invalidArgument, "\(flag) needs a value\n\(usage)")
            }
            return next
        }
        while let argument = rest.popFirst() {
            switch argument {
            case "--output": options.output = try value(argument)
            case "--config": options.config = try value(argument)
            case "--cache": options.cache = try value(argument)
            case "--boots":
                let text = try value(argument)
                guard let boots = Int(text), (1...2).contains(boots) else {
                    throw HCOSError(.invalidArgument, "--boots takes 1 or 2, not '\(text)'")
                }
                options.boots = boots
            case "--timeout":
                let text = try value(argument)
                guard let seconds = Int(text), seconds > 0 else {
                    throw HCOSError(.invalidArgument, "--timeout takes seconds, not '\(text)'")
                }
                options.timeout = .seconds(seconds)
            case "--sections":
                let text = try value(argument)
                var sections: Set<Section> = []
                for name in text.split(separator: ",") {
                    guard let section = Section(rawValue: String(name)) else {
                        throw HCOSError(
                            .invalidArgument,
                            "--sections takes \(Section.allCases.map(\.rawValue).joined(separator: ", ")), not '\(name)'"
                        )
                    }
                    sections.insert(section)
                }
                guard !sections.isEmpty else { throw HCOSError(.invalidArgument, "--sections is empty") }
                options.sections = sections
            case "--rebuild": options.rebuild = true
            case "--table-only": options.tableOnly = true
            case "-h", "--help": options.help = true
            default: throw HCOSError(.invalidArgument, "unexpected argument '\(argument)'\n\(usage)")
            }
        }
        return options
    }

    enum Section: String, CaseIterable {
        case boot
        case slotWrite = "slot-write"
        case upgrade
    }
}
