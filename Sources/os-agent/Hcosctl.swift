import Agent
import AgentHTTP
import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// hcosctl: the command-line client of os-agent ("API O&M": no SSH on the host). The same
/// binary as os-agent, started under the name hcosctl.
enum Hcosctl {
    static let usage = """
        usage: hcosctl [--socket PATH] [--json] COMMAND
          status                          running version, slots, last result, failed versions
          upgrade SOURCE [--reboot] [--expect-version V] [--force] [--no-wait]
                                          SOURCE: a bundle file, an http(s) URL, or an OCI
                                          reference (registry/repo:tag or registry/repo@sha256:...)
          rollback [--no-reboot]          make the other slot (if valid) the default, and reboot
          reboot                          reboot the node
          mark-good                       commit the current trial boot now
          settings [--tries N] [--health-timeout SECONDS] [--insecure-registry HOST[:PORT]]...
        """

    struct Failure: Error {
        var message: String
        var status: Int32 = 1
    }

    static func main(_ arguments: [String]) -> Int32 {
        var socket = Serve.socketPath
        var json = false
        var rest: [String] = []
        var input = arguments[...]
        while let argument = input.popFirst() {
            switch argument {
            case "--socket":
                guard let value = input.popFirst() else { return usageError("--socket needs a path") }
                socket = value
            case "--json": json = true
            case "-h", "--help", "help":
                print(usage)
                return 0
            default: rest.append(argument)
            }
        }
        guard let command = rest.first else { return usageError("no command") }
        let client = UnixHTTPClient(socketPath: socket, timeout: 60)
        let commandArguments = Array(rest.dropFirst())
        do {
            switch command {
            case "status": try status(client, json: json, commandArguments)
            case "upgrade": try upgrade(client, json: json, commandArguments)
            case "rollback":
                try expectFlags(commandArguments, allowed: ["--no-reboot"])
                let body = RollbackRequest(reboot: !commandArguments.contains("--no-reboot"))
                let response: ActionResponse = try client.json("POST", "/v1/rollback", body: body)
                printAction(response, json: json)
            case "reboot":
                try expectFlags(commandArguments, allowed: [])
                let response: ActionResponse = try client.json("POST", "/v1/reboot", body: [String: String]())
                printAction(response, json: json)
            case "mark-good":
                try expectFlags(commandArguments, allowed: [])
                let response: ActionResponse = try client.json("POST", "/v1/mark-good", body: [String: String]())
                printAction(response, json: json)
            case "settings": try settings(client, json: json, commandArguments)
            default: return usageError("unknown command '\(command)'")
            }
            return 0
        } catch let failure as Failure {
            printError(failure.message)
            return failure.status
        } catch {
            printError("\(error)")
            return 1
        }
    }

    static func usageError(_ message: String) -> Int32 {
        printError("\(message)\n\(usage)")
        return 2
    }

    static func printError(_ message: String) {
        Logger.standardError("hcosctl: error: \(message)")
    }

    static func expectFlags(_ arguments: [String], allowed: Set<String>) throws {
        for argument in arguments where !allowed.contains(argument) {
            throw Failure(message: "unexpected argument '\(argument)'\n\(usage)", status: 2)
        }
    }

    static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    static func printAction(_ response: ActionResponse, json: Bool) {
        print(json ? encode(response) : response.message)
    }

    // MARK: status

    static func status(_ client: UnixHTTPClient, json: Bool, _ arguments: [String]) throws {
        try expectFlags(arguments, allowed: [])
        let status: NodeStatus = try client.json("GET", "/v1/status")
        if json {
            print(encode(status))
            return
        }
        print(render(status))
    }

    static func render(_ status: NodeStatus) -> String {
        var lines: [String] = []
        let booted = status.slots.first { $0.booted }
        let condition = status.trial ? "trial boot, health gate running" : (booted?.good == true ? "committed" : "")
        lines.append("hcos \(status.version) on slot \(status.bootedSlot)\(condition.isEmpty ? "" : " (\(condition))")")
        lines.append("")
        lines.append(pad("SLOT", 6) + pad("VERSION", 12) + pad("STATE", 10) + "BOOT")
        for slot in status.slots {
            var boot: [String] = []
            if slot.good { boot.append("good") }
            if !slot.good && slot.triesLeft > 0 {
                boot.append("\(slot.triesLeft) tr\(slot.triesLeft == 1 ? "y" : "ies") left")
            }
            if !slot.good && slot.triesLeft == 0 { boot.append("not bootable") }
            if slot.next { boot.append("next boot") }
            if slot.booted { boot.append("running") }
            lines.append(
                pad(slot.name, 6) + pad(slot.version ?? "-", 12) + pad(slot.state, 10) + boot.joined(separator: ", "))
        }
        lines.append("")
        if let operation = status.operation {
            var text =
                "operation:    \(operation.id) \(operation.kind) \(operation.version ?? "") \(operation.phase.rawValue)"
            if let progress = operation.progress, let total = progress.total, total > 0, !operation.phase.isFinal {
                text += " \(progress.done * 100 / total)%"
            }
            if let error = operation.error { text += ": \(error)" }
            lines.append(text)
        }
        if let last = status.lastResult {
            lines.append("last result:  \(last.kind) \(last.outcome): \(last.message) (\(last.at))")
        }
        if status.failedVersions.isEmpty {
            lines.append("failed versions: none")
        } else {
            lines.append("failed versions:")
            for (version, reason) in status.failedVersions.sorted(by: { $0.key < $1.key }) {
                lines.append("  \(version): \(reason)")
            }
        }
        if let health = status.health {
            let failing = health.checks.filter { !$0.ok }.map { "\($0.name) (\($0.detail))" }
            lines.append(
                "health gate:  \(health.passed ? "passed" : "not passed: " + failing.joined(separator: "; ")) (\(health.at))"
            )
        }
        return lines.joined(separator: "\n")
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }

    // MARK: upgrade

    static func upgrade(_ client: UnixHTTPClient, json: Bool, _ arguments: [String]) throws {
        var source: String?
        var request = UpgradeRequest(source: "")
        var wait = true
        var input = arguments[...]
        while let argument = input.popFirst() {
            switch argument {
            case "--reboot": request.reboot = true
            case "--force": request.force = true
            case "--no-wait": wait = false
            case "--expect-version":
                guard let value = input.popFirst() else {
                    throw Failure(message: "--expect-version needs a version", status: 2)
                }
                request.expectVersion = value
            default:
                guard source == nil, !argument.hasPrefix("-") else {
                    throw Failure(message: "unexpected argument '\(argument)'\n\(usage)", status: 2)
                }
                source = argument
            }
        }
        guard let source else { throw Failure(message: "upgrade needs a SOURCE\n\(usage)", status: 2) }
        // A relative file path means the caller's directory; the agent runs elsewhere.
        if !source.contains("://"), source.hasPrefix("./") || source.hasPrefix("../") || FileSystem.exists(source),
            !source.hasPrefix("/")
        {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
            if getcwd(&buffer, buffer.count) != nil {
                let cwd = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                request.source = cwd + "/" + source
            }
        }
        if request.source.isEmpty { request.source = source }
        let accepted: ActionResponse = try client.json("POST", "/v1/upgrade", body: request)
        guard let operation = accepted.operation else { throw Failure(message: "the agent returned no operation") }
        if !wait {
            print(json ? encode(accepted) : "upgrade accepted: operation \(operation.id)")
            return
        }
        let display = ProgressDisplay(enabled: !json)
        var last = operation
        while true {
            let current: AgentOperation
            do {
                current = try client.json("GET", "/v1/operations/\(operation.id)")
            } catch {
                // The node went down for the reboot we asked for.
                if last.phase == .rebooting || last.phase == .staged && request.reboot == true { break }
                throw error
            }
            display.show(current)
            last = current
            if current.phase.isFinal || current.phase == .staged && request.reboot != true
                || current.phase == .rebooting
            {
                break
            }
            usleep(300_000)
        }
        display.finish()
        if json {
            print(encode(last))
        } else {
            switch last.phase {
            case .staged:
                print(
                    "slot \(last.targetSlot ?? "?") holds \(last.version ?? "the new version"), armed for the next boot; run 'hcosctl reboot'"
                )
            case .rebooting:
                print(
                    "rebooting into slot \(last.targetSlot ?? "?") (\(last.version ?? "")); it commits after its health gate passes"
                )
            default: break
            }
        }
        if last.phase == .failed {
            throw Failure(message: "upgrade failed: \(last.error ?? "unknown reason")")
        }
    }

    /// Phase lines and, on a terminal, a progress bar redrawn in place (on standard error).
    final class ProgressDisplay {
        let enabled: Bool
        let terminal = isatty(2) == 1
        var phase: UpgradePhase?
        var message: String?
        var drawn = false
        var bar = ""
        var total: UInt64?

        init(enabled: Bool) { self.enabled = enabled }

        /// A line for each new phase and each new step inside it; the bar only when it changed.
        func show(_ operation: AgentOperation) {
            guard enabled else { return }
            if operation.phase != phase || operation.message != message {
                // The step behind the bar is over (the poll may have missed its last bytes).
                if drawn, operation.phase != .failed, let total { draw(done: total, total: total) }
                if drawn { emit("\n") }
                total = nil
                drawn = false
                bar = ""
                if operation.phase != phase {
                    emit("[\(operation.phase.rawValue)]" + (operation.message.map { " " + $0 } ?? "") + "\n")
                } else if let step = operation.message {
                    emit("  \(step)\n")
                }
                phase = operation.phase
                message = operation.message
            }
            guard terminal, let progress = operation.progress, let total = progress.total, total > 0 else { return }
            draw(done: progress.done, total: total)
        }

        func draw(done: UInt64, total: UInt64) {
            let width = 40
            let filled = Int(done * UInt64(width) / total)
            let line =
                "  [" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
                + "] \(done * 100 / total)% \(ByteSize.format(done)) of \(ByteSize.format(total))"
            guard line != bar else { return }
            // Padded to the last bar's width: a shorter line leaves nothing of the longer one.
            emit("\r" + line + String(repeating: " ", count: max(0, bar.count - line.count)))
            bar = line
            drawn = true
            self.total = total
        }

        func finish() { if drawn { emit("\n") } }

        func emit(_ text: String) {
            var bytes = Array(text.utf8)
            _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
        }
    }

    // MARK: settings

    static func settings(_ client: UnixHTTPClient, json: Bool, _ arguments: [String]) throws {
        var update = SettingsUpdate()
        var registries: [String] = []
        var input = arguments[...]
        while let argument = input.popFirst() {
            guard let value = input.popFirst() else { throw Failure(message: "\(argument) needs a value", status: 2) }
            switch argument {
            case "--tries":
                guard let tries = Int(value) else { throw Failure(message: "--tries needs a number", status: 2) }
                update.tries = tries
            case "--health-timeout":
                guard let seconds = Int(value) else {
                    throw Failure(message: "--health-timeout needs seconds", status: 2)
                }
                update.healthTimeoutSeconds = seconds
            case "--insecure-registry": registries.append(value)
            default: throw Failure(message: "unexpected argument '\(argument)'\n\(usage)", status: 2)
            }
        }
        if !registries.isEmpty { update.insecureRegistries = registries }
        let settings: AgentSettings =
            update == SettingsUpdate()
            ? try client.json("GET", "/v1/settings") : try client.json("PUT", "/v1/settings", body: update)
        if json {
            print(encode(settings))
        } else {
            print("tries \(settings.tries), health timeout \(settings.healthTimeoutSeconds) s")
            print("insecure registries: \((settings.insecureRegistries ?? []).joined(separator: ", "))")
        }
    }
}
