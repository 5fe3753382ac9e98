/// Sizes as users write them: `1024`, `512K`, `128M`, `2G`, `2GiB`, `4 GiB` (binary units).
public enum ByteSize {
    public static func parse(_ text: String) -> UInt64? {
        var s = text.trimmingCharacters(in: .whitespaces).uppercased()
        for suffix in ["IB", "B"] where s.hasSuffix(suffix) && s.count > suffix.count {
            s.removeLast(suffix.count)
            break
        }
        s = s.trimmingCharacters(in: .whitespaces)
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var multiplier: UInt64 = 1
        if let last = s.last, let unit = units[last] {
            multiplier = unit
            s.removeLast()
        }
        guard let value = UInt64(s.trimmingCharacters(in: .whitespaces)) else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    /// `1536 MiB`, `1.5 GiB`-style rendering for reports.
    public static func format(_ bytes: UInt64) -> String {
        let mib = Double(bytes) / 1_048_576
        if mib >= 1024 { return String(format1: mib / 1024) + " GiB" }
        if mib >= 1 { return String(format1: mib) + " MiB" }
        return "\(bytes) B"
    }
}

extension String {
    /// One decimal place, without Foundation's locale-aware formatting.
    public init(format1 value: Double) {
        let tenths = Int((value * 10).rounded())
        self = "\(tenths / 10).\(abs(tenths % 10))"
    }

    func trimmingCharacters(in set: CharacterSetLite) -> String {
        var view = Substring(self)
        while let first = view.first, set.contains(first) { view.removeFirst() }
        while let last = view.last, set.contains(last) { view.removeLast() }
        return String(view)
    }
}

/// FoundationEssentials has no CharacterSet; the trimming we need is whitespace only.
public struct CharacterSetLite: Sendable {
    let contains: @Sendable (Character) -> Bool
    func contains(_ c: Character) -> Bool { contains(c) }
    public static let whitespaces = CharacterSetLite { $0 == " " || $0 == "\t" }
    public static let whitespacesAndNewlines = CharacterSetLite { $0.isWhitespace }
}

extension String {
    public func trimmed() -> String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
