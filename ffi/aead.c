/* aead.c — one-shot AES-256-GCM and ChaCha20-Poly1305 seal/open for the link (aead.h), through libcrypto.c. Each thread
 * keeps one cipher context, so a frame costs a key setup and the cipher's own work, no allocation. */
#define _DEFAULT_SOURCE
#include "aead.h"
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include "libcrypto.h"

int dbc_fail(int code, const char* fmt, ...);

static pthread_key_t ctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static void free_ctx(void* ctx) {
  const dbc_libcrypto* lc = dbc_libcrypto_load();
  if (lc && ctx) lc->ctx_free(ctx);
}
static void make_key(void) { pthread_key_create(&ctx_key, free_ctx); }

/* This thread's context, or NULL. */
static CIPHER_CTX* thread_ctx(const dbc_libcrypto* lc) {
  pthread_once(&ctx_once, make_key);
  CIPHER_CTX* ctx = pthread_getspecific(ctx_key);
  if (!ctx && (ctx = lc->ctx_new())) pthread_setspecific(ctx_key, ctx);
  return ctx;
}

int dbc_aead_available(int cipher) { return dbc_libcrypto_cipher(dbc_libcrypto_load(), cipher) != NULL; }

/* The loaded library, its cipher and a context keyed for one message, or a DBC_AEAD_* code. */
static int prepare(int cipher, const uint8_t* key, int64_t aad_len, int64_t n, int decrypt, const dbc_libcrypto** lc, CIPHER_CTX** ctx) {
  *lc = dbc_libcrypto_load();
  const CIPHER* evp = dbc_libcrypto_cipher(*lc, cipher);
  if (!evp) return dbc_fail(DBC_AEAD_UNAVAILABLE, "libcrypto with %s is not available", dbc_aead_name(cipher));
  if (n < 0 || n > INT_MAX - 64 || aad_len < 0 || aad_len > INT_MAX) return dbc_fail(DBC_AEAD_ERROR, "a %lld-byte message or %lld-byte AAD is out of range", (long long)n, (long long)aad_len);
  if (!(*ctx = thread_ctx(*lc))) return dbc_fail(DBC_AEAD_ERROR, "libcrypto could not allocate a cipher context");
  lc_init_fn init = decrypt ? (*lc)->dec_init : (*lc)->enc_init;
  if (init(*ctx, evp, NULL, key, NULL) != 1) return dbc_fail(DBC_AEAD_ERROR, "libcrypto refused the %s key", dbc_aead_name(cipher));
  return 0;
}

int dbc_aead_seal(int cipher, const uint8_t* key, const uint8_t* nonce, const uint8_t* aad, int64_t aad_len, const uint8_t* in, int64_t n, uint8_t* out) {
  const dbc_libcrypto* lc = NULL;
  CIPHER_CTX* ctx = NULL;
  int rc = prepare(cipher, key, aad_len, n, 0, &lc, &ctx);
  if (rc) return rc;
  if (!dbc_lc_seal(lc, ctx, nonce, aad, (int)aad_len, in, (int)n, out, out + n)) return dbc_fail(DBC_AEAD_ERROR, "libcrypto failed to seal with %s", dbc_aead_name(cipher));
  return 0;
}

int dbc_aead_open(int cipher, const uint8_t* key, const uint8_t* nonce, const uint8_t* aad, int64_t aad_len, const uint8_t* in, int64_t n, uint8_t* out) {
  if (n < 16) return dbc_fail(DBC_AEAD_AUTH, "a sealed message of %lld bytes is shorter than its tag", (long long)n);
  const dbc_libcrypto* lc = NULL;
  CIPHER_CTX* ctx = NULL;
  int rc = prepare(cipher, key, aad_len, n - 16, 1, &lc, &ctx);
  if (rc) return rc;
  if (!dbc_lc_open(lc, ctx, nonce, aad, (int)aad_len, in, (int)(n - 16), in + n - 16, out)) return dbc_fail(DBC_AEAD_AUTH, "a %s message failed authentication", dbc_aead_name(cipher));
  return 0;
}
