// Layout gather/scatter (DESIGN §3 kernels/): moves KV rows between pool pages, laid out
// page-first `[layer][K|V][token][kv_head][head_dim]`, and an engine's own per-layer K and V
// tensors (vLLM's blocks, SGLang's host pool, a transformers cache), in either direction.
//
// The engine side is described by strides, so one kernel serves every engine layout: for
// layer l, the K row of engine token t and kv head h starts at
//   k_ptrs[l] + (t / block_tokens) * block_stride + (t % block_tokens) * token_stride
//             + h * head_stride
// (V likewise from v_ptrs[l]) and holds head_dim contiguous elements of elem_bytes.
// Examples (element strides times elem_bytes):
//   vLLM 0.33, per layer [num_blocks, H, block_size, 2*D] (K then V in the last axis):
//     k_ptrs[l] = kv[l], v_ptrs[l] = kv[l] + D, block_tokens = block_size,
//     block_stride = H*block_size*2*D, token_stride = 2*D, head_stride = block_size*2*D
//   per layer (2, num_blocks, block_size, H, D) (vLLM before 0.33):
//     k_ptrs[l] = kv[l][0], v_ptrs[l] = kv[l][1], block_tokens = block_size,
//     block_stride = block_size*H*D, token_stride = H*D, head_stride = D
//   transformers, per layer (1, H, seq, D): block_tokens = seq (one block),
//     token_stride = D, head_stride = seq*D
//
// A copy is a list of runs: `count` consecutive tokens at engine token `engine_token` and
// slots [page_slot, page_slot + count) of one page, for the layers [layer_begin, layer_end).
// check_kv_copy() validates a job (ranges, overflow, null pointers) before anything is
// touched; every PageKernels implementation calls it first, so a rejected job writes
// nothing. Engine rows must not overlap each other within one job's destinations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/status.h"

namespace pf::kernels {

// The pool's page format (from its geometry).
struct KVPageFormat {
  std::uint32_t layers = 0;
  std::uint32_t kv_heads = 0;
  std::uint32_t head_dim = 0;
  std::uint32_t page_tokens = 0;
  std::uint32_t elem_bytes = 0;  // 1 (fp8), 2 (bf16/fp16) or 4 (fp32)

  std::size_t row_bytes() const { return std::size_t{head_dim} * elem_bytes; }
  std::size_t page_bytes() const {
    return std::size_t{layers} * 2 * page_tokens * kv_heads * row_bytes();
  }
};

// Where the engine keeps its KV (see the file comment). Addresses are in the memory the
// kernels serve (host memory for `host`, device-accessible addresses for `cuda`).
struct KVEngineLayout {
  std::span<const std::uint64_t> k_ptrs;  // one per pool layer
  std::span<const std::uint64_t> v_ptrs;  // one per pool layer
  std::uint64_t block_tokens = 0;
  std::int64_t block_stride = 0;  // bytes
  std::int64_t token_stride = 0;  // bytes
  std::int64_t head_stride = 0;   // bytes
};

struct KVRun {
  std::byte* page = nullptr;  // the page's address (start of its layer 0 K rows)
  std::uint32_t page_slot = 0;
  std::uint32_t count = 0;
  std::uint64_t engine_token = 0;
};

enum class KVDirection : std::uint8_t {
  kEngineToPages = 0,  // store: engine tensors -> pages
  kPagesToEngine = 1,  // load: pages -> engine tensors
};

struct KVCopy {
  KVPageFormat format;
  KVEngineLayout engine;
  std::span<const KVRun> runs;
  std::uint32_t layer_begin = 0;
  std::uint32_t layer_end = 0;  // exclusive; <= format.layers
  KVDirection direction = KVDirection::kEngineToPages;
};

// kInvalidArgument (naming the offending field or run) unless the job is well formed.
Status check_kv_copy(const KVCopy& job);

// Bytes a job moves: tokens * layers in range * 2 * kv_heads * row_bytes.
std::uint64_t kv_copy_bytes(const KVCopy& job);

// The address of one engine row (no checks).
inline std::byte* kv_engine_row(const KVEngineLayout& e, std::uint32_t layer, int kv,
                                std::uint64_t token, std::uint32_t head) {
  const std::uint64_t base = kv == 0 ? e.k_ptrs[layer] : e.v_ptrs[layer];
  const std::int64_t offset = static_cast<std::int64_t>(token / e.block_tokens) * e.block_stride +
                              static_cast<std::int64_t>(token % e.block_tokens) * e.token_stride +
                              static_cast<std::int64_t>(head) * e.head_stride;
  return reinterpret_cast<std::byte*>(base + static_cast<std::uint64_t>(offset));
}

// The address of one page row (layer, K|V, slot, head) (no checks).
inline std::byte* kv_page_row(const KVPageFormat& f, std::byte* page, std::uint32_t layer, int kv,
                              std::uint32_t slot, std::uint32_t head) {
  const std::size_t row =
      ((std::size_t{layer} * 2 + static_cast<std::size_t>(kv)) * f.page_tokens + slot) *
          f.kv_heads +
      head;
  return page + row * f.row_bytes();
}

// The host implementation (plain memcpy of rows; whole token rows when heads are packed).
// Checks the job first.
Status kv_copy_host(const KVCopy& job);

}  // namespace pf::kernels
