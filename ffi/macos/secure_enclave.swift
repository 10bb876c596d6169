// Secure Enclave signing keys through CryptoKit (design/mlx-c.md §8, docs/trust.md): the key is created inside the enclave
// and never leaves it; what we hold is its device-bound dataRepresentation blob, which needs no entitlement (unlike a
// persistent Keychain key), so it works for an unsigned command-line binary.
import CryptoKit
import Foundation

@_cdecl("dbc_se_available")
public func dbc_se_available() -> Int32 {
  return SecureEnclave.isAvailable ? 1 : 0
}

@_cdecl("dbc_se_create")
public func dbc_se_create(_ blobOut: UnsafeMutablePointer<UInt8>?, _ capacity: Int32, _ length: UnsafeMutablePointer<Int32>?) -> Int32 {
  guard SecureEnclave.isAvailable else { return fail(-3, "this Mac has no Secure Enclave (SecureEnclave.isAvailable is false)") }
  do {
    let key = try SecureEnclave.P256.Signing.PrivateKey()
    return copyOut(key.dataRepresentation, blobOut, capacity, length)
  } catch {
    return fail(-4, "creating a Secure Enclave key failed: \(error)")
  }
}

/// Reopens a key from its blob; fails when the blob was made by another Mac's enclave or is damaged.
private func reopen(_ blob: UnsafePointer<UInt8>?, _ blobLength: Int32) throws -> SecureEnclave.P256.Signing.PrivateKey {
  guard let data = bytes(blob, Int(blobLength)), !data.isEmpty else { throw BridgeError.message("empty key blob") }
  return try SecureEnclave.P256.Signing.PrivateKey(dataRepresentation: data)
}

enum BridgeError: Error {
  case message(String)
}

@_cdecl("dbc_se_public_key")
public func dbc_se_public_key(_ blob: UnsafePointer<UInt8>?, _ blobLength: Int32, _ x963Out: UnsafeMutablePointer<UInt8>?) -> Int32 {
  guard let x963Out = x963Out else { return fail(-1, "output pointer is null") }
  do {
    let x963 = try reopen(blob, blobLength).publicKey.x963Representation
    guard x963.count == 65 else { return fail(-5, "unexpected public key size \(x963.count)") }
    x963.copyBytes(to: x963Out, count: 65)
    return 0
  } catch {
    return fail(-6, "this key blob does not open in this Mac's Secure Enclave: \(error)")
  }
}

@_cdecl("dbc_se_sign")
public func dbc_se_sign(
  _ blob: UnsafePointer<UInt8>?, _ blobLength: Int32, _ message: UnsafePointer<UInt8>?, _ messageLength: Int64,
  _ signatureOut: UnsafeMutablePointer<UInt8>?
) -> Int32 {
  guard let signatureOut = signatureOut else { return fail(-1, "output pointer is null") }
  guard let data = bytes(message, Int(messageLength)) else { return fail(-1, "message pointer is null") }
  do {
    // signature(for:) hashes with SHA-256 itself: the same ECDSA-P256-SHA256 the software identity produces.
    let raw = try reopen(blob, blobLength).signature(for: data).rawRepresentation
    guard raw.count == 64 else { return fail(-5, "unexpected signature size \(raw.count)") }
    raw.copyBytes(to: signatureOut, count: 64)
    return 0
  } catch {
    return fail(-7, "Secure Enclave signing failed: \(error)")
  }
}
