/* dbc_macos.h — the C ABI of the macOS bridge (Secure Enclave keys, Keychain items): the Swift sources in ffi/macos/,
 * built into build/libdbc_macos.dylib by scripts/build-macos-bridge.sh, export these with @_cdecl. Mirrored, in order,
 * by MACOS_SYMBOLS in src/trust/macos-bridge.ts. test/tensor/native-abi.test.ts checks the table against this header,
 * test/trust/macos-bridge.test.ts the Swift exports too (both run on any OS). Same rules as ffi/dbc.h: no structs by
 * value, no callbacks; 0 = success, a negative code = failure with dbc_mac_last_error() saying why. Lengths are in
 * bytes. */
#ifndef DBC_MACOS_H
#define DBC_MACOS_H
#include <stdint.h>

/* Bumped whenever a signature below changes; the loader refuses any other value. */
int32_t dbc_mac_abi_version(void);
const char *dbc_mac_last_error(void);

/* Secure Enclave (CryptoKit SecureEnclave.P256.Signing; design/mlx-c.md §8). A key is carried as its device-bound
 * dataRepresentation blob, which only this Mac's enclave can use. */
int32_t dbc_se_available(void); /* 1 when SecureEnclave.isAvailable, else 0 */
/* Creates a key inside the enclave; writes its blob. -2 when capacity is too small (*length = bytes needed). */
int32_t dbc_se_create(uint8_t *blob_out, int32_t capacity, int32_t *length);
/* The key's public key as X9.63 (65 bytes: 04 || X || Y). */
int32_t dbc_se_public_key(const uint8_t *blob, int32_t blob_length, uint8_t *x963_out);
/* ECDSA-P256 over SHA-256(message), written as 64 bytes r || s (CryptoKit rawRepresentation). */
int32_t dbc_se_sign(const uint8_t *blob, int32_t blob_length, const uint8_t *message, int64_t message_length, uint8_t *signature_out);

/* Keychain generic passwords (Security.framework SecItem*) in the file-based login keychain: no data-protection keychain,
 * which an unsigned CLI cannot use (errSecMissingEntitlement, design/mlx-c.md §8). */
int32_t dbc_kc_set(const char *service, const char *account, const uint8_t *data, int32_t length);
/* 0 = found (*length = its size; -2 when capacity is too small), 1 = no such item. */
int32_t dbc_kc_get(const char *service, const char *account, uint8_t *out, int32_t capacity, int32_t *length);
/* 0 = deleted, 1 = no such item. */
int32_t dbc_kc_delete(const char *service, const char *account);
/* The service's account names, newline-separated UTF-8 (-2 when capacity is too small, *length = bytes needed). */
int32_t dbc_kc_list(const char *service, uint8_t *out, int32_t capacity, int32_t *length);

#endif
