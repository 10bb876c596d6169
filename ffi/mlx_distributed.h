/* mlx_distributed.h — MLX distributed (ring over TCP, jaccl over Thunderbolt RDMA) for bun:ffi, in libdbc_mlx only.
 * Mirrored, in order, by MLX_DISTRIBUTED_SYMBOLS in src/tensor/native.ts (then dbc_last_error);
 * test/tensor/native-abi.test.ts checks it. Same rules as dbc.h: dbc_ prefix, opaque handles, 0 or a negative DBC_E_*
 * code, the message in dbc_last_error(). The backend reads its peers from the environment (design/mlx-c.md §5), so the
 * caller sets MLX_RANK, MLX_HOSTFILE or MLX_IBV_DEVICES + MLX_JACCL_COORDINATOR before dbc_dist_init. Every collective
 * runs on the CPU stream (Metal has none). */
#ifndef DBC_MLX_DISTRIBUTED_H
#define DBC_MLX_DISTRIBUTED_H
#include <stdint.h>

/* setenv(3) for the variables MLX reads (Bun's process.env does not reach the C environment); an empty value unsets */
int dbc_dist_setenv(const char* name, const char* value);
/* 1 when this libmlx was built with the backend ("ring", "jaccl", "mpi", "nccl", "any"), else 0 */
int dbc_dist_available(const char* backend);
/* Joins the group the environment describes; strict: fail instead of falling back to a group of one. Blocks until the
 * peers are connected, at most timeout_ms (0: no limit): MLX's ring waits forever for a neighbour that never comes, so
 * the join runs on a helper thread, and after a timeout that thread is left blocked and the process should exit. */
int dbc_dist_init(const char* backend, int strict, int timeout_ms, void** group);
/* rank / size written to out[0], out[1] */
int dbc_dist_info(void* group, int32_t* out);
/* In-place all_sum of `count` elements of a host buffer (f32, f16, bf16, i32, u32, u8), evaluated before it returns. */
int dbc_dist_all_sum_host(void* group, void* data, int64_t count, int dtype);
/* all_sum of a tensor of the mlx backend, lazy like every other op (evaluated with the step). */
int dbc_dist_all_sum(void* group, void* x, void** out);
int dbc_dist_free(void* group);
/* Rank liveness while blocked in collectives (rank_watchdog.c): rank 0 listens for `expected` ranks on an ephemeral
 * port; the others connect to it. Once armed, a rank whose connection closes makes this process print `message` and
 * exit (code 75) after a short grace; disarm before a clean shutdown. */
int dbc_dist_watchdog_listen(int32_t expected, const char* message, int32_t* port_out);
int dbc_dist_watchdog_connect(const char* host, int32_t port, const char* message);
int dbc_dist_watchdog_disarm(void);
#endif
