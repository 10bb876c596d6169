/* libcrypto.c — loads the system libcrypto once (see libcrypto.h) and runs one AEAD message through EVP: the same calls
 * for AES-256-GCM and ChaCha20-Poly1305 (RFC 8439), so the link's one-shot seal/open (aead.c) and the tensor-parallel
 * channel (tp_channel.c) share them. */
#define _DEFAULT_SOURCE
#include "libcrypto.h"
#include <dlfcn.h>
#include <pthread.h>
#include "aead.h"

static dbc_libcrypto lc;
static int lc_loaded;
static pthread_once_t lc_once = PTHREAD_ONCE_INIT;

static void load(void) {
  const char* names[] = {"libcrypto.so.3", "libcrypto.so", "libcrypto.so.1.1", "/opt/homebrew/opt/openssl@3/lib/libcrypto.3.dylib", "/usr/local/opt/openssl@3/lib/libcrypto.3.dylib"};
  void* h = NULL;
  for (size_t i = 0; i < sizeof names / sizeof *names && !h; i++) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!h) return;
#define SYM(field, name) *(void**)&lc.field = dlsym(h, name)
  SYM(ctx_new, "EVP_CIPHER_CTX_new");
  SYM(ctx_free, "EVP_CIPHER_CTX_free");
  SYM(aes_256_gcm, "EVP_aes_256_gcm");
  SYM(chacha20_poly1305, "EVP_chacha20_poly1305");
  SYM(enc_init, "EVP_EncryptInit_ex");
  SYM(dec_init, "EVP_DecryptInit_ex");
  SYM(enc_update, "EVP_EncryptUpdate");
  SYM(dec_update, "EVP_DecryptUpdate");
  SYM(enc_final, "EVP_EncryptFinal_ex");
  SYM(dec_final, "EVP_DecryptFinal_ex");
  SYM(ctrl, "EVP_CIPHER_CTX_ctrl");
  SYM(sha256, "EVP_sha256");
  SYM(hmac, "HMAC");
#undef SYM
  lc_loaded = lc.ctx_new && lc.ctx_free && lc.aes_256_gcm && lc.enc_init && lc.dec_init && lc.enc_update && lc.dec_update &&
              lc.enc_final && lc.dec_final && lc.ctrl && lc.sha256 && lc.hmac;
}

const dbc_libcrypto* dbc_libcrypto_load(void) {
  pthread_once(&lc_once, load);
  return lc_loaded ? &lc : NULL;
}

const CIPHER* dbc_libcrypto_cipher(const dbc_libcrypto* l, int cipher) {
  if (!l) return NULL;
  if (cipher == DBC_AEAD_AES_256_GCM) return l->aes_256_gcm();
  if (cipher == DBC_AEAD_CHACHA20_POLY1305 && l->chacha20_poly1305) return l->chacha20_poly1305();
  return NULL;
}

const char* dbc_aead_name(int cipher) {
  return cipher == DBC_AEAD_AES_256_GCM ? "AES-256-GCM" : cipher == DBC_AEAD_CHACHA20_POLY1305 ? "ChaCha20-Poly1305" : "an unknown cipher";
}

/* Both ciphers take a 12-byte nonce by default, so no IV-length call is needed. */
int dbc_lc_seal(const dbc_libcrypto* l, CIPHER_CTX* ctx, const uint8_t nonce[12], const uint8_t* aad, int aad_len,
                const uint8_t* in, int n, uint8_t* out, uint8_t tag[16]) {
  int len = 0;
  return l->enc_init(ctx, NULL, NULL, NULL, nonce) == 1 && (aad_len == 0 || l->enc_update(ctx, NULL, &len, aad, aad_len) == 1) &&
         (n == 0 || l->enc_update(ctx, out, &len, in, n) == 1) && l->enc_final(ctx, out + len, &len) == 1 &&
         l->ctrl(ctx, LC_CTRL_AEAD_GET_TAG, 16, tag) == 1;
}

/* RFC 8439 §2.8 / GCM: the tag is checked in the final step; a caller must discard `out` when this returns 0. */
int dbc_lc_open(const dbc_libcrypto* l, CIPHER_CTX* ctx, const uint8_t nonce[12], const uint8_t* aad, int aad_len,
                const uint8_t* in, int n, const uint8_t tag[16], uint8_t* out) {
  int len = 0;
  return l->dec_init(ctx, NULL, NULL, NULL, nonce) == 1 && l->ctrl(ctx, LC_CTRL_AEAD_SET_TAG, 16, (void*)tag) == 1 &&
         (aad_len == 0 || l->dec_update(ctx, NULL, &len, aad, aad_len) == 1) && (n == 0 || l->dec_update(ctx, out, &len, in, n) == 1) &&
         l->dec_final(ctx, out + len, &len) == 1;
}
