// Host BLAKE3: chunk chaining values (scalar, or several chunks in lock-step with SIMD vector
// lanes) and the left-balanced tree over them.
//
// DESIGN: the input is known up front, so the tree is built with a stack of subtree chaining
// values (CvStack): after every chunk except the last, complete subtrees are merged eagerly
// (the number of chunks so far, read in binary, says which: one merge per trailing zero
// bit). None of those merges can be the root, because at least the last chunk is still to
// come. The last chunk's value is then folded into the stack from the right, and the final
// fold carries ROOT. This gives the same tree as pairwise reduction level by level (an odd
// last node carried up unchanged), which is what the CUDA kernels do. The same stack over
// the values of aligned power-of-two subtrees (root_of_subtrees) gives the same root, so
// the host kernels hash the subtrees of one large input on several threads.
#include "kernels/blake3.h"

#include <bit>
#include <cstring>

#include "kernels/blake3_core.h"
#include "kernels/page_kernels.h"

namespace pf::kernels::b3 {
namespace {

inline std::uint32_t load_le32(const std::uint8_t* p) {
  std::uint32_t w;
  std::memcpy(&w, p, 4);
  if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap32(w);
  return w;
}

inline void load_block(const std::uint8_t* p, std::uint32_t m[16]) {
  for (int i = 0; i < 16; ++i) m[i] = load_le32(p + 4 * i);
}

// Transposes the N x N word matrix in r (r[i][j] -> r[j][i]) by swapping off-diagonal blocks
// of B x B words, for B = N/2 .. 1: two two-source shuffles per row pair and stage (AVX-512:
// vpermt2d), instead of N * N scalar loads and stores.
template <typename V, int N>
PF_B3_HD void transpose_words(V* r) {
  for (int b = N / 2; b >= 1; b /= 2) {
    V lo, hi;  // shuffle indices: < N from the first row, >= N from the second
    for (int j = 0; j < N; ++j) {
      lo[j] = static_cast<std::uint32_t>((j & b) ? N + j - b : j);
      hi[j] = static_cast<std::uint32_t>((j & b) ? N + j : j + b);
    }
    for (int i = 0; i < N; ++i) {
      if (i & b) continue;
      const V x = r[i];
      const V y = r[i + b];
      r[i] = __builtin_shuffle(x, y, lo);
      r[i + b] = __builtin_shuffle(x, y, hi);
    }
  }
}

// N inputs in lock-step: lane l of every vector word belongs to input l. Two kinds
// (kParents): N consecutive full chunks (`data` + l * 1024, 16 blocks each, counter
// first_index + l, CHUNK_START/CHUNK_END on the first/last block), or N parent nodes
// (`data` + l * 64: one 64-byte block, the left and right chaining values; counter 0, PARENT).
// V is a GCC vector of N uint32_t. Always inlined so that a caller compiled for a wider ISA
// (target("avx2")) gets the whole body in that ISA. Every input is read before any output is
// written, so `out` may overlap the inputs.
template <typename V, int N, bool kParents>
PF_B3_HD void lanes_cvs(const std::uint8_t* data, std::uint64_t first_index,
                        std::uint32_t (*out)[8], int valid = N) {
  constexpr std::size_t kStride = kParents ? kBlockBytes : kChunkBytes;
  constexpr std::size_t kBlocks = kParents ? 1 : kBlocksPerChunk;
  V cv[8];
  for (int i = 0; i < 8; ++i) cv[i] = V{} + iv(i);
  V counter_lo{};
  V counter_hi{};
  if constexpr (!kParents) {
    for (int l = 0; l < N; ++l) {
      const std::uint64_t c = first_index + static_cast<std::uint64_t>(l);
      counter_lo[l] = static_cast<std::uint32_t>(c);
      counter_hi[l] = static_cast<std::uint32_t>(c >> 32);
    }
  }
  const V block_len = V{} + static_cast<std::uint32_t>(kBlockBytes);
  for (std::size_t b = 0; b < kBlocks; ++b) {
    V m[16];
    if constexpr (N == 16 && std::endian::native == std::endian::little) {
      // One 64-byte block per lane is one vector: load the rows, transpose in registers.
      // Lanes past `valid` repeat the last valid input (never read past it); dropped below.
      for (int l = 0; l < N; ++l) {
        const std::size_t c = static_cast<std::size_t>(l < valid ? l : valid - 1);
        std::memcpy(&m[l], data + c * kStride + b * kBlockBytes, sizeof(V));
        // The next N inputs' same block, into the cache while this one is compressed (the
        // hardware prefetchers do not follow N interleaved 1 KiB streams). A prefetch past
        // the input is harmless (never faults).
        if constexpr (!kParents) {
          const std::uintptr_t next =
              reinterpret_cast<std::uintptr_t>(data) + (N + l) * kStride + b * kBlockBytes;
          __builtin_prefetch(reinterpret_cast<const void*>(next), 0, 3);
        }
      }
      transpose_words<V, N>(m);
    } else {
      // Transpose through memory: words[w][l] = word w of lane l's block.
      alignas(64) std::uint32_t words[16][N];
      for (int l = 0; l < N; ++l) {
        const std::size_t c = static_cast<std::size_t>(l < valid ? l : valid - 1);
        const std::uint8_t* p = data + c * kStride + b * kBlockBytes;
        for (int w = 0; w < 16; ++w) words[w][l] = load_le32(p + 4 * w);
      }
      for (int w = 0; w < 16; ++w) std::memcpy(&m[w], words[w], sizeof(V));
    }
    std::uint32_t f = kParents ? kParent : 0u;
    if (!kParents && b == 0) f |= kChunkStart;
    if (!kParents && b == kBlocks - 1) f |= kChunkEnd;
    compress<V>(cv, m, counter_lo, counter_hi, block_len, V{} + f);
  }
  for (int l = 0; l < valid; ++l) {
    for (int i = 0; i < 8; ++i) out[l][i] = cv[i][l];
  }
}

typedef std::uint32_t V4 __attribute__((vector_size(16)));

template <bool kParents>
void cvs_x4(const std::uint8_t* data, std::uint64_t first_index, std::uint32_t (*out)[8],
            int valid) {
  lanes_cvs<V4, 4, kParents>(data, first_index, out, valid);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define PF_B3_HAVE_AVX2_PATH 1
typedef std::uint32_t V8 __attribute__((vector_size(32)));

template <bool kParents>
__attribute__((target("avx2"))) void cvs_x8_avx2(const std::uint8_t* data,
                                                 std::uint64_t first_index, std::uint32_t (*out)[8],
                                                 int valid) {
  lanes_cvs<V8, 8, kParents>(data, first_index, out, valid);
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

// 16 chunks in lock-step; AVX-512 also rotates in one instruction (vprord), which AVX2 lacks.
typedef std::uint32_t V16 __attribute__((vector_size(64)));

// `valid` (1..16) chunks at data; fewer than 16 cost as much as 16, still less than the
// narrower paths and the scalar tail together.
template <bool kParents>
__attribute__((target("avx512f"))) void cvs_x16_avx512(const std::uint8_t* data,
                                                       std::uint64_t first_index,
                                                       std::uint32_t (*out)[8], int valid) {
  lanes_cvs<V16, 16, kParents>(data, first_index, out, valid);
}

bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}
#endif

}  // namespace

void chunk_cv(const std::uint8_t* chunk, std::size_t len, std::uint64_t chunk_index, bool root,
              std::uint32_t out[8]) {
  std::uint32_t cv[8];
  for (int i = 0; i < 8; ++i) cv[i] = iv(i);
  const std::uint32_t lo = static_cast<std::uint32_t>(chunk_index);
  const std::uint32_t hi = static_cast<std::uint32_t>(chunk_index >> 32);
  // A chunk has ceil(len / 64) blocks, at least one (the empty input is one empty block).
  const std::size_t blocks = len == 0 ? 1 : (len + kBlockBytes - 1) / kBlockBytes;
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::size_t off = b * kBlockBytes;
    const std::size_t n = len - off < kBlockBytes ? len - off : kBlockBytes;
    std::uint32_t m[16];
    if (n == kBlockBytes) {
      load_block(chunk + off, m);
    } else {  // the last block, zero-padded
      std::uint8_t padded[kBlockBytes] = {};
      if (n > 0) std::memcpy(padded, chunk + off, n);
      load_block(padded, m);
    }
    std::uint32_t f = 0;
    if (b == 0) f |= kChunkStart;
    if (b == blocks - 1) f |= kChunkEnd | (root ? kRoot : 0u);
    compress<std::uint32_t>(cv, m, lo, hi, static_cast<std::uint32_t>(n), f);
  }
  for (int i = 0; i < 8; ++i) out[i] = cv[i];
}

namespace {

// The widest SIMD path for n inputs of one kind (lanes_cvs); the caller does inputs the
// narrow paths leave (fewer than 4) itself.
template <bool kParents>
std::size_t simd_cvs(const std::uint8_t* data, std::size_t n, std::uint64_t first_index,
                     std::uint32_t (*out)[8]) {
  constexpr std::size_t kStride = kParents ? kBlockBytes : kChunkBytes;
  std::size_t i = 0;
#if defined(PF_B3_HAVE_AVX2_PATH)
  if (cpu_has_avx512()) {
    for (; i < n; i += 16) {
      const int valid = static_cast<int>(n - i < 16 ? n - i : 16);
      cvs_x16_avx512<kParents>(data + i * kStride, first_index + i, out + i, valid);
    }
    return n;
  }
  if (cpu_has_avx2()) {
    for (; i + 8 <= n; i += 8)
      cvs_x8_avx2<kParents>(data + i * kStride, first_index + i, out + i, 8);
  }
#endif
  for (; i + 4 <= n; i += 4) cvs_x4<kParents>(data + i * kStride, first_index + i, out + i, 4);
  return i;
}

}  // namespace

void full_chunk_cvs(const std::uint8_t* data, std::size_t n, std::uint64_t first_index,
                    std::uint32_t (*out)[8]) {
  for (std::size_t i = simd_cvs<false>(data, n, first_index, out); i < n; ++i) {
    chunk_cv(data + i * kChunkBytes, kChunkBytes, first_index + i, false, out[i]);
  }
}

void parent_cvs(const std::uint32_t (*in)[8], std::size_t n, std::uint32_t (*out)[8]) {
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(in);
  for (std::size_t i = simd_cvs<true>(bytes, n, 0, out); i < n; ++i) {
    std::uint32_t left[8], right[8];
    std::memcpy(left, in[2 * i], sizeof(left));
    std::memcpy(right, in[2 * i + 1], sizeof(right));
    parent_cv(left, right, 0, out[i]);
  }
}

void cv_to_bytes(const std::uint32_t cv[8], std::uint8_t out[32]) {
  for (int i = 0; i < 8; ++i) {
    out[4 * i + 0] = static_cast<std::uint8_t>(cv[i]);
    out[4 * i + 1] = static_cast<std::uint8_t>(cv[i] >> 8);
    out[4 * i + 2] = static_cast<std::uint8_t>(cv[i] >> 16);
    out[4 * i + 3] = static_cast<std::uint8_t>(cv[i] >> 24);
  }
}

const char* simd_path() {
#if defined(PF_B3_HAVE_AVX2_PATH)
  if (cpu_has_avx512()) return "avx512";
  if (cpu_has_avx2()) return "avx2";
#endif
#if defined(__SSE2__)
  return "sse2";
#else
  return "portable";
#endif
}

}  // namespace pf::kernels::b3

namespace pf::kernels::b3 {
namespace {

// Chaining values of complete subtrees, left to right; at most one per bit of their count.
// push() merges complete subtrees eagerly (the count so far, in binary, says which: one
// merge per trailing zero bit); none of those merges can be the root, because at least one
// more value is still to come. fold() then folds the last value in from the right, the
// final fold carrying `root_flag`.
class CvStack {
 public:
  void push(const std::uint32_t cv[8]) { push_subtree(cv, 0); }
  // The value of a complete subtree of 2^log2_chunks chunks; the chunks so far must be a
  // multiple of that (every value on the stack is then of a subtree at least as large).
  void push_subtree(const std::uint32_t cv[8], int log2_chunks) {
    std::memcpy(stack_[depth_++], cv, sizeof(stack_[0]));
    count_ += std::uint64_t{1} << log2_chunks;
    for (std::uint64_t t = count_ >> log2_chunks; (t & 1) == 0; t >>= 1) {
      --depth_;
      parent_cv(stack_[depth_ - 1], stack_[depth_], 0, stack_[depth_ - 1]);
    }
  }
  void fold(std::uint32_t cv[8], std::uint32_t root_flag) {
    while (depth_ > 0) {
      --depth_;
      parent_cv(stack_[depth_], cv, depth_ == 0 ? root_flag : 0u, cv);
    }
  }

 private:
  std::uint32_t stack_[64][8];
  int depth_ = 0;
  std::uint64_t count_ = 0;
};

}  // namespace

void subtree_cv(const std::uint8_t* p, std::size_t bytes, std::uint64_t first_chunk, bool root,
                std::uint32_t out[8]) {
  if (bytes <= kChunkBytes) {
    chunk_cv(p, bytes, first_chunk, root, out);
    return;
  }
  const std::uint64_t n_chunks = (bytes + kChunkBytes - 1) / kChunkBytes;
  // A full last chunk is hashed with the others (its value is the same as chunk_cv's
  // without ROOT); a short one on its own.
  const std::uint64_t n_full = bytes / kChunkBytes;
  CvStack stack;
  // Full chunks are hashed kGroup at a time; complete subtrees among them are reduced with
  // parent nodes in SIMD lanes too (level by level, in place), other chunks are pushed one
  // by one and the last value is folded.
  constexpr int kLog2Group = 7;
  constexpr std::size_t kGroup = std::size_t{1} << kLog2Group;
  std::uint32_t group[kGroup][8];
  std::uint64_t done = 0;
  while (done < n_full) {
    const std::size_t g = static_cast<std::size_t>(n_full - done < kGroup ? n_full - done : kGroup);
    full_chunk_cvs(p + done * kChunkBytes, g, first_chunk + done, group);
    // A group of a power-of-two count >= 2 (aligned: done is a multiple of kGroup) is one
    // complete subtree: reduce it in SIMD lanes. Pushed whole when more chunks follow; when
    // it ends the input its value is the last one, folded below, unless it is the whole
    // input's root (its top parent carries ROOT: the chunk-by-chunk path does that).
    const bool whole_subtree = g >= 2 && std::has_single_bit(g);
    const bool last = done + g == n_chunks;
    if (whole_subtree && (!last || !root || done > 0)) {
      for (std::size_t width = g / 2; width >= 1; width /= 2) parent_cvs(group, width, group);
      if (last) {
        std::memcpy(out, group[0], sizeof(group[0]));
      } else {
        stack.push_subtree(group[0], std::countr_zero(g));
      }
      done += g;
      continue;
    }
    for (std::size_t j = 0; j < g; ++j) {
      if (done + j + 1 == n_chunks) {
        std::memcpy(out, group[j], sizeof(group[j]));  // the last chunk: folded below
      } else {
        stack.push(group[j]);
      }
    }
    done += g;
  }
  if (n_full < n_chunks) {
    chunk_cv(p + done * kChunkBytes, bytes - done * kChunkBytes, first_chunk + done,
             /*root=*/false, out);
  }
  stack.fold(out, root ? kRoot : 0u);
}

void root_of_subtrees(const std::uint32_t (*cvs)[8], std::size_t n, std::uint8_t out[32]) {
  CvStack stack;
  for (std::size_t i = 0; i + 1 < n; ++i) stack.push(cvs[i]);
  std::uint32_t cv[8];
  std::memcpy(cv, cvs[n - 1], sizeof(cv));
  stack.fold(cv, kRoot);
  cv_to_bytes(cv, out);
}

}  // namespace pf::kernels::b3

namespace pf::kernels {

Digest blake3_digest(const void* data, std::size_t bytes) {
  Digest d;
  std::uint32_t cv[8];
  b3::subtree_cv(static_cast<const std::uint8_t*>(data), bytes, 0, /*root=*/true, cv);
  b3::cv_to_bytes(cv, d.bytes.data());
  return d;
}

}  // namespace pf::kernels
