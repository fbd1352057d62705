// The one parser of device names ("host", "cuda:N"): daemon flags, backends, kernels, the
// client's layout copies and the reference engine all read a device through it.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace pf {

struct DeviceName {
  enum class Kind { kHost, kCuda };
  Kind kind = Kind::kHost;
  int ordinal = 0;                // cuda only
  std::string to_string() const;  // "host" / "cuda:N"
  bool operator==(const DeviceName&) const = default;
};

// "host" or "cuda:N" (N a decimal ordinal, 0..9999). With allow_bare_cuda, "cuda" is
// cuda:0. kInvalidArgument naming the accepted forms for anything else.
Result<DeviceName> parse_device_name(std::string_view text, bool allow_bare_cuda = false);

}  // namespace pf
