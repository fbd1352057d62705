// check_kv_copy() and the host implementation of the layout gather/scatter (kv_layout.h).
#include "kernels/kv_layout.h"

#include <cstring>
#include <limits>
#include <string>

namespace pf::kernels {
namespace {

Status invalid(const std::string& what) {
  return PF_ERROR(Code::kInvalidArgument, "kv copy: " + what);
}

}  // namespace

Status check_kv_copy(const KVCopy& job) {
  const KVPageFormat& f = job.format;
  if (f.layers == 0 || f.kv_heads == 0 || f.head_dim == 0 || f.page_tokens == 0) {
    return invalid("the page format has a zero dimension");
  }
  if (f.elem_bytes != 1 && f.elem_bytes != 2 && f.elem_bytes != 4) {
    return invalid("element size " + std::to_string(f.elem_bytes) + " is not 1, 2 or 4 bytes");
  }
  if (job.direction != KVDirection::kEngineToPages &&
      job.direction != KVDirection::kPagesToEngine) {
    return invalid("unknown direction");
  }
  if (job.layer_begin >= job.layer_end || job.layer_end > f.layers) {
    return invalid(
        "layers [" + std::to_string(job.layer_begin) + ", " + std::to_string(job.layer_end) +
        ") are not a non-empty range within the pool's " + std::to_string(f.layers) + " layers");
  }
  const KVEngineLayout& e = job.engine;
  if (e.k_ptrs.size() != f.layers || e.v_ptrs.size() != f.layers) {
    return invalid("the engine layout has " + std::to_string(e.k_ptrs.size()) + " K and " +
                   std::to_string(e.v_ptrs.size()) + " V layer pointers; the pool has " +
                   std::to_string(f.layers) + " layers");
  }
  for (std::uint32_t l = job.layer_begin; l < job.layer_end; ++l) {
    if (e.k_ptrs[l] == 0 || e.v_ptrs[l] == 0) {
      return invalid("layer " + std::to_string(l) + " has a null K or V pointer");
    }
  }
  if (e.block_tokens == 0) return invalid("block_tokens is 0");
  if (e.block_stride < 0 || e.token_stride < 0 || e.head_stride < 0) {
    return invalid("negative strides are not supported");
  }
  for (std::size_t i = 0; i < job.runs.size(); ++i) {
    const KVRun& r = job.runs[i];
    const std::string which = "run " + std::to_string(i);
    if (r.page == nullptr) return invalid(which + " has a null page");
    if (r.count == 0) return invalid(which + " has count 0");
    if (r.page_slot >= f.page_tokens || r.count > f.page_tokens - r.page_slot) {
      return invalid(which + ": slots [" + std::to_string(r.page_slot) + ", " +
                     std::to_string(std::uint64_t{r.page_slot} + r.count) + ") exceed the page's " +
                     std::to_string(f.page_tokens) + " tokens");
    }
    if (r.engine_token > std::numeric_limits<std::uint64_t>::max() - r.count) {
      return invalid(which + ": engine tokens overflow");
    }
    // The furthest engine byte must be representable: blocks * block_stride etc. in int64.
    const std::uint64_t last = r.engine_token + r.count - 1;
    const long double far = static_cast<long double>(last / e.block_tokens) * e.block_stride +
                            static_cast<long double>(e.block_tokens) * e.token_stride +
                            static_cast<long double>(f.kv_heads) * e.head_stride;
    if (far > static_cast<long double>(std::numeric_limits<std::int64_t>::max())) {
      return invalid(which + ": engine offsets overflow");
    }
  }
  return Status::ok();
}

std::uint64_t kv_copy_bytes(const KVCopy& job) {
  std::uint64_t tokens = 0;
  for (const KVRun& r : job.runs) tokens += r.count;
  return tokens * (job.layer_end - job.layer_begin) * 2 * job.format.kv_heads *
         job.format.row_bytes();
}

Status kv_copy_host(const KVCopy& job) {
  PF_TRY(check_kv_copy(job));
  const KVPageFormat& f = job.format;
  const KVEngineLayout& e = job.engine;
  const std::size_t row = f.row_bytes();
  // Heads packed back to back on the engine side: one memcpy per token row of all heads.
  const bool packed = e.head_stride == static_cast<std::int64_t>(row);
  const bool store = job.direction == KVDirection::kEngineToPages;
  for (const KVRun& r : job.runs) {
    for (std::uint32_t l = job.layer_begin; l < job.layer_end; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        for (std::uint32_t t = 0; t < r.count; ++t) {
          const std::uint64_t token = r.engine_token + t;
          const std::uint32_t slot = r.page_slot + t;
          if (packed) {
            std::byte* p = kv_page_row(f, r.page, l, kv, slot, 0);
            std::byte* q = kv_engine_row(e, l, kv, token, 0);
            const std::size_t n = row * f.kv_heads;
            store ? std::memcpy(p, q, n) : std::memcpy(q, p, n);
            continue;
          }
          for (std::uint32_t h = 0; h < f.kv_heads; ++h) {
            std::byte* p = kv_page_row(f, r.page, l, kv, slot, h);
            std::byte* q = kv_engine_row(e, l, kv, token, h);
            store ? std::memcpy(p, q, row) : std::memcpy(q, p, row);
          }
        }
      }
    }
  }
  return Status::ok();
}

}  // namespace pf::kernels
