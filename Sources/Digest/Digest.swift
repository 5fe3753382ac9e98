import CCrypto
import FoundationEssentials
import HCOSCore

#if canImport(Glibc)
    import Glibc
#endif

/// SHA-256 (FIPS 180-4) computed by OpenSSL's libcrypto through the EVP digest interface.
///
/// Incremental: `update` any number of times, then `finalize` once. The type is non-copyable
/// because it owns an `EVP_MD_CTX`; copying it would share (and double-free) that context.
public struct SHA256: ~Copyable {
    /// Length of a digest in bytes.
    public static let digestLength = 32
    /// Read size for file hashing: large enough to be fast, small enough to keep memory bounded.
    public static let chunkSize = 1 << 20

    private let context: OpaquePointer

    public init() throws {
        guard let context = EVP_MD_CTX_new() else {
            throw HCOSError(.io, "libcrypto: EVP_MD_CTX_new failed")
        }
        guard EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else {
            EVP_MD_CTX_free(context)
            throw HCOSError(.io, "libcrypto: EVP_DigestInit_ex(sha256) failed")
        }
        self.context = context
    }

    deinit { EVP_MD_CTX_free(context) }

    public mutating func update(_ bytes: [UInt8]) throws {
        try update(bytes[...])
    }

    public mutating func update(_ bytes: ArraySlice<UInt8>) throws {
        guard !bytes.isEmpty else { return }
        let status = bytes.withUnsafeBytes { buffer in
            EVP_DigestUpdate(context, buffer.baseAddress, buffer.count)
        }
        guard status == 1 else { throw HCOSError(.io, "libcrypto: EVP_DigestUpdate failed") }
    }

    /// The 32-byte digest of everything passed to `update`. Consumes the hasher.
    public consuming func finalize() throws -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let status = digest.withUnsafeMutableBufferPointer { buffer in
            EVP_DigestFinal_ex(context, buffer.baseAddress, &length)
        }
        guard status == 1, Int(length) == SHA256.digestLength else {
            throw HCOSError(.io, "libcrypto: EVP_DigestFinal_ex failed")
        }
        return Array(digest[0..<SHA256.digestLength])
    }

    /// The digest as lowercase hex, the form `sha256sum` prints. Consumes the hasher.
    public consuming func finalizeHex() throws -> String {
        SHA256.hex(try finalize())
    }

    /// Lowercase hexadecimal rendering of a digest.
    public static func hex(_ digest: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(digest.count * 2)
        for byte in digest {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The digest of `bytes` in one call.
    public static func hash(_ bytes: [UInt8]) throws -> [UInt8] {
        var hasher = try SHA256()
        try hasher.update(bytes)
        return try hasher.finalize()
    }

    /// The digest of a whole file (or block device), read to end of file in `chunkSize` pieces
    /// so memory stays bounded whatever the size.
    public static func hash(file path: String) throws -> [UInt8] {
        let file = try FileDescriptor(path: path, flags: O_RDONLY)
        var hasher = try SHA256()
        var offset: UInt64 = 0
        while true {
            let chunk = try file.read(at: offset, count: chunkSize)
            if chunk.isEmpty { break }
            try hasher.update(chunk)
            offset += UInt64(chunk.count)
        }
        return try hasher.finalize()
    }

    /// The digest of bytes `range` of a file, e.g. one partition's extent inside a disk image.
    /// Throws `.io` if the file ends before the range does: a short region must not hash as if
    /// it were complete.
    public static func hash(file path: String, range: Range<UInt64>) throws -> [UInt8] {
        let file = try FileDescriptor(path: path, flags: O_RDONLY)
        var hasher = try SHA256()
        var offset = range.lowerBound
        while offset < range.upperBound {
            let count = Int(min(UInt64(chunkSize), range.upperBound - offset))
            let chunk = try file.read(at: offset, count: count)
            guard !chunk.isEmpty else {
                throw HCOSError(
                    .io,
                    "\(path) ends at byte \(offset), before the end of range \(range.lowerBound)..<\(range.upperBound)"
                )
            }
            try hasher.update(chunk)
            offset += UInt64(chunk.count)
        }
        return try hasher.finalize()
    }
}
