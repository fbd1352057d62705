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

// Parent nodes: out[i] = the (non-root) parent of in[2i] and in[2i+1], for i < n. `out` may
// be `in` (a tree level reduced in place). Uses the widest SIMD path the CPU has.
void parent_cvs(const std::uint32_t (*in)[8], std::size_t n, std::uint32_t (*out)[8]);

// Chaining value of the subtree over `bytes` bytes (0 only with root) whose first chunk has
// counter `first_chunk`: the whole input with `root` (the result is then the hash itself), or
// a node of a larger input's tree without it. A non-root subtree must be one the larger tree
// holds: first_chunk a multiple of a power of two >= its chunk count, and either exactly
// that many chunks, or the input's last chunks (its fold value on the right edge).
void subtree_cv(const std::uint8_t* data, std::size_t bytes, std::uint64_t first_chunk, bool root,
                std::uint32_t out[8]);

// The root of an input split into n >= 2 consecutive subtrees: cvs[0 .. n-2] are complete
// subtrees of one power-of-two chunk count each (subtree_cv without root, in order), and
// cvs[n-1] is the rest of the input (at most that many chunks, also without root). Writes
// the input's 32-byte hash. Lets the chunks of one large input be hashed in parallel.
void root_of_subtrees(const std::uint32_t (*cvs)[8], std::size_t n, std::uint8_t out[32]);

// The 32 output bytes of a chaining value (words little-endian).
void cv_to_bytes(const std::uint32_t cv[8], std::uint8_t out[32]);

// Which path full_chunk_cvs() uses on this CPU: "avx512", "avx2", "sse2" or "portable".
const char* simd_path();

}  // namespace pf::kernels::b3
