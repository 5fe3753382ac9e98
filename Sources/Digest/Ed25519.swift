import CCrypto
import FoundationEssentials
import HCOSCore

/// Ed25519 signatures (RFC 8032) over libcrypto: keys are the raw 32-byte forms. Update bundles
/// are signed with the private key on the build host; nodes hold only public keys.
public enum Ed25519 {
    public static let keyLength = 32
    public static let signatureLength = 64

    public struct KeyPair: Sendable {
        public let privateKey: [UInt8]
        public let publicKey: [UInt8]
    }

    public static func generate() throws -> KeyPair {
        var seed = [UInt8](repeating: 0, count: keyLength)
        guard RAND_bytes(&seed, Int32(keyLength)) == 1 else { throw HCOSError(.io, "RAND_bytes failed") }
        return KeyPair(privateKey: seed, publicKey: try publicKey(fromPrivate: seed))
    }

    public static func publicKey(fromPrivate key: [UInt8]) throws -> [UInt8] {
        let pkey = try privateKey(key)
        defer { EVP_PKEY_free(pkey) }
        var length = keyLength
        var result = [UInt8](repeating: 0, count: keyLength)
        guard EVP_PKEY_get_raw_public_key(pkey, &result, &length) == 1, length == keyLength else {
            throw HCOSError(.corrupt, "cannot derive the Ed25519 public key")
        }
        return result
    }

    public static func sign(_ message: [UInt8], privateKey key: [UInt8]) throws -> [UInt8] {
        let pkey = try privateKey(key)
        defer { EVP_PKEY_free(pkey) }
        guard let context = EVP_MD_CTX_new() else { throw HCOSError(.io, "EVP_MD_CTX_new failed") }
        defer { EVP_MD_CTX_free(context) }
        var signature = [UInt8](repeating: 0, count: signatureLength)
        var length = signatureLength
        guard EVP_DigestSignInit(context, nil, nil, nil, pkey) == 1,
            EVP_DigestSign(context, &signature, &length, message, message.count) == 1, length == signatureLength
        else { throw HCOSError(.io, "Ed25519 signing failed") }
        return signature
    }

    /// Whether `signature` is a valid signature of `message` by `publicKey` (false for any
    /// malformed key or signature).
    public static func verify(_ signature: [UInt8], of message: [UInt8], publicKey key: [UInt8]) -> Bool {
        guard key.count == keyLength, signature.count == signatureLength,
            let pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, key, key.count)
        else { return false }
        defer { EVP_PKEY_free(pkey) }
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        return EVP_DigestVerifyInit(context, nil, nil, nil, pkey) == 1
            && EVP_DigestVerify(context, signature, signature.count, message, message.count) == 1
    }

    private static func privateKey(_ key: [UInt8]) throws -> OpaquePointer {
        guard key.count == keyLength, let pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, key, key.count)
        else { throw HCOSError(.invalidArgument, "an Ed25519 private key is \(keyLength) bytes") }
        return pkey
    }
}
