import HCOSCore

/// GRUB's environment block (grub-core/lib/envblk.c, the format of `grubenv` files written by
/// `save_env` and grub-editenv): exactly 1024 bytes, the line "# GRUB Environment Block",
/// then `name=value` lines, then '#' padding. In values, '\' and newline are escaped with a
/// preceding '\'.
///
/// hcos additionally keeps every variable line within the first 512 bytes, so that rewriting the
/// block changes only its first sector and a power cut cannot tear a variable across sectors.
public struct GrubEnvBlock: Equatable, Sendable {
    public static let size = 1024
    public static let contentLimit = 512
    public static let header = Array("# GRUB Environment Block\n".utf8)

    public struct Variable: Equatable, Sendable {
        public var name: String
        public var value: String

        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// In file order; names are unique.
    public private(set) var variables: [Variable] = []

    public init() {}

    public init(_ pairs: KeyValuePairs<String, String>) {
        for (name, value) in pairs { self[name] = value }
    }

    /// Getting returns the value; setting replaces it in place or appends, nil deletes.
    public subscript(name: String) -> String? {
        get { variables.first { $0.name == name }?.value }
        set {
            let index = variables.firstIndex { $0.name == name }
            switch (index, newValue) {
            case (let index?, let value?): variables[index].value = value
            case (let index?, nil): variables.remove(at: index)
            case (nil, let value?): variables.append(Variable(name, value))
            case (nil, nil): break
            }
        }
    }

    /// Parses a block the way GRUB's `grub_envblk_iterate` does (lines starting with '#' are
    /// comments). Strict about what GRUB would silently stop at: wrong size, missing header, an
    /// unterminated line, or a line without '='.
    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count == GrubEnvBlock.size else {
            throw HCOSError(
                .corrupt, "GRUB environment block is \(bytes.count) bytes, not \(GrubEnvBlock.size)")
        }
        guard bytes.starts(with: GrubEnvBlock.header) else {
            throw HCOSError(
                .corrupt, "GRUB environment block does not start with '# GRUB Environment Block'")
        }
        var p = GrubEnvBlock.header.count
        let end = bytes.count
        while p < end {
            if bytes[p] == UInt8(ascii: "#") {
                p = GrubEnvBlock.nextLine(bytes, from: p)
                continue
            }
            guard let equals = bytes[p..<end].firstIndex(of: UInt8(ascii: "=")) else {
                throw HCOSError(.corrupt, "GRUB environment block: line at byte \(p) has no '='")
            }
            let nameBytes = bytes[p..<equals]
            guard !nameBytes.contains(UInt8(ascii: "\n")) else {
                throw HCOSError(.corrupt, "GRUB environment block: line at byte \(p) has no '='")
            }
            var value: [UInt8] = []
            var q = equals + 1
            while q < end && bytes[q] != UInt8(ascii: "\n") {
                if bytes[q] == UInt8(ascii: "\\") { q += 1 }
                if q < end { value.append(bytes[q]) }
                q += 1
            }
            guard q < end else {
                throw HCOSError(
                    .corrupt, "GRUB environment block: variable at byte \(p) is not terminated by a newline")
            }
            let name = String(decoding: nameBytes, as: UTF8.self)
            if self[name] == nil {
                variables.append(Variable(name, String(decoding: value, as: UTF8.self)))
            }
            p = q + 1
        }
    }

    /// GRUB's find_next_line: skips escaped characters, stops after the newline.
    static func nextLine(_ bytes: [UInt8], from start: Int) -> Int {
        var p = start
        while p < bytes.count {
            if bytes[p] == UInt8(ascii: "\\") {
                p += 2
            } else if bytes[p] == UInt8(ascii: "\n") {
                break
            } else {
                p += 1
            }
        }
        return p + 1
    }

    public static func escape(_ value: String) -> [UInt8] {
        var out: [UInt8] = []
        for byte in value.utf8 {
            if byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "\n") { out.append(UInt8(ascii: "\\")) }
            out.append(byte)
        }
        return out
    }

    /// The header and the variable lines, without padding.
    public func content() throws -> [UInt8] {
        var out = GrubEnvBlock.header
        for variable in variables {
            let name = Array(variable.name.utf8)
            guard !name.isEmpty, !name.contains(UInt8(ascii: "=")), !name.contains(UInt8(ascii: "\n")),
                name.first != UInt8(ascii: "#")
            else {
                throw HCOSError(
                    .invalidArgument, "'\(variable.name)' is not a valid GRUB environment variable name")
            }
            out += name + [UInt8(ascii: "=")] + GrubEnvBlock.escape(variable.value) + [UInt8(ascii: "\n")]
        }
        return out
    }

    /// Exactly 1024 bytes; throws `.noSpace` if the variables do not fit in the first 512.
    public func serialized() throws -> [UInt8] {
        let content = try content()
        guard content.count <= GrubEnvBlock.contentLimit else {
            throw HCOSError(
                .noSpace,
                "GRUB environment variables take \(content.count) bytes; hcos keeps them within the first "
                    + "\(GrubEnvBlock.contentLimit) bytes (one sector) so that a write cannot be torn")
        }
        return content + [UInt8](repeating: UInt8(ascii: "#"), count: GrubEnvBlock.size - content.count)
    }
}
