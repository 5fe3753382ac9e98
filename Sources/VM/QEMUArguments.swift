import HCOSCore

/// Builds qemu's command line from a configuration. Pure: no file system access, so the exact
/// arguments are unit-testable.
public enum QEMUArguments {
    /// Arguments after the binary name. The VM starts paused (`-S`) so that the console is
    /// connected before the first byte is printed; `VirtualMachine` sends QMP `cont`.
    public static func make(
        _ config: VMConfiguration, paths: VMPaths, accelerator: Accelerator, paused: Bool = true
    ) -> [String] {
        var args = ["-name", "hcos", "-no-user-config", "-nodefaults", "-display", "none"]
        args += ["-machine", "q35", "-accel", accelerator.rawValue]
        // `max` under TCG emulates every feature TCG knows (crc32c, aes, ...); `host` under KVM.
        args += ["-cpu", accelerator == .kvm ? "host" : "max"]
        args += ["-smp", String(config.cpus), "-m", String(config.memoryMiB)]
        if config.uefi {
            args += [
                "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=\(escape(config.firmware.code))",
            ]
            args += ["-drive", "if=pflash,format=raw,unit=1,file=\(escape(paths.uefiVariables))"]
        }
        args += [
            "-drive",
            "file=\(escape(config.diskPath)),format=\(config.diskFormat.rawValue),if=virtio,cache=writeback,discard=unmap",
        ]
        var nic = "user,model=virtio-net-pci"
        for forward in config.portForwards {
            nic += ",hostfwd=tcp:127.0.0.1:\(forward.host)-:\(forward.guest)"
        }
        args += ["-nic", nic]
        // A TCG guest has little entropy of its own; without this, early getrandom() callers wait.
        args += ["-device", "virtio-rng-pci"]
        args += ["-chardev", "socket,id=con,path=\(escape(paths.consoleSocket)),server=on,wait=off"]
        args += ["-serial", "chardev:con"]
        args += ["-chardev", "socket,id=dbg,path=\(escape(paths.shellSocket)),server=on,wait=off"]
        args += ["-serial", "chardev:dbg"]
        args += ["-qmp", "unix:\(escape(paths.qmpSocket)),server=on,wait=off"]
        for value in config.oemStrings {
            args += ["-smbios", "type=11,value=\(escape(value))"]
        }
        if paused { args.append("-S") }
        return args + config.extraArguments
    }

    /// qemu's option syntax separates keys with commas; a literal comma is written twice.
    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: ",", with: ",,")
    }
}
