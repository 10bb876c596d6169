/* tp_channel.c — the sealed tensor-parallel channel (see tp_socket.h): the link's frame format and AEAD, in C, so that an
 * all_sum costs one call (seal, exchange, open, add) and no allocation. AES-256-GCM or ChaCha20-Poly1305 comes from the
 * system libcrypto, loaded at run time (libcrypto.c): no build-time dependency, and where it is missing (macOS without
 * Homebrew's OpenSSL) the TypeScript side seals instead. Frames are byte-for-byte those of src/link/aead-channel.ts
 * (tested both ways). */
#define _DEFAULT_SOURCE
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "aead.h"
#include "libcrypto.h"
#include "tp_socket.h"

int dbc_fail(int code, const char* fmt, ...);

int dbc_tpc_available(int cipher) { return dbc_aead_available(cipher); }

#define HEADER 9 /* u64 length, u8 type */
#define SEALED 20 /* u64 sequence, u32 stage, u64 request id */
#define TAG 16
#define MAX_CLUSTER_ID 256
#define REKEY_INTERVAL (1ull << 32)

typedef struct {
  uint8_t key[32];
  uint64_t counter;
  uint32_t direction;
  int decrypt;
  CIPHER_CTX* ctx;
} direction;

typedef struct {
  const dbc_libcrypto* lc;
  const CIPHER* cipher;
  int cipher_id;
  int fd, own_rank, peer_rank, cluster_id_len;
  uint64_t rekey_interval;
  uint8_t cluster_id[MAX_CLUSTER_ID];
  direction tx, rx;
  uint8_t* scratch; /* outgoing frame, then incoming frame */
  size_t scratch_bytes;
  int pending_type;      /* a frame whose header dbc_tpc_recv_header read: its type (-1: none) */
  int64_t pending_total; /* and its size on the wire */
} channel;

static void put64(uint8_t* p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put32(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint64_t get64(const uint8_t* p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint32_t get32(const uint8_t* p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }

static int set_key(const channel* c, direction* d) {
  lc_init_fn init = d->decrypt ? c->lc->dec_init : c->lc->enc_init;
  return init(d->ctx, c->cipher, NULL, d->key, NULL) == 1 ? 0 : dbc_fail(DBC_SOCK_ERROR, "libcrypto refused the %s key", dbc_aead_name(c->cipher_id));
}

/* key' = HKDF-SHA256(key, salt = none, info = "dbcluster/v1 rekey"), as @noble/hashes' hkdf with an undefined salt */
static int rekey(const channel* c, direction* d) {
  static const char info[] = "dbcluster/v1 rekey";
  uint8_t zeros[32] = {0}, prk[32], block[sizeof info], okm[32];
  unsigned len = 0;
  const dbc_libcrypto* lc = c->lc;
  if (!lc->hmac(lc->sha256(), zeros, 32, d->key, 32, prk, &len)) return dbc_fail(DBC_SOCK_ERROR, "HKDF extract failed");
  memcpy(block, info, sizeof info - 1);
  block[sizeof info - 1] = 1;
  if (!lc->hmac(lc->sha256(), prk, 32, block, sizeof info, okm, &len)) return dbc_fail(DBC_SOCK_ERROR, "HKDF expand failed");
  memcpy(d->key, okm, 32);
  return set_key(c, d);
}

/* The next sequence number of a direction, rekeying at the interval like aead-channel.ts's Direction.next(). */
static int next_seq(channel* c, direction* d, uint64_t* seq) {
  if (d->counter > 0 && d->counter % c->rekey_interval == 0) {
    int rc = rekey(c, d);
    if (rc) return rc;
  }
  if (d->counter == UINT64_MAX) return dbc_fail(DBC_TPC_PROTOCOL, "the nonce counter is exhausted: restart every rank for fresh keys");
  *seq = d->counter++;
  return 0;
}

static void nonce_for(uint32_t direction_, uint64_t seq, uint8_t nonce[12]) {
  for (int i = 0; i < 4; i++) nonce[i] = (uint8_t)(direction_ >> (24 - 8 * i));
  for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
}

/* AAD = u8 type | u64 seq | u32 stage | u64 request id (0) | cluster id; returns its length */
static int aad_for(const channel* c, int type, uint64_t seq, uint32_t stage, uint8_t* aad) {
  aad[0] = (uint8_t)type;
  put64(aad + 1, seq);
  put32(aad + 9, stage);
  put64(aad + 13, 0);
  memcpy(aad + 21, c->cluster_id, (size_t)c->cluster_id_len);
  return 21 + c->cluster_id_len;
}

static int ensure_scratch(channel* c, size_t bytes) {
  if (c->scratch_bytes >= bytes) return 0;
  uint8_t* grown = realloc(c->scratch, bytes);
  if (!grown) return dbc_fail(DBC_SOCK_ERROR, "out of memory for a %zu-byte frame", bytes);
  c->scratch = grown;
  c->scratch_bytes = bytes;
  return 0;
}

/* Seals payload into frame (HEADER + SEALED + n + TAG bytes). */
static int seal(channel* c, int type, const void* payload, int64_t n, uint8_t* frame) {
  if (n > INT_MAX - 64) return dbc_fail(DBC_TPC_PROTOCOL, "a %lld-byte frame is too large", (long long)n);
  uint64_t seq;
  int rc = next_seq(c, &c->tx, &seq);
  if (rc) return rc;
  put64(frame, (uint64_t)(HEADER + SEALED + n + TAG - 8));
  frame[8] = (uint8_t)type;
  put64(frame + HEADER, seq);
  put32(frame + HEADER + 8, (uint32_t)c->own_rank);
  put64(frame + HEADER + 12, 0);
  uint8_t nonce[12], aad[21 + MAX_CLUSTER_ID];
  nonce_for(c->tx.direction, seq, nonce);
  int aad_len = aad_for(c, type, seq, (uint32_t)c->own_rank, aad);
  uint8_t* out = frame + HEADER + SEALED;
  if (!dbc_lc_seal(c->lc, c->tx.ctx, nonce, aad, aad_len, payload, (int)n, out, out + n))
    return dbc_fail(DBC_SOCK_ERROR, "libcrypto failed to seal a frame with %s", dbc_aead_name(c->cipher_id));
  return 0;
}

/* Opens a whole frame of `total` bytes that must be of `type`, into out (total - HEADER - SEALED - TAG bytes). */
static int open_frame(channel* c, int type, uint8_t* frame, int64_t total, void* out) {
  int64_t n = total - HEADER - SEALED - TAG;
  if (n < 0 || get64(frame) != (uint64_t)(total - 8) || frame[8] != type)
    return dbc_fail(DBC_TPC_PROTOCOL, "rank %d sent a frame of type %d and %lld bytes where a %d was due", c->peer_rank, frame[8], (long long)total, type);
  uint64_t seq = get64(frame + HEADER), expected = c->rx.counter;
  if (seq != expected) return dbc_fail(DBC_TPC_PROTOCOL, "frame %llu from rank %d arrived when %llu was due (%s)", (unsigned long long)seq, c->peer_rank, (unsigned long long)expected, seq < expected ? "replayed" : "out of order");
  uint32_t stage = get32(frame + HEADER + 8);
  int rc = next_seq(c, &c->rx, &seq);
  if (rc) return rc;
  uint8_t nonce[12], aad[21 + MAX_CLUSTER_ID];
  nonce_for(c->rx.direction, seq, nonce);
  int aad_len = aad_for(c, type, seq, stage, aad);
  /* the request id is part of the AAD as the sender wrote it */
  put64(aad + 13, get64(frame + HEADER + 12));
  uint8_t* in = frame + HEADER + SEALED;
  if (!dbc_lc_open(c->lc, c->rx.ctx, nonce, aad, aad_len, in, (int)n, in + n, (uint8_t*)out))
    return dbc_fail(DBC_TPC_AUTH, "frame %llu from rank %d failed authentication", (unsigned long long)seq, c->peer_rank);
  if (stage != (uint32_t)c->peer_rank) return dbc_fail(DBC_TPC_PROTOCOL, "a frame from rank %u arrived on the connection to rank %d", stage, c->peer_rank);
  return 0;
}

int dbc_tpc_new(int fd, int cipher, const uint8_t* key, const uint8_t* cluster_id, int cluster_id_len, int own_rank, int peer_rank, int64_t rekey_interval, void** out) {
  if (cipher != DBC_AEAD_AES_256_GCM && cipher != DBC_AEAD_CHACHA20_POLY1305) return dbc_fail(DBC_TPC_PROTOCOL, "unknown cipher id %d", cipher);
  if (!dbc_tpc_available(cipher)) return dbc_fail(DBC_TPC_UNAVAILABLE, "libcrypto (OpenSSL) with %s is not available", dbc_aead_name(cipher));
  if (cluster_id_len < 0 || cluster_id_len > MAX_CLUSTER_ID) return dbc_fail(DBC_TPC_PROTOCOL, "a cluster id of %d bytes is longer than %d", cluster_id_len, MAX_CLUSTER_ID);
  channel* c = calloc(1, sizeof *c);
  if (!c) return dbc_fail(DBC_SOCK_ERROR, "out of memory");
  c->lc = dbc_libcrypto_load();
  c->cipher = dbc_libcrypto_cipher(c->lc, cipher);
  c->cipher_id = cipher;
  c->fd = fd;
  c->pending_type = -1;
  c->own_rank = own_rank;
  c->peer_rank = peer_rank;
  c->rekey_interval = rekey_interval > 0 ? (uint64_t)rekey_interval : REKEY_INTERVAL;
  c->cluster_id_len = cluster_id_len;
  memcpy(c->cluster_id, cluster_id, (size_t)cluster_id_len);
  memcpy(c->tx.key, key, 32);
  memcpy(c->rx.key, key, 32);
  c->tx.direction = own_rank == 0 ? 1 : 2;
  c->rx.direction = own_rank == 0 ? 2 : 1;
  c->rx.decrypt = 1;
  c->tx.ctx = c->lc->ctx_new();
  c->rx.ctx = c->lc->ctx_new();
  if (!c->tx.ctx || !c->rx.ctx || set_key(c, &c->tx) || set_key(c, &c->rx)) {
    int rc = dbc_fail(DBC_SOCK_ERROR, "libcrypto could not set up %s", dbc_aead_name(cipher));
    dbc_tpc_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

int dbc_tpc_send(void* ch, int type, const void* payload, int64_t n, int timeout_ms) {
  channel* c = ch;
  int64_t total = HEADER + SEALED + n + TAG;
  int rc = ensure_scratch(c, (size_t)total);
  if (!rc) rc = seal(c, type, payload, n, c->scratch);
  if (!rc) rc = dbc_sock_exchange(c->fd, c->scratch, total, NULL, 0, timeout_ms);
  return rc;
}

int dbc_tpc_recv_header(void* ch, int type, int64_t max, int64_t* len, int timeout_ms) {
  channel* c = ch;
  if (c->pending_type >= 0) return dbc_fail(DBC_TPC_PROTOCOL, "a frame's header was read and its payload not yet");
  uint8_t head[HEADER];
  int rc = dbc_sock_exchange(c->fd, NULL, 0, head, HEADER, timeout_ms);
  if (rc) return rc;
  int64_t total = (int64_t)get64(head) + 8, n = total - HEADER - SEALED - TAG;
  if (head[8] != type || n < 0 || n > max)
    return dbc_fail(DBC_TPC_PROTOCOL, "rank %d sent a frame of type %d and %lld bytes where a %d of at most %lld was due", c->peer_rank, head[8], (long long)total, type, (long long)(max + HEADER + SEALED + TAG));
  if ((rc = ensure_scratch(c, (size_t)total))) return rc;
  memcpy(c->scratch, head, HEADER);
  c->pending_type = type;
  c->pending_total = total;
  *len = n;
  return 0;
}

int dbc_tpc_recv_payload(void* ch, void* buf, int timeout_ms) {
  channel* c = ch;
  if (c->pending_type < 0) return dbc_fail(DBC_TPC_PROTOCOL, "no frame header was read");
  int type = c->pending_type;
  int64_t total = c->pending_total;
  c->pending_type = -1;
  int rc = dbc_sock_exchange(c->fd, NULL, 0, c->scratch + HEADER, total - HEADER, timeout_ms);
  return rc ? rc : open_frame(c, type, c->scratch, total, buf);
}

int dbc_tpc_all_sum2(void* ch, int type, const float* mine, int64_t n, float* out, int timeout_ms) {
  channel* c = ch;
  int64_t total = HEADER + SEALED + n * 4 + TAG;
  int rc = ensure_scratch(c, (size_t)(2 * total));
  if (rc) return rc;
  uint8_t *send = c->scratch, *recv = c->scratch + total;
  if ((rc = seal(c, type, mine, n * 4, send))) return rc;
  if ((rc = dbc_sock_exchange(c->fd, send, total, recv, total, timeout_ms))) return rc;
  if ((rc = open_frame(c, type, recv, total, out))) return rc;
  /* IEEE addition is commutative: mine + theirs has the same bits on both ranks */
  for (int64_t i = 0; i < n; i++) out[i] += mine[i];
  return 0;
}

int dbc_tpc_peer_gone(void* ch) { return dbc_sock_peer_gone(((channel*)ch)->fd); }

int dbc_tpc_free(void* ch) {
  channel* c = ch;
  if (!c) return 0;
  if (c->tx.ctx) c->lc->ctx_free(c->tx.ctx);
  if (c->rx.ctx) c->lc->ctx_free(c->rx.ctx);
  if (c->fd >= 0) close(c->fd);
  memset(c->tx.key, 0, 32);
  memset(c->rx.key, 0, 32);
  free(c->scratch);
  free(c);
  return 0;
}
