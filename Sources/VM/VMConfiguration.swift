import Foundation
import HCOSCore

/// How qemu executes guest code. KVM is used only when it is known to work (see `Accelerator.detect`).
public enum Accelerator: String, Sendable, CaseIterable {
    case tcg
    case kvm
}

/// The UEFI firmware pair: read-only code and a template for the per-VM variable store.
public struct UEFIFirmware: Sendable, Equatable {
    public var code: String
    public var variables: String

    public init(code: String, variables: String) {
        self.code = code
        self.variables = variables
    }

    /// Debian's `ovmf` package (4 MiB flash layout, no Secure Boot enforcement).
    public static let debian = UEFIFirmware(
        code: "/usr/share/OVMF/OVMF_CODE_4M.fd", variables: "/usr/share/OVMF/OVMF_VARS_4M.fd")
}

/// A host TCP port forwarded to a guest TCP port through qemu user networking.
public struct PortForward: Sendable, Equatable {
    public var host: UInt16
    public var guest: UInt16

    public init(host: UInt16, guest: UInt16) {
        self.host = host
        self.guest = guest
    }
}

/// Everything needed to boot one hcos disk in qemu.
public struct VMConfiguration: Sendable {
    public enum DiskFormat: String, Sendable {
        case raw
        case qcow2
    }

    /// The disk the VM boots from and writes to (use `DiskImage.prepareVMDisk` to boot a copy).
    public var diskPath: String
    public var diskFormat: DiskFormat = .raw
    public var memoryMiB: Int = 1024
    public var cpus: Int = 1
    /// OVMF instead of SeaBIOS.
    public var uefi: Bool = false
    public var firmware: UEFIFirmware = .debian
    /// Every byte of the system console (serial0) is appended here.
    public var serialLogPath: String?
    /// nil: `HCOS_ACCEL` if set, else KVM when usable, else TCG.
    public var accelerator: Accelerator?
    /// Asks the image for its root shell on serial1: `VirtualMachine.start` adds the kernel
    /// parameter `hcos.debug-shell` to the disk's GRUB environment (`hcos_cmdline`), so pass it
    /// a copy of an image (`DiskImage.prepareVMDisk`), never the build output itself.
    public var debugShell: Bool = false
    /// Further SMBIOS type 11 OEM strings for the guest.
    public var oemStrings: [String] = []
    public var portForwards: [PortForward] = []
    /// Appended verbatim after the generated arguments.
    public var extraArguments: [String] = []
    /// Where sockets, the UEFI variable store and qemu's own log go. nil: a fresh directory under
    /// /tmp, removed when the VM stops. Unix socket paths are limited to 107 bytes, so keep it short.
    public var workDirectory: String?
    public var qemuBinary: String = "qemu-system-x86_64"

    public init(diskPath: String) {
        self.diskPath = diskPath
    }
}

/// The files of one VM inside its work directory.
public struct VMPaths: Sendable, Equatable {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    public var consoleSocket: String { directory + "/console.sock" }
    public var shellSocket: String { directory + "/shell.sock" }
    public var qmpSocket: String { directory + "/qmp.sock" }
    public var uefiVariables: String { directory + "/OVMF_VARS.fd" }
    public var qemuLog: String { directory + "/qemu.log" }
}
