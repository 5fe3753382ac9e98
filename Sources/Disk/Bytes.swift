import HCOSCore

/// Little-endian field access for on-disk structures (GPT, MBR, GRUB boot sectors).
extension Array where Element == UInt8 {
    func readLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            value |= T(truncatingIfNeeded: self[offset + index]) << (8 * index)
        }
        return value
    }

    mutating func writeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for index in 0..<MemoryLayout<T>.size {
            self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }

    /// The array padded with zeros (or cut) to exactly `count` bytes.
    func padded(to count: Int) -> [UInt8] {
        if self.count >= count { return Array(self[0..<count]) }
        return self + [UInt8](repeating: 0, count: count - self.count)
    }
}

extension UInt64 {
    func roundedDown(to alignment: UInt64) -> UInt64 { self / alignment * alignment }
    func roundedUp(to alignment: UInt64) -> UInt64 { (self + alignment - 1) / alignment * alignment }
}
