/* Deterministic KV bytes for the shim tests, in C so the C test client and the C++ tests
 * agree without shipping bytes: the row of token position t, layer l, half h (0 = K, 1 = V)
 * under seed s is a splitmix64 stream of (s, t, l, h). Rows are written where an engine
 * writes them: page-first layout [layer][K|V][token][kv_head][head_dim] (DESIGN §2).
 *
 * kvp_write_token / kvp_check_token work on one token slot of one page through a page
 * pointer from pf_page_ptr; kvp_hash hashes a byte range (FNV-1a 64). */
#ifndef PF_TESTS_SHIMS_KV_PATTERN_H_
#define PF_TESTS_SHIMS_KV_PATTERN_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "shims/include/processfork.h"

static inline uint64_t kvp_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static inline size_t kvp_dtype_bytes(uint32_t dtype) {
  switch (dtype) {
    case PF_DTYPE_FP32:
      return 4;
    case PF_DTYPE_FP8_E4M3:
    case PF_DTYPE_FP8_E5M2:
      return 1;
    default:
      return 2;
  }
}

static inline size_t kvp_token_bytes(const pf_pool_info* g) {
  return (size_t)g->kv_heads * g->head_dim * kvp_dtype_bytes(g->dtype);
}

static inline size_t kvp_row_offset(const pf_pool_info* g, uint32_t layer, uint32_t half,
                                    uint32_t slot) {
  return (((size_t)layer * 2 + half) * g->page_tokens + slot) * kvp_token_bytes(g);
}

static inline uint8_t kvp_byte(uint64_t seed, uint64_t token, uint32_t layer, uint32_t half,
                               size_t i) {
  const uint64_t word = kvp_mix(seed * 0x100000001b3ull ^ (token << 20) ^ ((uint64_t)layer << 8) ^
                                ((uint64_t)half << 4) ^ (uint64_t)(i / 8) << 32);
  return (uint8_t)(word >> (8 * (i % 8)));
}

/* Writes token position `token`'s rows (all layers, K and V) into slot `slot` of `page`. */
static inline void kvp_write_token(const pf_pool_info* g, void* page, uint32_t slot, uint64_t seed,
                                   uint64_t token) {
  const size_t tb = kvp_token_bytes(g);
  for (uint32_t l = 0; l < g->layers; ++l) {
    for (uint32_t h = 0; h < 2; ++h) {
      uint8_t* row = (uint8_t*)page + kvp_row_offset(g, l, h, slot);
      for (size_t i = 0; i < tb; ++i) row[i] = kvp_byte(seed, token, l, h, i);
    }
  }
}

/* 1 when slot `slot` of `page` holds token position `token`'s rows under `seed`. */
static inline int kvp_check_token(const pf_pool_info* g, const void* page, uint32_t slot,
                                  uint64_t seed, uint64_t token) {
  const size_t tb = kvp_token_bytes(g);
  for (uint32_t l = 0; l < g->layers; ++l) {
    for (uint32_t h = 0; h < 2; ++h) {
      const uint8_t* row = (const uint8_t*)page + kvp_row_offset(g, l, h, slot);
      for (size_t i = 0; i < tb; ++i) {
        if (row[i] != kvp_byte(seed, token, l, h, i)) return 0;
      }
    }
  }
  return 1;
}

static inline uint64_t kvp_hash(const void* p, size_t n, uint64_t h) {
  const uint8_t* b = (const uint8_t*)p;
  for (size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

#define KVP_HASH_INIT 0xcbf29ce484222325ull

#endif /* PF_TESTS_SHIMS_KV_PATTERN_H_ */
