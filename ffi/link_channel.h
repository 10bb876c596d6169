/* link_channel.h — the link's sealed frames in C: one direction of a link (its key, counter, nonce and AAD) sealing or
 * opening whole frames, so that a frame costs one call and the cipher's own work. Mirrored, in order, by
 * LINK_CHANNEL_SYMBOLS in src/link/native-channel.ts (then dbc_last_error); test/tensor/native-abi.test.ts checks it.
 * In libdbc.so, not in dbc.h's ABI (the mlx glue does not carry it). The format is docs/protocol.md §Sealed frames,
 * byte for byte that of src/link/aead-channel.ts (test/vectors/sealed-frames.json, test/link/native-channel.test.ts):
 * frame = u64 LE length | u8 type | u64 LE seq | u32 LE stage | u64 LE request id | ciphertext | 16-byte tag;
 * nonce = u32 BE direction ‖ u64 BE seq; AAD = type | the 20-byte sealed header | cluster id; every rekey_interval
 * frames the key becomes HKDF-SHA256(key, no salt, "dbcluster/v1 rekey"). AES-256-GCM or ChaCha20-Poly1305
 * (aead.h's DBC_AEAD_* ids) from the system libcrypto, loaded at run time; where it is missing the TypeScript side
 * seals instead. Every call returns 0 on success or a negative DBC_LCH_* code, with dbc_last_error() saying what. */
#ifndef DBC_LINK_CHANNEL_H
#define DBC_LINK_CHANNEL_H
#include <stdint.h>

#define DBC_LCH_ERROR -1       /* a bad argument, or libcrypto failed */
#define DBC_LCH_AUTH -4        /* the frame failed authentication */
#define DBC_LCH_UNAVAILABLE -6 /* libcrypto, or this cipher in it, could not be loaded */
#define DBC_LCH_REPLAY -7      /* a frame whose seq was already due before (replayed) */
#define DBC_LCH_ORDER -8       /* a frame whose seq is not due yet (out of order) */
#define DBC_LCH_EXHAUSTED -9   /* the direction's counter reached 2^64 - 1: it seals and opens nothing more */
#define DBC_LCH_SHORT -10      /* a body shorter than the sealed header and tag (36 bytes) */

/* 1 when the cipher (DBC_AEAD_*) can be used here, else 0. */
int dbc_lch_available(int cipher);
/* One direction of a link: direction 1 (initiator → responder) or 2, the 32-byte key in force at counter 0, the cluster
 * id's UTF-8 bytes (any length), frames per key (0: 2^32), and whether it seals (0) or opens (1) frames. */
int dbc_lch_new(int cipher, const uint8_t* key, int direction, const uint8_t* cluster_id, int64_t cluster_id_len, uint64_t rekey_interval, int opening, void** out);
/* Seals payload[0..n) as the next frame into frame[0 .. 45 + n): the whole frame, its length prefix included.
 * payload may be frame + 29 (sealed in place); it may not overlap the frame otherwise. */
int dbc_lch_seal(void* direction, int type, uint32_t stage, uint64_t request_id, const uint8_t* payload, int64_t n, uint8_t* frame);
/* Opens the next frame's body (the bytes after length and type: n >= 36) into out[0 .. n - 36); out may be body + 20
 * (opened in place). The seq must be the direction's counter. When it fails, out holds nothing usable. */
int dbc_lch_open(void* direction, int type, const uint8_t* body, int64_t n, uint8_t* out);
/* The direction's counter: frames sealed or opened so far (the next frame's seq). */
int dbc_lch_counter(void* direction, uint64_t* out);
int dbc_lch_free(void* direction);

#endif
