/* sample.h — a grammar's mask of allowed tokens applied where a row of logits is sampled, in one pass over the row and
 * the packed mask as the matcher gives it (no −∞ copy of the row). Mirrored, in order, by SAMPLE_SYMBOLS in
 * src/tensor/native.ts (then dbc_last_error); test/tensor/native-abi.test.ts checks it. In libdbc.so, not in dbc.h's
 * ABI (the mlx glue does not carry it: sampling runs on the host whatever the backend).
 * A mask is `words` u32: bit (id & 31) of word (id >> 5) set = id allowed; ids at or past 32·words are not allowed.
 * NaN logits count as below −∞. src/model/sampler.ts holds the same rules in TypeScript (its fallback and the tests'
 * reference). */
#ifndef DBC_SAMPLE_H
#define DBC_SAMPLE_H
#include <stdint.h>

#define DBC_SAMPLE_NONE_ALLOWED -4 /* the mask allows no id of the row */

/* The allowed id of logits[0..n) with the largest logit, the lowest on ties; when no allowed logit is a number, the
 * lowest allowed id. Returns that id, or DBC_SAMPLE_NONE_ALLOWED. */
int dbc_masked_argmax(const float* logits, int64_t n, const uint32_t* mask, int64_t words);
/* Writes keys[0..count), in id order, for every allowed id whose logit v is >= floor: the sampler's sort key, the
 * float64 −v with the id in the low 29 bits of its mantissa (zero in a widened float32). Returns count (keys must hold
 * n). */
int dbc_masked_candidates(const float* logits, int64_t n, const uint32_t* mask, int64_t words, double floor, double* keys);

#endif
