import FoundationEssentials
import HCOSCore
import Node

#if canImport(Glibc)
    import Glibc
#endif

// os-agent: the node daemon of hcos. This binary runs on the node (statically linked, in the
// image). Subcommands:
//   os-agent grow-persist            grow PERSIST to fill the disk (first boot; idempotent)
//   os-agent report [--marker WORD]  print the node's boot report as one JSON line
//   os-agent power-button DEVICE     power off cleanly when the ACPI power button is pressed
//   os-agent serve                   the daemon: API on /run/hcos/agent.sock, upgrades, health gate
//   os-agent ctl ARGS / hcosctl ARGS the command-line client of the API

let usage = """
    usage: os-agent serve
           os-agent ctl ARGS...   (the same as hcosctl ARGS...)
           os-agent grow-persist
           os-agent report [--marker WORD]
           os-agent power-button DEVICE
    """

let logger = Logger(label: "os-agent")
var arguments = Array(CommandLine.arguments.dropFirst())

// One binary, two names: started as hcosctl it is the API client.
if CommandLine.arguments.first.map({ $0.split(separator: "/").last == "hcosctl" }) == true {
    exit(Hcosctl.main(arguments))
}

func fail(_ message: String, status: Int32 = 1) -> Never {
    logger.error(message)
    exit(status)
}

guard let command = arguments.first else { fail(usage, status: 2) }
arguments.removeFirst()

switch command {
case "grow-persist":
    do {
        _ = try PersistGrower(logger: logger).run()
    } catch {
        // Never block the boot: say why, exit non-zero so the unit shows the failure.
        fail("cannot grow PERSIST: \(error)")
    }
case "report":
    var marker: String?
    if arguments.first == "--marker", arguments.count == 2 {
        marker = arguments[1]
    } else if !arguments.isEmpty {
        fail(usage, status: 2)
    }
    do {
        let json = try BootReport.collect().json()
        print(marker.map { "\($0) \(json)" } ?? json)
    } catch {
        fail("cannot collect the report: \(error)")
    }
case "power-button":
    guard arguments.count == 1 else { fail(usage, status: 2) }
    do {
        try PowerButton(device: arguments[0], logger: logger).run()
    } catch {
        fail("power button: \(error)")
    }
case "serve":
    guard arguments.isEmpty else { fail(usage, status: 2) }
    do {
        try Serve.run(logger: logger)
    } catch {
        fail("cannot start the agent: \(error)")
    }
case "ctl":
    exit(Hcosctl.main(arguments))
case "-h", "--help", "help":
    print(usage)
default:
    fail("unknown command '\(command)'\n\(usage)", status: 2)
}
