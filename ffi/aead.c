/* aead.c — one-shot AES-256-GCM and ChaCha20-Poly1305 seal/open for the link (aead.h), through libcrypto.c. Each thread
 * keeps its contexts keyed, so a frame under the key of the one before costs the cipher's own work, no allocation. */
#define _DEFAULT_SOURCE
#include "aead.h"
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "libcrypto.h"

int dbc_fail(int code, const char* fmt, ...);

/* Per thread, one context to seal and one to open, each remembering the cipher and key it was set up with: OpenSSL 3's
 * key setup costs more than sealing a 4 KiB frame, and a link seals (and opens) frame after frame under one key. */
typedef struct {
  CIPHER_CTX* ctx[2];
  int cipher[2];
  uint8_t key[2][32];
} thread_state;

static pthread_key_t state_key;
static pthread_once_t state_once = PTHREAD_ONCE_INIT;
static void free_state(void* p) {
  thread_state* t = p;
  const dbc_libcrypto* lc = dbc_libcrypto_load();
  for (int i = 0; i < 2; i++)
    if (lc && t->ctx[i]) lc->ctx_free(t->ctx[i]);
  memset(t->key, 0, sizeof t->key);
  free(t);
}
static void make_key(void) { pthread_key_create(&state_key, free_state); }

/* This thread's state, or NULL when out of memory. */
static thread_state* state(const dbc_libcrypto* lc) {
  pthread_once(&state_once, make_key);
  thread_state* t = pthread_getspecific(state_key);
  if (t) return t;
  if (!(t = calloc(1, sizeof *t))) return NULL;
  t->ctx[0] = lc->ctx_new();
  t->ctx[1] = lc->ctx_new();
  t->cipher[0] = t->cipher[1] = -1;
  if (!t->ctx[0] || !t->ctx[1] || pthread_setspecific(state_key, t)) {
    free_state(t);
    return NULL;
  }
  return t;
}

/* Whether two keys are equal, in time independent of where they differ. */
static int same_key(const uint8_t* a, const uint8_t* b) {
  uint8_t d = 0;
  for (int i = 0; i < 32; i++) d |= a[i] ^ b[i];
  return d == 0;
}

int dbc_aead_available(int cipher) { return dbc_libcrypto_cipher(dbc_libcrypto_load(), cipher) != NULL; }

/* The loaded library and this thread's context for one message, keyed for cipher and key, or a DBC_AEAD_* code. */
static int prepare(int cipher, const uint8_t* key, int64_t aad_len, int64_t n, int decrypt, const dbc_libcrypto** lc, CIPHER_CTX** ctx) {
  *lc = dbc_libcrypto_load();
  const CIPHER* evp = dbc_libcrypto_cipher(*lc, cipher);
  if (!evp) return dbc_fail(DBC_AEAD_UNAVAILABLE, "libcrypto with %s is not available", dbc_aead_name(cipher));
  if (n < 0 || n > INT_MAX - 64 || aad_len < 0 || aad_len > INT_MAX) return dbc_fail(DBC_AEAD_ERROR, "a %lld-byte message or %lld-byte AAD is out of range", (long long)n, (long long)aad_len);
  thread_state* t = state(*lc);
  if (!t) return dbc_fail(DBC_AEAD_ERROR, "libcrypto could not allocate a cipher context");
  *ctx = t->ctx[decrypt];
  if (t->cipher[decrypt] == cipher && same_key(t->key[decrypt], key)) return 0;
  t->cipher[decrypt] = -1; /* a failed setup leaves no key behind to be trusted */
  lc_init_fn init = decrypt ? (*lc)->dec_init : (*lc)->enc_init;
  if (init(*ctx, evp, NULL, key, NULL) != 1) return dbc_fail(DBC_AEAD_ERROR, "libcrypto refused the %s key", dbc_aead_name(cipher));
  t->cipher[decrypt] = cipher;
  memcpy(t->key[decrypt], key, 32);
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
