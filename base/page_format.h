// The page format (DESIGN §2): a pool's Geometry — layers, kv_heads, head_dim, dtype,
// page_tokens — and where each token's K and V rows sit inside a page.
//
// Page layout is page-first: [layer][K|V][token][kv_head][head_dim] in `dtype`, so the K
// block (and the V block) of one layer is contiguous and holds page_tokens token rows of
// kv_heads * head_dim elements. A page holds page_tokens tokens of KV for every layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/dtype.h"
#include "base/status.h"

namespace pf {

// K or V half of a layer inside a page.
enum class Half : std::uint32_t { kK = 0, kV = 1 };

struct Geometry {
  std::uint32_t layers = 0;
  std::uint32_t kv_heads = 0;
  std::uint32_t head_dim = 0;
  DType dtype = DType::kBF16;
  std::uint32_t page_tokens = 0;

  // Bytes of one token's row in one K (or V) block: kv_heads * head_dim * dtype size.
  std::size_t token_bytes() const { return std::size_t{kv_heads} * head_dim * dtype_bytes(dtype); }
  // Bytes of one layer's K (or V) block: page_tokens rows.
  std::size_t block_bytes() const { return std::size_t{page_tokens} * token_bytes(); }
  // Bytes of one page: layers * 2 blocks.
  std::size_t page_bytes() const { return std::size_t{layers} * 2 * block_bytes(); }
  // Byte offset, inside a page, of token slot `slot`'s row in `layer`'s K or V block.
  std::size_t offset(std::uint32_t layer, Half half, std::uint32_t slot) const {
    return (std::size_t{layer} * 2 + static_cast<std::uint32_t>(half)) * block_bytes() +
           std::size_t{slot} * token_bytes();
  }

  // Non-zero fields, page_tokens >= 1, sizes that fit in 32-bit page math. kInvalidArgument.
  Status validate() const;
  // "layers=32,kv_heads=8,head_dim=128,dtype=bf16,page_tokens=16" (parse_geometry's input).
  std::string to_string() const;
  bool operator==(const Geometry&) const = default;
};

// Presets: "tiny" (2 layers, 2 kv heads, head_dim 8, bf16, 4 tokens/page: 512-byte pages,
// for tests), "llama-3-8b" (32, 8, 128, bf16, 16: 2 MiB pages), "llama-3-70b-tp8" (80, 1,
// 128, bf16, 16: one tensor-parallel rank's share, 640 KiB pages). kNotFound otherwise.
// The page_tokens of 16 suits vLLM's CUDA backends; parse_geometry's "NAME:N" gives any other
// block size (vLLM's CPU backend needs a multiple of 32, 128 by default).
Result<Geometry> geometry_preset(std::string_view name);
std::vector<std::string> geometry_preset_names();
// A preset name, optionally with its page_tokens replaced ("llama-3-8b:128": 128-token
// pages, 16 MiB, for an engine whose block size is 128), or
// "layers=..,kv_heads=..,head_dim=..,dtype=..,page_tokens=.." (every key exactly once, any
// order). kInvalidArgument on a malformed spec or an invalid geometry.
Result<Geometry> parse_geometry(std::string_view spec);

}  // namespace pf

// The runtime's spelling (rt::Geometry, rt::DType, ...) of the same vocabulary.
namespace pf::rt {
using pf::DType;
using pf::dtype_bytes;
using pf::dtype_name;
using pf::Geometry;
using pf::geometry_preset;
using pf::geometry_preset_names;
using pf::Half;
using pf::parse_dtype;
using pf::parse_geometry;
}  // namespace pf::rt
