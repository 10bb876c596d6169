/* aead.h — one-shot AEAD seal and open through the system's libcrypto, for the link's sealed frames
 * (src/link/aead-channel.ts). Mirrored, in order, by AEAD_SYMBOLS in src/link/native-aead.ts (then dbc_last_error);
 * test/tensor/native-abi.test.ts checks it. In libdbc.so, not in dbc.h's ABI (the mlx glue does not carry it).
 * Ciphers are the DBC_AEAD_* ids; keys are 32 bytes, nonces 12, tags 16 (docs/protocol.md §Sealed frames).
 * Every call returns 0 on success or a negative DBC_AEAD_* code, with dbc_last_error() saying what happened. */
#ifndef DBC_AEAD_H
#define DBC_AEAD_H
#include <stdint.h>

#define DBC_AEAD_AES_256_GCM 0
#define DBC_AEAD_CHACHA20_POLY1305 1

#define DBC_AEAD_UNAVAILABLE -6 /* libcrypto, or this cipher in it, could not be loaded: the caller seals in TypeScript */
#define DBC_AEAD_AUTH -4        /* the tag does not verify: altered ciphertext, tag or AAD, or another key or nonce */
#define DBC_AEAD_ERROR -1       /* a bad argument, or libcrypto failed */

/* 1 when the cipher can be used here, else 0. */
int dbc_aead_available(int cipher);
/* out[0..n) = ciphertext, out[n..n+16) = tag. out may not overlap in. */
int dbc_aead_seal(int cipher, const uint8_t* key, const uint8_t* nonce, const uint8_t* aad, int64_t aad_len, const uint8_t* in, int64_t n, uint8_t* out);
/* in[0..n) = ciphertext ‖ tag (n >= 16); out[0..n-16) = plaintext, written only where the tag verifies. */
int dbc_aead_open(int cipher, const uint8_t* key, const uint8_t* nonce, const uint8_t* aad, int64_t aad_len, const uint8_t* in, int64_t n, uint8_t* out);

#endif
