#include "base/device_name.h"

#include <charconv>

namespace pf {

std::string DeviceName::to_string() const {
  return kind == Kind::kHost ? std::string("host") : "cuda:" + std::to_string(ordinal);
}

Result<DeviceName> parse_device_name(std::string_view text, bool allow_bare_cuda) {
  if (text == "host") return DeviceName{DeviceName::Kind::kHost, 0};
  if (allow_bare_cuda && text == "cuda") return DeviceName{DeviceName::Kind::kCuda, 0};
  constexpr std::string_view kCuda = "cuda:";
  if (text.starts_with(kCuda)) {
    const std::string_view digits = text.substr(kCuda.size());
    int ordinal = -1;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), ordinal);
    if (!digits.empty() && digits.size() <= 4 && ec == std::errc() &&
        end == digits.data() + digits.size() && ordinal >= 0) {
      return DeviceName{DeviceName::Kind::kCuda, ordinal};
    }
  }
  return PF_ERROR(Code::kInvalidArgument,
                  "malformed device name '" + std::string(text) + "' (want host or cuda:N)");
}

}  // namespace pf
