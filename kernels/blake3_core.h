// BLAKE3 compression core, shared by the host (blake3.cpp) and CUDA (cuda_kernels.cu) code.
//
// Written from the BLAKE3 specification (default hash mode, 32-byte output only): a
// ChaCha-like compression of a 64-byte block under a 32-byte chaining value, 7 rounds with a
// fixed message permutation between rounds. Inputs are split into 1024-byte chunks of 16
// blocks; chunk chaining values are combined by parent nodes in a left-balanced binary tree;
// the root node's compression carries the ROOT flag.
//
// Everything here is header-only and usable from host and device code. The round functions
// are templates over the word type W, so the host may instantiate them with a SIMD vector of
// words (several chunks in lock-step) as well as with plain uint32_t.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define PF_B3_HD __host__ __device__ __forceinline__
#else
#define PF_B3_HD inline __attribute__((always_inline))
#endif

// Full unrolling keeps the small word arrays in registers (device pass, host GCC, clang; the
// host pass of nvcc does not run this code).
#if defined(__CUDA_ARCH__) || defined(__clang__)
#define PF_B3_UNROLL _Pragma("unroll")
#elif defined(__GNUC__) && !defined(__CUDACC__)
#define PF_B3_UNROLL _Pragma("GCC unroll 16")
#else
#define PF_B3_UNROLL
#endif

namespace pf::kernels::b3 {

inline constexpr std::size_t kBlockBytes = 64;
inline constexpr std::size_t kChunkBytes = 1024;
inline constexpr std::size_t kBlocksPerChunk = kChunkBytes / kBlockBytes;
inline constexpr std::size_t kOutBytes = 32;

// Domain-separation flags (default hash mode uses only these four).
inline constexpr std::uint32_t kChunkStart = 1u << 0;
inline constexpr std::uint32_t kChunkEnd = 1u << 1;
inline constexpr std::uint32_t kParent = 1u << 2;
inline constexpr std::uint32_t kRoot = 1u << 3;

// The initialization vector (the same words as SHA-256's), as a function so device code can
// use it without a __constant__ array.
PF_B3_HD std::uint32_t iv(int i) {
  switch (i) {
    case 0:
      return 0x6A09E667u;
    case 1:
      return 0xBB67AE85u;
    case 2:
      return 0x3C6EF372u;
    case 3:
      return 0xA54FF53Au;
    case 4:
      return 0x510E527Fu;
    case 5:
      return 0x9B05688Cu;
    case 6:
      return 0x1F83D9ABu;
    default:
      return 0x5BE0CD19u;
  }
}

// x = x rotated right by N bits. In place, so no vector value is passed or returned by value.
template <int N, typename W>
PF_B3_HD void rotr(W& x) {
  x = (x >> N) | (x << (32 - N));
}

// The quarter-round mixing function G on state words a, b, c, d with message words x, y.
template <typename W>
PF_B3_HD void g(W* v, int a, int b, int c, int d, const W& x, const W& y) {
  v[a] = v[a] + v[b] + x;
  v[d] ^= v[a];
  rotr<16>(v[d]);
  v[c] = v[c] + v[d];
  v[b] ^= v[c];
  rotr<12>(v[b]);
  v[a] = v[a] + v[b] + y;
  v[d] ^= v[a];
  rotr<8>(v[d]);
  v[c] = v[c] + v[d];
  v[b] ^= v[c];
  rotr<7>(v[b]);
}

// One round: G over the four columns, then over the four diagonals.
template <typename W>
PF_B3_HD void mix_round(W* v, const W* m) {
  g(v, 0, 4, 8, 12, m[0], m[1]);
  g(v, 1, 5, 9, 13, m[2], m[3]);
  g(v, 2, 6, 10, 14, m[4], m[5]);
  g(v, 3, 7, 11, 15, m[6], m[7]);
  g(v, 0, 5, 10, 15, m[8], m[9]);
  g(v, 1, 6, 11, 12, m[10], m[11]);
  g(v, 2, 7, 8, 13, m[12], m[13]);
  g(v, 3, 4, 9, 14, m[14], m[15]);
}

// Applies the message permutation in place: new m[i] = old m[P[i]] with
// P = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8}.
template <typename W>
PF_B3_HD void permute(W* m) {
  W t[16];
  t[0] = m[2];
  t[1] = m[6];
  t[2] = m[3];
  t[3] = m[10];
  t[4] = m[7];
  t[5] = m[0];
  t[6] = m[4];
  t[7] = m[13];
  t[8] = m[1];
  t[9] = m[11];
  t[10] = m[12];
  t[11] = m[5];
  t[12] = m[9];
  t[13] = m[14];
  t[14] = m[15];
  t[15] = m[8];
  PF_B3_UNROLL
  for (int i = 0; i < 16; ++i) m[i] = t[i];
}

// Compresses one block in place: `cv` (8 words) is the input chaining value and receives the
// output chaining value; `m` (16 words, clobbered) is the block; the other words fill the
// state's last row. `counter_lo/hi`, `block_len` and `flags` may be per-lane for vector W.
template <typename W>
PF_B3_HD void compress(W* cv, W* m, const W& counter_lo, const W& counter_hi, const W& block_len,
                       const W& flags) {
  W v[16];
  PF_B3_UNROLL
  for (int i = 0; i < 8; ++i) v[i] = cv[i];
  v[8] = W{} + iv(0);  // `W{} + c` broadcasts a scalar for vector W.
  v[9] = W{} + iv(1);
  v[10] = W{} + iv(2);
  v[11] = W{} + iv(3);
  v[12] = counter_lo;
  v[13] = counter_hi;
  v[14] = block_len;
  v[15] = flags;
  mix_round(v, m);
  permute(m);
  mix_round(v, m);
  permute(m);
  mix_round(v, m);
  permute(m);
  mix_round(v, m);
  permute(m);
  mix_round(v, m);
  permute(m);
  mix_round(v, m);
  permute(m);
  mix_round(v, m);
  PF_B3_UNROLL
  for (int i = 0; i < 8; ++i) cv[i] = v[i] ^ v[i + 8];
}

// Scalar convenience: out = compress(cv, block) for one block given as 16 words.
PF_B3_HD void compress_words(const std::uint32_t* cv_in, const std::uint32_t* block_words,
                             std::uint64_t counter, std::uint32_t block_len, std::uint32_t flags,
                             std::uint32_t* cv_out) {
  std::uint32_t cv[8];
  std::uint32_t m[16];
  for (int i = 0; i < 8; ++i) cv[i] = cv_in[i];
  for (int i = 0; i < 16; ++i) m[i] = block_words[i];
  compress<std::uint32_t>(cv, m, static_cast<std::uint32_t>(counter),
                          static_cast<std::uint32_t>(counter >> 32), block_len, flags);
  for (int i = 0; i < 8; ++i) cv_out[i] = cv[i];
}

// A parent node: out = compress(IV, left || right, counter 0, 64 bytes, PARENT | extra_flags).
// `extra_flags` is kRoot for the tree's root, else 0. `out` may alias `left` or `right`.
PF_B3_HD void parent_cv(const std::uint32_t* left, const std::uint32_t* right,
                        std::uint32_t extra_flags, std::uint32_t* out) {
  std::uint32_t cv[8];
  std::uint32_t m[16];
  for (int i = 0; i < 8; ++i) {
    cv[i] = iv(i);
    m[i] = left[i];
    m[i + 8] = right[i];
  }
  compress<std::uint32_t>(cv, m, 0u, 0u, static_cast<std::uint32_t>(kBlockBytes),
                          kParent | extra_flags);
  for (int i = 0; i < 8; ++i) out[i] = cv[i];
}

}  // namespace pf::kernels::b3
