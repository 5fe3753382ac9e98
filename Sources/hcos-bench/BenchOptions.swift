import Builder
import Foundation
import HCOSCore

/// The command line of `hcos-bench`.
struct BenchOptions {
    static let usage = """
        usage: hcos-bench [--output DIR] [--config FILE] [--cache DIR] [--boots 1|2] [--timeout SECONDS]
                          [--rebuild] [--table-only]
          --output DIR       where the images, console logs and results go (default: build/bench)
          --config FILE      hcos build configuration (default: image/hcos.conf)
          --cache DIR        apt download cache shared with hcos build (default: $HCOS_CACHE or ~/.cache/hcos)
          --boots N          boots per image: 1 (first boot) or 2 (first and second boot; default)
          --timeout SECONDS  longest wait for one boot's HCOS-READY line (default 900)
          --rebuild          build both images again even when build/bench holds them
          --table-only       print the table of the last run again (from DIR/results.json)
        Builds hcos and a standard Debian cloud-style image with the same kernel, boots both in
        qemu with the same settings, and prints the comparison (also written to DIR/results.md).
        """

    var output = "build/bench"
    var config: String?
    var cache: String
    var boots = 2
    var timeout = Duration.seconds(900)
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
            case "--rebuild": options.rebuild = true
            case "--table-only": options.tableOnly = true
            case "-h", "--help": options.help = true
            default: throw HCOSError(.invalidArgument, "unexpected argument '\(argument)'\n\(usage)")
            }
        }
        return options
    }

    /// The same apt cache `hcos build` uses, so the two bootstraps share their downloads.
}
