// Host BLAKE3 (default hash mode, 32-byte output): the tree and chunk layer over
// blake3_core.h. The single-buffer entry point is pf::kernels::blake3_digest()
// (page_kernels.h); these helpers expose the pieces the CUDA kernels mirror, so tests can
// check each level separately.
//
// Contract: pure functions of their inputs, thread-safe, no allocation, never fail.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pf::kernels::b3 {

// Chaining value of one chunk: `len` bytes at `chunk` (1..1024, or 0 for the empty input)
// with chunk counter `chunk_index`. With `root`, the chunk is the whole input and the result
// is the hash itself (its last block carries ROOT).
void chunk_cv(const std::uint8_t* chunk, std::size_t len, std::uint64_t chunk_index, bool root,
              std::uint32_t out[8]);

// Chaining values of `n` consecutive full 1024-byte chunks starting at `data`, with counters
// first_index .. first_index + n - 1 (never root). Uses the widest SIMD path the CPU has.
void full_chunk_cvs(const std::uint8_t* data, std::size_t n, std::uint64_t first_index,
                    std::uint32_t (*out)[8]);

// The 32 output bytes of a chaining value (words little-endian).
void cv_to_bytes(const std::uint32_t cv[8], std::uint8_t out[32]);

// Which path full_chunk_cvs() uses on this CPU: "avx2", "sse2" or "portable".
const char* simd_path();

}  // namespace pf::kernels::b3
