/* tp_socket.h — blocking TCP for tensor-parallel exchanges, and the sealed channel over it. Mirrored, in order, by
 * TP_SOCKET_SYMBOLS in src/tensor-parallel/native-socket.ts (then dbc_last_error); test/tensor/native-abi.test.ts
 * checks it. A tensor-parallel forward is synchronous (the model calls all_sum in the middle of a layer), so its bytes
 * cannot wait for an event loop: they go through these calls on a plain socket. The dbc_sock_* calls move bytes only;
 * the dbc_tpc_* channel (tp_channel.c) seals them, and src/tensor-parallel/sealed-group.ts drives both. In libdbc.so,
 * not in dbc.h's ABI (the mlx glue does not carry them): opened as a second symbol table on the cpu shim.
 * Every call returns >= 0 on success or a negative DBC_SOCK_* code, with dbc_last_error() saying what happened. */
#ifndef DBC_TP_SOCKET_H
#define DBC_TP_SOCKET_H
#include <stdint.h>

#define DBC_SOCK_ERROR -1   /* a system call failed (the message names it and errno) */
#define DBC_SOCK_TIMEOUT -2 /* nothing (or not everything) arrived within the timeout */
#define DBC_SOCK_CLOSED -3  /* the peer closed the connection or reset it */
#define DBC_TPC_AUTH -4     /* a frame failed authentication (altered, or sealed with another key) */
#define DBC_TPC_PROTOCOL -5 /* a frame of the wrong type, size, sequence number or sender */
#define DBC_TPC_UNAVAILABLE -6 /* libcrypto (or the cipher in it) could not be loaded: the caller seals in TypeScript instead */

/* A listening socket on host:port (port 0: any free one); *bound_port receives the port. Returns the fd. */
int dbc_sock_listen(const char* host, int port, int* bound_port);
/* The next connection on a listener within timeout_ms (< 0: no limit). Returns its fd. */
int dbc_sock_accept(int listener, int timeout_ms);
/* Connects to host:port within timeout_ms. Returns the fd. */
int dbc_sock_connect(const char* host, int port, int timeout_ms);
/* Sends out[0..n) while receiving in[0..m), interleaved, so that two peers exchanging at once never wait on each other's
 * full buffers. timeout_ms bounds the whole call (< 0: no limit). Returns 0 once both are done. */
int dbc_sock_exchange(int fd, const void* out, int64_t n, void* in, int64_t m, int timeout_ms);
int dbc_sock_close(int fd);
/* Without waiting: 1 if the peer has closed or reset the connection (or keepalive gave up on it), 0 if it still looks
 * alive. For a side that expects nothing from its peer between steps: data already waiting counts as alive. */
int dbc_sock_peer_gone(int fd);

/* A sealed channel over a connected socket, in the link's frame format (docs/protocol.md §Sealed frames, vectors in
 * test/vectors/sealed-frames.json: u64 length, u8 type, u64 sequence, u32 stage = the sender's rank, u64 request id = 0,
 * ciphertext and tag; nonce = u32 direction big-endian ‖ u64 sequence big-endian; rank 0 seals as direction 1, the
 * others as 2; AAD = type, sequence, stage, request id, cluster id; both directions rekey every 2^32 frames with
 * HKDF-SHA256(key, "dbcluster/v1 rekey")). cipher: DBC_AEAD_AES_256_GCM (0) or DBC_AEAD_CHACHA20_POLY1305 (1) of aead.h,
 * from the system's libcrypto, loaded at run time; dbc_tpc_available(cipher) says whether it loads here.
 * The channel owns fd from here on. rekey_interval: frames per key (0: 2^32; tests use small ones). */
int dbc_tpc_available(int cipher);
int dbc_tpc_new(int fd, int cipher, const uint8_t* key, const uint8_t* cluster_id, int cluster_id_len, int own_rank, int peer_rank, int64_t rekey_interval, void** out);
/* Seals payload[0..n) as one frame of `type` and sends it. */
int dbc_tpc_send(void* ch, int type, const void* payload, int64_t n, int timeout_ms);
/* Receives the next frame in two calls, so the caller can size its buffer: the header first (the frame must be of
 * `type` and carry at most max bytes; *len = its payload size), then the rest, opened into buf (*len bytes). */
int dbc_tpc_recv_header(void* ch, int type, int64_t max, int64_t* len, int timeout_ms);
int dbc_tpc_recv_payload(void* ch, void* buf, int timeout_ms);
/* Two ranks' all_sum in one call: seals `mine` (n f32) as a frame of `type` while receiving the peer's, opens it, and
 * writes the rank-ordered sum (rank 0's values first, so both ranks get the same bits) into out. */
int dbc_tpc_all_sum2(void* ch, int type, const float* mine, int64_t n, float* out, int timeout_ms);
/* dbc_sock_peer_gone on the channel's socket. */
int dbc_tpc_peer_gone(void* ch);
int dbc_tpc_free(void* ch);

#endif
