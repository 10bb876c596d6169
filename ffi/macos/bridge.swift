// The shared half of the macOS bridge (ffi/macos/dbc_macos.h): the ABI version, the last-error string and the copy-out
// helper the Secure Enclave and Keychain exports use. Built by scripts/build-macos-bridge.sh; called from JS over bun:ffi.
import Foundation

// Bump with every signature change in dbc_macos.h (src/trust/macos-bridge.ts MACOS_BRIDGE_ABI must match).
let bridgeAbiVersion: Int32 = 1

// One last-error string, as in the C shim: bun:ffi calls come from one JS thread at a time.
private var lastErrorBuffer: UnsafeMutablePointer<CChar>? = nil

@_cdecl("dbc_mac_abi_version")
public func dbc_mac_abi_version() -> Int32 {
  return bridgeAbiVersion
}

@_cdecl("dbc_mac_last_error")
public func dbc_mac_last_error() -> UnsafePointer<CChar>? {
  return UnsafePointer(lastErrorBuffer)
}

/// Records why a call failed and returns its (negative) code.
func fail(_ code: Int32, _ message: String) -> Int32 {
  free(lastErrorBuffer)
  lastErrorBuffer = strdup(message)
  return code
}

/// Writes `data` to `out` when it fits; `length` always receives the size, so the caller can retry with a larger buffer (-2).
func copyOut(_ data: Data, _ out: UnsafeMutablePointer<UInt8>?, _ capacity: Int32, _ length: UnsafeMutablePointer<Int32>?) -> Int32 {
  guard let length = length else { return fail(-1, "length pointer is null") }
  length.pointee = Int32(data.count)
  if data.count > Int(capacity) { return fail(-2, "buffer of \(capacity) bytes is too small for \(data.count)") }
  if data.count > 0 {
    guard let out = out else { return fail(-1, "output pointer is null") }
    data.copyBytes(to: out, count: data.count)
  }
  return 0
}

/// Bytes from a (pointer, length) pair; a zero length may come with a null pointer.
func bytes(_ pointer: UnsafePointer<UInt8>?, _ count: Int) -> Data? {
  if count == 0 { return Data() }
  guard let pointer = pointer, count > 0 else { return nil }
  return Data(bytes: pointer, count: count)
}
