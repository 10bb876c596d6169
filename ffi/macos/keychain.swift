// Keychain generic passwords for the pin store (design/mlx-c.md §8). The file-based login keychain only: the
// data-protection keychain (kSecUseDataProtectionKeychain) needs entitlements an unsigned CLI does not have (-34018).
import Foundation
import Security

private func query(_ service: UnsafePointer<CChar>?, _ account: UnsafePointer<CChar>?) -> [String: Any]? {
  guard let service = service else { return nil }
  var q: [String: Any] = [kSecClass as String: kSecClassGenericPassword, kSecAttrService as String: String(cString: service)]
  if let account = account { q[kSecAttrAccount as String] = String(cString: account) }
  return q
}

private func failStatus(_ status: OSStatus, _ what: String) -> Int32 {
  let text = (SecCopyErrorMessageString(status, nil) as String?) ?? "unknown error"
  return fail(-10, "\(what): \(text) (OSStatus \(status))")
}

@_cdecl("dbc_kc_set")
public func dbc_kc_set(_ service: UnsafePointer<CChar>?, _ account: UnsafePointer<CChar>?, _ data: UnsafePointer<UInt8>?, _ length: Int32) -> Int32 {
  guard account != nil, let match = query(service, account) else { return fail(-1, "service or account is null") }
  guard let value = bytes(data, Int(length)) else { return fail(-1, "data pointer is null") }
  var add = match
  add[kSecValueData as String] = value
  var status = SecItemAdd(add as CFDictionary, nil)
  if status == errSecDuplicateItem {
    status = SecItemUpdate(match as CFDictionary, [kSecValueData as String: value] as CFDictionary)
  }
  return status == errSecSuccess ? 0 : failStatus(status, "SecItemAdd/SecItemUpdate")
}

@_cdecl("dbc_kc_get")
public func dbc_kc_get(
  _ service: UnsafePointer<CChar>?, _ account: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<UInt8>?, _ capacity: Int32,
  _ length: UnsafeMutablePointer<Int32>?
) -> Int32 {
  guard account != nil, var match = query(service, account) else { return fail(-1, "service or account is null") }
  match[kSecReturnData as String] = true
  match[kSecMatchLimit as String] = kSecMatchLimitOne
  var result: CFTypeRef?
  let status = SecItemCopyMatching(match as CFDictionary, &result)
  if status == errSecItemNotFound { return 1 }
  guard status == errSecSuccess, let data = result as? Data else { return failStatus(status, "SecItemCopyMatching") }
  return copyOut(data, out, capacity, length)
}

@_cdecl("dbc_kc_delete")
public func dbc_kc_delete(_ service: UnsafePointer<CChar>?, _ account: UnsafePointer<CChar>?) -> Int32 {
  guard account != nil, let match = query(service, account) else { return fail(-1, "service or account is null") }
  let status = SecItemDelete(match as CFDictionary)
  if status == errSecItemNotFound { return 1 }
  return status == errSecSuccess ? 0 : failStatus(status, "SecItemDelete")
}

@_cdecl("dbc_kc_list")
public func dbc_kc_list(_ service: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<UInt8>?, _ capacity: Int32, _ length: UnsafeMutablePointer<Int32>?) -> Int32 {
  guard var match = query(service, nil) else { return fail(-1, "service is null") }
  match[kSecReturnAttributes as String] = true
  match[kSecMatchLimit as String] = kSecMatchLimitAll
  var result: CFTypeRef?
  let status = SecItemCopyMatching(match as CFDictionary, &result)
  var accounts: [String] = []
  if status == errSecSuccess {
    guard let items = result as? [[String: Any]] else { return fail(-10, "SecItemCopyMatching returned no attribute list") }
    accounts = items.compactMap { $0[kSecAttrAccount as String] as? String }
  } else if status != errSecItemNotFound {
    return failStatus(status, "SecItemCopyMatching")
  }
  return copyOut(Data(accounts.joined(separator: "\n").utf8), out, capacity, length)
}
