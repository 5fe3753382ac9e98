/// The character classes and small grammars of HTTP/1.1 (RFC 9110 §5.6, RFC 9112) and of the
/// origin-form request-target (RFC 3986 §3.3, §3.4).
enum HTTPSyntax {
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let space: UInt8 = 0x20
    static let tab: UInt8 = 0x09
    static let colon: UInt8 = 0x3A

    /// tchar: "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" /
    /// "~" / DIGIT / ALPHA.
    static func isTokenChar(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }
    }

    static func isToken(_ bytes: some Collection<UInt8>) -> Bool {
        !bytes.isEmpty && bytes.allSatisfy(isTokenChar)
    }

    /// field-vchar / SP / HTAB: everything but controls (NUL, CR, LF, ...) and DEL.
    static func isFieldValueChar(_ byte: UInt8) -> Bool {
        byte == tab || (byte >= 0x20 && byte != 0x7F)
    }

    /// The characters of an origin-form target: pchar, "/", "?" and "%" (escapes checked apart).
    static func isTargetChar(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            Array("-._~!$&'()*+,;=:@/?%".utf8).contains(byte)
        }
    }

    static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// Strips optional whitespace (SP / HTAB) from both ends.
    static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var slice = bytes
        while let first = slice.first, first == space || first == tab { slice.removeFirst() }
        while let last = slice.last, last == space || last == tab { slice.removeLast() }
        return slice
    }

    /// Field values are octets; UTF-8 when they are, otherwise ISO-8859-1 (obs-text), so no byte
    /// is lost or replaced.
    static func text(_ bytes: some Collection<UInt8>) -> String {
        if let string = String(validating: bytes, as: UTF8.self) { return string }
        return String(String.UnicodeScalarView(bytes.map { Unicode.Scalar($0) }))
    }

    static func equalsIgnoringCase(_ a: String, _ b: String) -> Bool {
        a.utf8.count == b.utf8.count && zip(a.utf8, b.utf8).allSatisfy { lower($0) == lower($1) }
    }

    static func lower(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 0x20 : byte
    }

    static func lowercased(_ string: String) -> String {
        String(decoding: string.utf8.map(lower), as: UTF8.self)
    }

    /// The elements of a comma-separated list field (RFC 9110 §5.6.1), trimmed, empty ones dropped.
    static func listElements(_ value: String) -> [String] {
        value.split(separator: ",", omittingEmptySubsequences: false)
            .map { String(decoding: trimmed(ArraySlice($0.utf8)), as: UTF8.self) }
            .filter { !$0.isEmpty }
    }

    /// Percent-decodes (RFC 3986 §2.1), `+` as a space when `plusIsSpace` (HTML form query
    /// convention). Nil for a broken escape, an escaped NUL, or bytes that are not UTF-8.
    static func percentDecoded(_ bytes: some Collection<UInt8>, plusIsSpace: Bool) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var iterator = bytes.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue)
                else { return nil }
                let decoded = UInt8(high << 4 | low)
                guard decoded != 0 else { return nil }
                out.append(decoded)
            case UInt8(ascii: "+") where plusIsSpace:
                out.append(space)
            default:
                out.append(byte)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    /// A field line `name: value` (RFC 9112 §5): no whitespace before the colon, no obs-fold, a
    /// token name, a value of field characters only.
    static func field(_ line: ArraySlice<UInt8>) throws(MessageError) -> (name: String, value: String) {
        guard let first = line.first, first != space, first != tab else {
            throw .invalid(400, "bad_request", "obsolete line folding (a header line starting with whitespace)")
        }
        guard let colonIndex = line.firstIndex(of: colon) else {
            throw .invalid(400, "bad_request", "header line without a colon")
        }
        let name = line[line.startIndex..<colonIndex]
        guard isToken(name) else {
            throw .invalid(400, "bad_request", "invalid header name \(quoted(name))")
        }
        let value = trimmed(line[(colonIndex + 1)...])
        guard value.allSatisfy(isFieldValueChar) else {
            throw .invalid(400, "bad_request", "control character in the value of header \(quoted(name))")
        }
        return (String(decoding: name, as: UTF8.self), text(value))
    }

    /// Splits a head (without its final empty line) at CRLF; a CR or LF anywhere else is an error.
    static func lines(_ head: ArraySlice<UInt8>) throws(MessageError) -> [ArraySlice<UInt8>] {
        var lines: [ArraySlice<UInt8>] = []
        var start = head.startIndex
        var index = head.startIndex
        while index < head.endIndex {
            let byte = head[index]
            if byte == cr {
                guard index + 1 < head.endIndex, head[index + 1] == lf else {
                    throw .invalid(400, "bad_request", "bare CR in the header section")
                }
                lines.append(head[start..<index])
                index += 2
                start = index
                continue
            }
            if byte == lf { throw .invalid(400, "bad_request", "bare LF in the header section") }
            index += 1
        }
        lines.append(head[start..<head.endIndex])
        return lines
    }

    /// For messages: printable, bounded.
    static func quoted(_ bytes: some Collection<UInt8>) -> String {
        var out = "\""
        for byte in bytes.prefix(64) {
            if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\"") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "\\x" + String(byte, radix: 16, uppercase: true).leftPadded(2)
            }
        }
        return out + (bytes.count > 64 ? "...\"" : "\"")
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
