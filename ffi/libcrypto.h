/* libcrypto.h — the system libcrypto (OpenSSL 1.1 or 3), loaded once at run time with dlopen, and the AEAD steps that
 * aead.c and tp_channel.c share. No build-time dependency: where it is missing (macOS without Homebrew's OpenSSL) the
 * TypeScript side seals instead. Not part of the ABI. */
#ifndef DBC_LIBCRYPTO_H
#define DBC_LIBCRYPTO_H
#include <stddef.h>
#include <stdint.h>

/* opaque libcrypto types; the constants are OpenSSL's (evp.h), stable since 1.1 (GCM's and ChaCha20-Poly1305's agree) */
typedef struct evp_cipher_ctx_st CIPHER_CTX;
typedef struct evp_cipher_st CIPHER;
typedef struct evp_md_st MD;
#define LC_CTRL_AEAD_GET_TAG 0x10
#define LC_CTRL_AEAD_SET_TAG 0x11

typedef int (*lc_init_fn)(CIPHER_CTX*, const CIPHER*, void*, const unsigned char*, const unsigned char*);
typedef int (*lc_update_fn)(CIPHER_CTX*, unsigned char*, int*, const unsigned char*, int);
typedef int (*lc_final_fn)(CIPHER_CTX*, unsigned char*, int*);
typedef struct {
  CIPHER_CTX* (*ctx_new)(void);
  void (*ctx_free)(CIPHER_CTX*);
  const CIPHER* (*aes_256_gcm)(void);
  const CIPHER* (*chacha20_poly1305)(void); /* NULL in a libcrypto built without it */
  lc_init_fn enc_init, dec_init;
  lc_update_fn enc_update, dec_update;
  lc_final_fn enc_final, dec_final;
  int (*ctrl)(CIPHER_CTX*, int, int, void*);
  const MD* (*sha256)(void);
  unsigned char* (*hmac)(const MD*, const void*, int, const unsigned char*, size_t, unsigned char*, unsigned int*);
} dbc_libcrypto;

/* The loaded table, or NULL when libcrypto (or one of the calls every cipher needs) is missing. */
const dbc_libcrypto* dbc_libcrypto_load(void);
/* The EVP cipher for a DBC_AEAD_* id (aead.h), or NULL when this libcrypto lacks it. */
const CIPHER* dbc_libcrypto_cipher(const dbc_libcrypto* lc, int cipher);
/* The name docs/protocol.md uses for a DBC_AEAD_* id. */
const char* dbc_aead_name(int cipher);

/* One AEAD message with a context whose cipher and key are set (init with a NULL nonce): n bytes in → n bytes out and a
 * 16-byte tag. Returns 1 on success; open returns 0 when the tag does not verify (out then holds no usable bytes). */
int dbc_lc_seal(const dbc_libcrypto* lc, CIPHER_CTX* ctx, const uint8_t nonce[12], const uint8_t* aad, int aad_len,
                const uint8_t* in, int n, uint8_t* out, uint8_t tag[16]);
int dbc_lc_open(const dbc_libcrypto* lc, CIPHER_CTX* ctx, const uint8_t nonce[12], const uint8_t* aad, int aad_len,
                const uint8_t* in, int n, const uint8_t tag[16], uint8_t* out);

#endif
