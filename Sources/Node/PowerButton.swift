import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// Waits for a press of the power button on an evdev device (linux/input.h: struct input_event,
/// EV_KEY, KEY_POWER) and powers the node off cleanly. The image has no logind, which is what
/// normally does this.
public struct PowerButton {
    static let eventSize = 24  // struct input_event on 64-bit: timeval (16) + type, code (2+2) + value (4)
    static let evKey: UInt16 = 0x01
    static let keyPower: UInt16 = 116

    let device: String
    let logger: Logger

    public init(device: String, logger: Logger) {
        self.device = device
        self.logger = logger
    }

    /// Whether one input_event record is a press of KEY_POWER.
    public static func isPowerPress(_ event: [UInt8]) -> Bool {
        guard event.count == eventSize else { return false }
        let type = UInt16(event[16]) | UInt16(event[17]) << 8
        let code = UInt16(event[18]) | UInt16(event[19]) << 8
        let value = Int32(
            bitPattern: UInt32(event[20]) | UInt32(event[21]) << 8 | UInt32(event[22]) << 16 | UInt32(event[23]) << 24)
        return type == evKey && code == keyPower && value == 1
    }

    public func run() throws -> Never {
        let input = try FileDescriptor(path: device, flags: O_RDONLY)
        logger.info("waiting for the power button", [("device", device)])
        while true {
            var event = [UInt8](repeating: 0, count: Self.eventSize)
            let count = try event.withUnsafeMutableBytes { buffer in
                try Syscall.call("read", device) { read(input.fd, buffer.baseAddress, Self.eventSize) }
            }
            if count == 0 { throw HCOSError(.io, "\(device) closed") }
            if Self.isPowerPress(event) {
                logger.info("power button pressed: powering off")
                try Command("systemctl", ["poweroff"]).run()
            }
        }
    }
}
