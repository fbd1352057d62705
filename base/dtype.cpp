#include "base/dtype.h"

#include <string>

namespace pf {

static_assert(
    [] {
      for (std::size_t i = 0; i < kDTypes.size(); ++i) {
        if (static_cast<std::size_t>(kDTypes[i].dtype) != i) return false;
      }
      return true;
    }(),
    "kDTypes must be indexed by the DType's number");

Result<DType> parse_dtype(std::string_view name) {
  std::string known;
  for (const DTypeInfo& d : kDTypes) {
    if (d.name == name) return d.dtype;
    known += (known.empty() ? "" : ", ") + std::string(d.name);
  }
  return PF_ERROR(Code::kInvalidArgument,
                  "unknown dtype '" + std::string(name) + "' (" + known + ")");
}

}  // namespace pf
