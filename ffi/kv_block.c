/* kv_block.c — prefix-cache blocks (docs/prefix-cache.md §Save and restore): positions of one slot of a KV cache
 * [slots, kv_heads, length, head_dim] copied to a block [kv_heads, n, head_dim] and back, byte for byte. Both sides
 * hold a head's positions consecutively, so each head is one memcpy (two where a ring's run wraps past its end). */
#include "internal.h"

/* The cache's run [start, start + n) of `slot`, split where a ring wraps: `first` positions at index `at`, the rest at 0. */
static int block_run(const dbc_tensor* cache, int slot, int64_t start, int64_t n, int ring, const char* name, int64_t* at,
                     int64_t* first) {
  if (cache->ndim != 4) return dbc_fail(DBC_E_ARG, "%s: cache must be [slots, kv_heads, length, head_dim]", name);
  const int64_t L = cache->shape[2];
  if (slot < 0 || slot >= cache->shape[0])
    return dbc_fail(DBC_E_ARG, "%s: slot %d outside 0..%lld", name, slot, (long long)cache->shape[0] - 1);
  if (start < 0 || n < 0 || n > L || (!ring && start + n > L))
    return dbc_fail(DBC_E_ARG, "%s: positions [%lld, %lld) do not fit a cache of length %lld%s", name, (long long)start,
                    (long long)(start + n), (long long)L, ring ? " (ring)" : "");
  *at = ring && L ? start % L : start;
  *first = n < L - *at ? n : L - *at;
  return DBC_OK;
}

/* to_block: cache → block; else block → cache. */
static void copy_heads(const dbc_tensor* cache, const dbc_tensor* block, int slot, int64_t at, int64_t first, int64_t n,
                       int to_block) {
  const int64_t H = cache->shape[1], L = cache->shape[2], D = cache->shape[3];
  const size_t es = dbc_dtype_size(cache->dtype), row = (size_t)D * es;
  char *c = (char*)tdata(cache) + (size_t)slot * (size_t)(H * L) * row, *b = tdata(block);
  for (int64_t h = 0; h < H; h++) {
    char *ch = c + (size_t)(h * L) * row, *bh = b + (size_t)(h * n) * row;
    if (to_block) {
      memcpy(bh, ch + (size_t)at * row, (size_t)first * row);
      memcpy(bh + (size_t)first * row, ch, (size_t)(n - first) * row);
    } else {
      memcpy(ch + (size_t)at * row, bh, (size_t)first * row);
      memcpy(ch, bh + (size_t)first * row, (size_t)(n - first) * row);
    }
  }
}

int dbc_kv_block_read(void* ch, int slot, int64_t start, int64_t end, int ring, void** out) {
  dbc_tensor *cache, *block;
  int64_t at = 0, first = 0;
  int rc;
  if ((rc = dbc_check(ch, "kv_block_read cache", &cache))) return rc;
  if ((rc = block_run(cache, slot, start, end - start, ring, "kv_block_read", &at, &first))) return rc;
  const int64_t shape[3] = {cache->shape[1], end - start, cache->shape[3]};
  if ((rc = dbc_new(cache->dtype, 3, shape, &block))) return rc;
  copy_heads(cache, block, slot, at, first, end - start, 1);
  *out = block;
  return DBC_OK;
}

int dbc_kv_block_write(void* ch, void* bh, int slot, int64_t start, int ring) {
  dbc_tensor *cache, *block;
  int64_t at = 0, first = 0;
  int rc;
  if ((rc = dbc_check(ch, "kv_block_write cache", &cache)) || (rc = dbc_check(bh, "kv_block_write block", &block))) return rc;
  if (block->ndim != 3 || block->dtype != cache->dtype || (cache->ndim == 4 && (block->shape[0] != cache->shape[1] || block->shape[2] != cache->shape[3])))
    return dbc_fail(DBC_E_ARG, "kv_block_write: block must be %s [kv_heads, n, head_dim] of the cache's heads and head_dim",
                    dbc_dtype_name(cache->dtype));
  if (block->storage == cache->storage) return dbc_fail(DBC_E_ARG, "kv_block_write: the block is a view of the cache itself");
  if ((rc = block_run(cache, slot, start, block->shape[1], ring, "kv_block_write", &at, &first))) return rc;
  copy_heads(cache, block, slot, at, first, block->shape[1], 0);
  return DBC_OK;
}
