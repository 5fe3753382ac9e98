import Foundation
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

extension Accelerator {
    /// `HCOS_ACCEL=tcg|kvm` when set, else KVM if usable, else TCG.
    public static func detect(environment: [String: String] = ProcessInfo.processInfo.environment)
        throws
        -> Accelerator
    {
        if let value = environment["HCOS_ACCEL"], !value.isEmpty {
            guard let choice = Accelerator(rawValue: value.lowercased()) else {
                throw HCOSError(.invalidConfig, "HCOS_ACCEL must be 'tcg' or 'kvm', not '\(value)'")
            }
            return choice
        }
        return kvmUsable() ? .kvm : .tcg
    }

    /// KVM counts as usable only on hardware virtualization (kvm_intel / kvm_amd loaded) with a
    /// /dev/kvm that opens read-write, speaks API version 12 and creates a VM. Nested
    /// software-paging KVM (kvm_pvm, as on the sandboxed build hosts) passes the ioctls but cannot
    /// run a full Linux guest reliably, so it is not used unless HCOS_ACCEL=kvm asks for it.
    public static func kvmUsable() -> Bool {
        let hardware = ["kvm_intel", "kvm_amd"].contains { FileSystem.isDirectory("/sys/module/\($0)") }
        guard hardware else { return false }
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        // KVM_GET_API_VERSION = _IO(0xAE, 0x00), KVM_CREATE_VM = _IO(0xAE, 0x01).
        guard ioctl(fd, 0xAE00, 0) == 12 else { return false }
        let vm = ioctl(fd, 0xAE01, 0)
        guard vm >= 0 else { return false }
        close(vm)
        return true
    }
}
