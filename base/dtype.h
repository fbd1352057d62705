// The one table of KV element types (DESIGN §2 `dtype`). Every layer, the wire protocol
// (GeometryWire::dtype), the C ABI (`enum pf_dtype`, pf_dtype_name / pf_dtype_bytes) and the
// Python package read names and sizes from here; the numbering is part of the protocol and
// the C ABI and never changes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/status.h"

namespace pf {

enum class DType : std::uint8_t { kBF16 = 0, kFP16 = 1, kFP32 = 2, kFP8E4M3 = 3, kFP8E5M2 = 4 };

struct DTypeInfo {
  DType dtype;
  std::string_view name;  // "bf16", ...
  std::uint8_t bytes;     // bytes per element
};

// Indexed by the DType's number.
inline constexpr std::array<DTypeInfo, 5> kDTypes = {{
    {DType::kBF16, "bf16", 2},
    {DType::kFP16, "fp16", 2},
    {DType::kFP32, "fp32", 4},
    {DType::kFP8E4M3, "fp8_e4m3", 1},
    {DType::kFP8E5M2, "fp8_e5m2", 1},
}};

// The entry for a raw number (wire, C ABI), or nullptr when there is none.
constexpr const DTypeInfo* dtype_info(std::uint32_t number) {
  return number < kDTypes.size() ? &kDTypes[number] : nullptr;
}
// "bf16", ...; "unknown" for a value outside the table.
constexpr std::string_view dtype_name(DType dtype) {
  const DTypeInfo* info = dtype_info(static_cast<std::uint32_t>(dtype));
  return info ? info->name : std::string_view("unknown");
}
// Bytes per element; 0 for a value outside the table.
constexpr std::size_t dtype_bytes(DType dtype) {
  const DTypeInfo* info = dtype_info(static_cast<std::uint32_t>(dtype));
  return info ? info->bytes : 0;
}
// kInvalidArgument naming the known types for anything but a name of the table.
Result<DType> parse_dtype(std::string_view name);

}  // namespace pf
