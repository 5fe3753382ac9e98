import HCOSCore

/// A 128-bit GUID. `bytes` are in the canonical (string) order; GPT stores the first three
/// fields little-endian ("mixed-endian", UEFI spec 2.10 appendix A), see `gptBytes`.
public struct GUID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// From 16 bytes in canonical order.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` (case-insensitive).
    public init?(_ text: String) {
        let groups = text.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.map(\.count) == [8, 4, 4, 4, 12] else { return nil }
        let hex = Array(groups.joined().utf8)
        var result: [UInt8] = []
        var index = 0
        while index < hex.count {
            guard let high = GUID.nibble(hex[index]), let low = GUID.nibble(hex[index + 1]) else {
                return nil
            }
            result.append(high << 4 | low)
            index += 2
        }
        self.bytes = result
    }

    /// Decodes the 16-byte mixed-endian form found in GPT headers and entries.
    public init(gptBytes raw: ArraySlice<UInt8>) {
        let b = Array(raw)
        self.bytes = [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]] + b[8..<16]
    }

    /// The 16-byte mixed-endian encoding GPT uses on disk.
    public var gptBytes: [UInt8] {
        let b = bytes
        return [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]] + b[8..<16]
    }

    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    public var description: String {
        let digits = Array("0123456789ABCDEF")
        var text = ""
        for (index, byte) in bytes.enumerated() {
            if [4, 6, 8, 10].contains(index) { text.append("-") }
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0xF)])
        }
        return text
    }

    public static let zero = GUID(rawBytes: [UInt8](repeating: 0, count: 16))
    public static let biosBoot = GUID(constant: "21686148-6449-6E6F-744E-656564454649")
    public static let efiSystem = GUID(constant: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
    /// The Discoverable Partitions Specification's "Root Partition (x86-64)"; the architecture
    /// name keeps its underscore.
    // swift-format-ignore: AlwaysUseLowerCamelCase
    public static let linuxRootX86_64 = GUID(constant: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")
    public static let linuxFilesystem = GUID(constant: "0FC63DAF-8483-4772-8E79-3D69D8477DE4")

    /// A version-4-shaped GUID that depends only on `seed`, so that image builds are
    /// reproducible. Two independent 64-bit FNV-1a hashes, each finished with the splitmix64
    /// mixer so that similar seeds give unrelated GUIDs. Not cryptographic.
    public static func derived(from seed: String) -> GUID {
        var high: UInt64 = 0xcbf2_9ce4_8422_2325
        var low: UInt64 = 0x6c62_272e_07bb_0142
        for byte in seed.utf8 {
            high = (high ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
            low = (low ^ UInt64(byte ^ 0x5A)) &* 0x0000_0100_0000_01B3
        }
        return GUID(version4From: mix(high ^ UInt64(seed.utf8.count)), mix(low &+ high))
    }

    /// A random version-4 GUID (getrandom through the standard library's system generator).
    public static func random() -> GUID {
        var generator = SystemRandomNumberGenerator()
        return GUID(version4From: generator.next(), generator.next())
    }

    private init(version4From high: UInt64, _ low: UInt64) {
        var b = [UInt8](repeating: 0, count: 16)
        for index in 0..<8 {
            b[index] = UInt8(truncatingIfNeeded: high >> (56 - 8 * index))
            b[8 + index] = UInt8(truncatingIfNeeded: low >> (56 - 8 * index))
        }
        b[6] = b[6] & 0x0F | 0x40  // version 4
        b[8] = b[8] & 0x3F | 0x80  // RFC 4122 variant
        self.bytes = b
    }

    private init(rawBytes: [UInt8]) { self.bytes = rawBytes }

    /// For the literals above, which are checked by the unit tests.
    private init(constant: String) {
        self.bytes = GUID(constant)?.bytes ?? [UInt8](repeating: 0, count: 16)
    }

    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
