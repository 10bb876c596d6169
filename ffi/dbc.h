/* dbc.h — the tensor and kernel ABI that JavaScript calls through bun:ffi: libdbc.so (the cpu shim) and libdbc_mlx (the
 * mlx glue) both export it. Mirrored, in order, by SYMBOLS in src/tensor/native.ts. It is one of four C headers
 * bun:ffi opens; the others are tp_socket.h (TP_SOCKET_SYMBOLS), mlx_distributed.h (MLX_DISTRIBUTED_SYMBOLS) and
 * macos/dbc_macos.h (MACOS_SYMBOLS), and test/tensor/native-abi.test.ts holds each table to its header.
 *
 * Rules (docs/architecture.md, design/style.md §10), shared by all four headers:
 *  - every symbol starts with dbc_; handles are opaque pointers (void*); no structs by value, no callbacks;
 *  - every function returns 0 on success or a negative DBC_E_* code, and dbc_last_error() holds the message;
 *  - results are written through out-pointers (void** for new tensors);
 *  - tensors are row-major and contiguous; activations are f32, weights may be f32/f16/bf16 or MLX affine-quantized u32.
 * src/tensor/native.ts declares these in the same order; test/tensor/native-abi.test.ts checks names, order and arity.
 */
#ifndef DBC_H
#define DBC_H
#include <stdint.h>

#define DBC_ABI_VERSION 2

/* dtypes */
#define DBC_F32 0
#define DBC_F16 1
#define DBC_BF16 2
#define DBC_U32 3
#define DBC_I32 4
#define DBC_U8 5

/* error codes */
#define DBC_OK 0
#define DBC_E_ARG -1     /* bad argument: null handle, bad shape, unsupported dtype */
#define DBC_E_NOMEM -2   /* allocation failed */
#define DBC_E_STATE -3   /* library not initialised or used after shutdown */

/* library */
const char* dbc_last_error(void);
int dbc_abi_version(void);
const char* dbc_backend_name(void); /* "cpu", or "mlx <version> (<device>)" */
int dbc_init(int threads);
int dbc_thread_count(void);
int64_t dbc_live_bytes(void);

/* tensors */
int dbc_tensor_new(int dtype, int ndim, const int64_t* shape, void** out);
int dbc_tensor_wrap(int dtype, int ndim, const int64_t* shape, void* data, int64_t nbytes, void** out);
int dbc_tensor_view(void* t, int ndim, const int64_t* shape, int64_t offset_elems, void** out);
int dbc_tensor_free(void* t);
int dbc_tensor_write(void* t, const void* src, int64_t nbytes, int64_t offset_bytes);
int dbc_tensor_read(void* t, void* dst, int64_t nbytes, int64_t offset_bytes);
int dbc_tensor_info(void* t, int64_t* info);

/* conversions and layout */
int dbc_astype(void* x, int dtype, void** out);
int dbc_transpose(void* x, int ndim, const int64_t* perm, void** out);
int dbc_concat(void* a, void* b, int axis, void** out);
int dbc_slice(void* x, int axis, int64_t start, int64_t end, void** out);

/* linear algebra */
int dbc_matmul(void* a, void* b, void** out);
int dbc_linear(void* x, void* w, void* bias, void** out);
/* precise: keep x in float (the cpu decode kernels otherwise round x to int8 per group for 4- and 8-bit weights) */
int dbc_quantized_linear(void* x, void* wq, void* scales, void* biases, void* bias, int group_size, int bits, int precise, void** out);
/* Puts a quantized weight in the layout its kernel reads, now rather than at its first quantized_linear. Returns 1 when
 * the kernel keeps a copy of its own (the cpu shim repacks 4-bit weights on AVX-512 VNNI machines and keeps the copy
 * with the weight), 0 when it reads the weight as it is (MLX), or an error code. */
int dbc_quantized_prepare(void* wq, void* scales, void* biases, int group_size, int bits);
int dbc_dequantize(void* wq, void* scales, void* biases, int group_size, int bits, void** out);
int dbc_embedding(void* table, void* ids, void** out);
int dbc_quantized_embedding(void* wq, void* scales, void* biases, int group_size, int bits, void* ids, void** out);
/* Quantized weights: MLX affine (scales and biases in a float dtype), or mxfp4 when biases is NULL (bits 4, group 32,
 * u8 E8M0 scales). */

/* mixture of experts: x [rows, K] (or [rows, k, K]) through expert indices[r, j] of w [E, N, K] (dense when scales is
 * NULL, else quantized as above), plus bias [E, N] → [rows, k, N]; then Σ_j weights[r, j] · x[r, j, :] → [rows, N] */
int dbc_gather_linear(void* x, void* w, void* scales, void* biases, void* bias, void* indices, int group_size, int bits, void** out);
int dbc_weighted_sum(void* x, void* weights, void** out);

/* linear-attention recurrences over per-slot states updated in place; a row at position 0 starts from a zero state.
 * causal_conv: x [rows, C], weight [C, K], state f32 [slots, K-1, C] → [rows, C].
 * gated_delta: q, k [rows, Hk, Dk], v [rows, Hv, Dv], a, b [rows, Hv], a_log, dt_bias [Hv], state f32 [slots, Hv, Dv, Dk]
 * → y [rows, Hv, Dv] (mlx-lm gated_delta_update). */
int dbc_causal_conv(void* x, void* weight, void* state, void* slots, void* positions, void** out);
int dbc_gated_delta(void* q, void* k, void* v, void* a, void* b, void* a_log, void* dt_bias, void* state, void* slots, void* positions, void** out);

/* normalisation, position, attention */
int dbc_rms_norm(void* x, void* weight, float eps, void** out);
int dbc_rope(void* x, void* positions, int dims, int traditional, float scale, void* inv_freq, void** out);
/* ring != 0: the cache keeps the last max_len positions, position p at index p % max_len (sliding-window layers) */
int dbc_kv_write(void* cache, void* x, void* slots, void* positions, int ring);
int dbc_attention(void* q, void* k_cache, void* v_cache, void* slots, void* positions, float scale, void* mask,
                  int causal, int kv_length, int window, int ring, void* sinks, void** out);

/* elementwise and reductions */
int dbc_add(void* a, void* b, void** out);
int dbc_mul(void* a, void* b, void** out);
int dbc_scale(void* x, float s, void** out);
int dbc_silu(void* x, void** out);
int dbc_tanh(void* x, void** out);
int dbc_gelu(void* x, int approximate, void** out);
/* activation: 0 silu, 1 gelu, 2 gelu tanh, 3 GPT-OSS clipped swiglu, 4 sigmoid */
int dbc_glu(void* gate, void* up, int activation, void** out);
int dbc_softmax(void* x, void** out);
int dbc_argmax(void* x, void** out);
int dbc_topk(void* x, int k, void** values, void** indices);

/* measurement */
int dbc_memory_read_bench(int64_t bytes, int iterations, int threads, double* seconds);

/* prefix-cache blocks: positions [start, end) of `slot` of a cache [slots, kv_heads, length, head_dim] copied as they
 * are (the cache's dtype, no conversion) into a new block [kv_heads, end - start, head_dim], and a block written back
 * at [start, start + n). ring != 0: position p at index p % length, so a run may wrap (at most length positions). */
int dbc_kv_block_read(void* cache, int slot, int64_t start, int64_t end, int ring, void** out);
int dbc_kv_block_write(void* cache, void* block, int slot, int64_t start, int ring);

#endif
