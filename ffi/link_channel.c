/* link_channel.c — the link's sealed frames in C (see link_channel.h): one direction of a link keeps its own keyed
 * libcrypto context, counter, nonce and AAD, so sealing or opening a frame is one call with no allocation and no key
 * setup. The same steps as src/link/aead-channel.ts, in the same order (rekey, exhaustion, seal or open). */
#define _DEFAULT_SOURCE
#include "link_channel.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "aead.h"
#include "libcrypto.h"

int dbc_fail(int code, const char* fmt, ...);

#define HEADER 9  /* u64 length, u8 type */
#define SEALED 20 /* u64 seq, u32 stage, u64 request id */
#define TAG 16
#define REKEY_INTERVAL (1ull << 32)

typedef struct {
  const dbc_libcrypto* lc;
  const CIPHER* cipher;
  int cipher_id, opening;
  CIPHER_CTX* ctx;
  uint8_t key[32];
  uint8_t nonce[12];
  uint64_t counter, rekey_interval;
  int64_t aad_len;
  uint8_t* aad; /* u8 type | sealed header | cluster id: the cluster id is written once, the rest per frame */
} direction;

static void put64(uint8_t* p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put32(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint64_t get64(const uint8_t* p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

int dbc_lch_available(int cipher) { return dbc_libcrypto_cipher(dbc_libcrypto_load(), cipher) != NULL; }

static int set_key(direction* d) {
  lc_init_fn init = d->opening ? d->lc->dec_init : d->lc->enc_init;
  return init(d->ctx, d->cipher, NULL, d->key, NULL) == 1 ? 0 : dbc_fail(DBC_LCH_ERROR, "libcrypto refused the %s key", dbc_aead_name(d->cipher_id));
}

/* docs/protocol.md §Sealed frames, Rekey: key' = HKDF-SHA256(ikm = key, salt = 32 zero bytes, info = "dbcluster/v1 rekey", 32) */
static int rekey(direction* d) {
  static const char info[] = "dbcluster/v1 rekey";
  uint8_t zeros[32] = {0}, prk[32], block[sizeof info], okm[32];
  unsigned len = 0;
  const dbc_libcrypto* lc = d->lc;
  if (!lc->hmac(lc->sha256(), zeros, 32, d->key, 32, prk, &len)) return dbc_fail(DBC_LCH_ERROR, "HKDF extract failed");
  memcpy(block, info, sizeof info - 1);
  block[sizeof info - 1] = 1;
  if (!lc->hmac(lc->sha256(), prk, 32, block, sizeof info, okm, &len)) return dbc_fail(DBC_LCH_ERROR, "HKDF expand failed");
  memcpy(d->key, okm, 32);
  memset(prk, 0, sizeof prk);
  memset(okm, 0, sizeof okm);
  return set_key(d);
}

/* The next frame's seq, as aead-channel.ts's Direction.next(): rekey first, then refuse an exhausted counter. */
static int next_seq(direction* d, uint64_t* seq) {
  if (d->counter > 0 && d->counter % d->rekey_interval == 0) {
    int rc = rekey(d);
    if (rc) return rc;
  }
  if (d->counter == UINT64_MAX) return dbc_fail(DBC_LCH_EXHAUSTED, "the nonce counter is exhausted");
  *seq = d->counter++;
  for (int i = 0; i < 8; i++) d->nonce[4 + i] = (uint8_t)(*seq >> (56 - 8 * i));
  return 0;
}

int dbc_lch_new(int cipher, const uint8_t* key, int direction_, const uint8_t* cluster_id, int64_t cluster_id_len, uint64_t rekey_interval, int opening, void** out) {
  const dbc_libcrypto* lc = dbc_libcrypto_load();
  const CIPHER* evp = dbc_libcrypto_cipher(lc, cipher);
  if (!evp) return dbc_fail(DBC_LCH_UNAVAILABLE, "libcrypto with %s is not available", dbc_aead_name(cipher));
  if (direction_ != 1 && direction_ != 2) return dbc_fail(DBC_LCH_ERROR, "direction %d is neither 1 nor 2", direction_);
  if (cluster_id_len < 0 || cluster_id_len > INT_MAX - 64) return dbc_fail(DBC_LCH_ERROR, "a cluster id of %lld bytes", (long long)cluster_id_len);
  direction* d = calloc(1, sizeof *d);
  if (!d || !(d->aad = malloc((size_t)(1 + SEALED + cluster_id_len)))) {
    free(d);
    return dbc_fail(DBC_LCH_ERROR, "out of memory");
  }
  d->lc = lc;
  d->cipher = evp;
  d->cipher_id = cipher;
  d->opening = opening != 0;
  memcpy(d->key, key, 32);
  d->rekey_interval = rekey_interval > 0 ? rekey_interval : REKEY_INTERVAL;
  for (int i = 0; i < 4; i++) d->nonce[i] = (uint8_t)((uint32_t)direction_ >> (24 - 8 * i));
  d->aad_len = 1 + SEALED + cluster_id_len;
  if (cluster_id_len) memcpy(d->aad + 1 + SEALED, cluster_id, (size_t)cluster_id_len);
  if (!(d->ctx = lc->ctx_new()) || set_key(d)) {
    int rc = dbc_fail(DBC_LCH_ERROR, "libcrypto could not set up %s", dbc_aead_name(cipher));
    dbc_lch_free(d);
    return rc;
  }
  *out = d;
  return 0;
}

int dbc_lch_seal(void* dir, int type, uint32_t stage, uint64_t request_id, const uint8_t* payload, int64_t n, uint8_t* frame) {
  direction* d = dir;
  if (d->opening) return dbc_fail(DBC_LCH_ERROR, "this direction opens frames; it does not seal them");
  if (n < 0 || n > INT_MAX - 64) return dbc_fail(DBC_LCH_ERROR, "a %lld-byte payload is out of range", (long long)n);
  if (type < 0 || type > 255) return dbc_fail(DBC_LCH_ERROR, "frame type %d", type);
  uint64_t seq;
  int rc = next_seq(d, &seq);
  if (rc) return rc;
  put64(frame, (uint64_t)(HEADER + SEALED + n + TAG - 8));
  frame[8] = (uint8_t)type;
  put64(frame + HEADER, seq);
  put32(frame + HEADER + 8, stage);
  put64(frame + HEADER + 12, request_id);
  d->aad[0] = (uint8_t)type;
  memcpy(d->aad + 1, frame + HEADER, SEALED);
  uint8_t* out = frame + HEADER + SEALED;
  if (!dbc_lc_seal(d->lc, d->ctx, d->nonce, d->aad, (int)d->aad_len, payload, (int)n, out, out + n))
    return dbc_fail(DBC_LCH_ERROR, "libcrypto failed to seal a frame with %s", dbc_aead_name(d->cipher_id));
  return 0;
}

int dbc_lch_open(void* dir, int type, const uint8_t* body, int64_t n, uint8_t* out) {
  direction* d = dir;
  if (!d->opening) return dbc_fail(DBC_LCH_ERROR, "this direction seals frames; it does not open them");
  if (n < SEALED + TAG) return dbc_fail(DBC_LCH_SHORT, "sealed frame of %lld bytes is too short", (long long)n);
  if (n - SEALED - TAG > INT_MAX - 64) return dbc_fail(DBC_LCH_ERROR, "a %lld-byte frame is out of range", (long long)n);
  uint64_t seq = get64(body), due = d->counter;
  if (seq != due)
    return dbc_fail(seq < due ? DBC_LCH_REPLAY : DBC_LCH_ORDER, "frame %llu arrived when %llu was due (%s)", (unsigned long long)seq, (unsigned long long)due, seq < due ? "replayed" : "out of order");
  int rc = next_seq(d, &seq);
  if (rc) return rc;
  d->aad[0] = (uint8_t)type;
  memcpy(d->aad + 1, body, SEALED);
  int64_t m = n - SEALED - TAG;
  if (!dbc_lc_open(d->lc, d->ctx, d->nonce, d->aad, (int)d->aad_len, body + SEALED, (int)m, body + n - TAG, out))
    return dbc_fail(DBC_LCH_AUTH, "frame %llu failed authentication", (unsigned long long)seq);
  return 0;
}

int dbc_lch_counter(void* dir, uint64_t* out) {
  *out = ((direction*)dir)->counter;
  return 0;
}

int dbc_lch_free(void* dir) {
  direction* d = dir;
  if (!d) return 0;
  if (d->ctx) d->lc->ctx_free(d->ctx);
  memset(d->key, 0, sizeof d->key);
  free(d->aad);
  free(d);
  return 0;
}
