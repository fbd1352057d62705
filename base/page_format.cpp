#include "base/page_format.h"

#include <charconv>
#include <map>

namespace pf {

Status Geometry::validate() const {
  if (layers == 0 || kv_heads == 0 || head_dim == 0 || page_tokens == 0) {
    return PF_ERROR(Code::kInvalidArgument, "geometry has a zero field: " + to_string());
  }
  // Page ids are 32-bit and a page must fit comfortably in a size_t offset computation.
  constexpr std::size_t kMaxPageBytes = std::size_t{1} << 34;
  if (layers > 4096 || kv_heads > 4096 || head_dim > 65536 || page_tokens > 65536 ||
      page_bytes() > kMaxPageBytes) {
    return PF_ERROR(Code::kInvalidArgument, "geometry too large: " + to_string());
  }
  return Status::ok();
}

std::string Geometry::to_string() const {
  return "layers=" + std::to_string(layers) + ",kv_heads=" + std::to_string(kv_heads) +
         ",head_dim=" + std::to_string(head_dim) + ",dtype=" + std::string(dtype_name(dtype)) +
         ",page_tokens=" + std::to_string(page_tokens);
}

Result<Geometry> geometry_preset(std::string_view name) {
  if (name == "tiny") return Geometry{2, 2, 8, DType::kBF16, 4};
  if (name == "llama-3-8b") return Geometry{32, 8, 128, DType::kBF16, 16};
  if (name == "llama-3-70b-tp8") return Geometry{80, 1, 128, DType::kBF16, 16};
  return PF_ERROR(Code::kNotFound, "unknown geometry preset '" + std::string(name) + "'");
}

std::vector<std::string> geometry_preset_names() {
  return {"tiny", "llama-3-8b", "llama-3-70b-tp8"};
}

Result<Geometry> parse_geometry(std::string_view spec) {
  if (spec.find('=') == std::string_view::npos) {
    const std::size_t colon = spec.find(':');
    const std::string_view name = spec.substr(0, colon);
    auto preset = geometry_preset(name);
    if (!preset.is_ok()) {
      return PF_ERROR(Code::kInvalidArgument,
                      "'" + std::string(spec) +
                          "' is neither a preset (tiny, llama-3-8b, llama-3-70b-tp8, each "
                          "optionally :PAGE_TOKENS) nor "
                          "layers=..,kv_heads=..,head_dim=..,dtype=..,page_tokens=..");
    }
    if (colon == std::string_view::npos) return preset;
    // "llama-3-8b:128": the preset's model with 128-token pages (an engine's block size).
    const std::string_view tokens = spec.substr(colon + 1);
    std::uint32_t page_tokens = 0;
    auto [end, ec] = std::from_chars(tokens.data(), tokens.data() + tokens.size(), page_tokens);
    if (tokens.empty() || ec != std::errc() || end != tokens.data() + tokens.size()) {
      return PF_ERROR(Code::kInvalidArgument, "page tokens '" + std::string(tokens) + "' in '" +
                                                  std::string(spec) + "' is not a number");
    }
    preset->page_tokens = page_tokens;
    PF_TRY(preset->validate());
    return preset;
  }
  std::map<std::string, std::string, std::less<>> kv;
  std::size_t pos = 0;
  while (pos <= spec.size()) {
    std::size_t comma = spec.find(',', pos);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view item = spec.substr(pos, comma - pos);
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return PF_ERROR(Code::kInvalidArgument, "malformed geometry item '" + std::string(item) +
                                                  "' in '" + std::string(spec) + "'");
    }
    std::string key(item.substr(0, eq));
    if (!kv.emplace(key, std::string(item.substr(eq + 1))).second) {
      return PF_ERROR(Code::kInvalidArgument, "geometry key '" + key + "' given twice");
    }
    pos = comma + 1;
  }
  Geometry g;
  auto number = [&](std::string_view key, std::uint32_t* out) -> Status {
    auto it = kv.find(key);
    if (it == kv.end()) {
      return PF_ERROR(Code::kInvalidArgument, "geometry lacks '" + std::string(key) + "'");
    }
    const std::string& v = it->second;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
    if (ec != std::errc() || end != v.data() + v.size()) {
      return PF_ERROR(Code::kInvalidArgument,
                      "geometry '" + std::string(key) + "' is not a number: '" + v + "'");
    }
    kv.erase(it);
    return Status::ok();
  };
  PF_TRY(number("layers", &g.layers));
  PF_TRY(number("kv_heads", &g.kv_heads));
  PF_TRY(number("head_dim", &g.head_dim));
  PF_TRY(number("page_tokens", &g.page_tokens));
  auto dt = kv.find("dtype");
  if (dt == kv.end()) return PF_ERROR(Code::kInvalidArgument, "geometry lacks 'dtype'");
  PF_ASSIGN_OR_RETURN(g.dtype, parse_dtype(dt->second));
  kv.erase(dt);
  if (!kv.empty()) {
    return PF_ERROR(Code::kInvalidArgument, "unknown geometry key '" + kv.begin()->first + "'");
  }
  PF_TRY(g.validate());
  return g;
}

}  // namespace pf
