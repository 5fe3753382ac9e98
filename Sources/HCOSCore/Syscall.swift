import CShim
#if canImport(Glibc)
    import Glibc
#endif

/// Every system call in the package goes through here: one place retries EINTR and turns a
/// failure into a `SystemError` that names the call and its subject.
public enum Syscall {
    @discardableResult
    public static func call<T: BinaryInteger>(
        _ name: String, _ subject: String? = nil, _ body: () -> T
    ) throws(SystemError) -> T {
        while true {
            let result = body()
            if result >= 0 { return result }
            let err = Glibc.errno
            if err == EINTR { continue }
            throw SystemError(name, errno: err, subject: subject)
        }
    }

    /// Syncs the file systems and restarts the machine at once (the last resort when systemd
    /// cannot reboot). Returns only if the kernel refused (not root).
    public static func rebootNow() throws(SystemError) {
        sync()
        try call("reboot") { hcos_reboot_now() }
    }
}
