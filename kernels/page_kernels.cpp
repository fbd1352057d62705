// Shared pieces of the kernels interface: Digest formatting and the backend -> kernels choice.
#include "kernels/page_kernels.h"

#include <charconv>
#include <string>

namespace pf::kernels {

std::string Digest::hex() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(bytes.size() * 2, '0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    s[2 * i] = kHex[bytes[i] >> 4];
    s[2 * i + 1] = kHex[bytes[i] & 0xF];
  }
  return s;
}

Result<std::unique_ptr<PageKernels>> kernels_for(const vmm::Backend& backend) {
  if (backend.memory_kind() == vmm::MemoryKind::kHost) {
    return std::unique_ptr<PageKernels>(make_host_kernels());
  }
  // Device memory: the backend names its device "cuda:N".
  const std::string device = backend.device();
  constexpr std::string_view kPrefix = "cuda:";
  int ordinal = -1;
  if (device.size() > kPrefix.size() && device.compare(0, kPrefix.size(), kPrefix) == 0) {
    const char* first = device.data() + kPrefix.size();
    const char* last = device.data() + device.size();
    auto [end, ec] = std::from_chars(first, last, ordinal);
    if (ec != std::errc() || end != last || ordinal < 0) ordinal = -1;
  }
  if (ordinal < 0) {
    return PF_ERROR(Code::kUnsupported, "no page kernels for device memory of backend '" +
                                            std::string(backend.name()) + "' on device '" + device +
                                            "' (expected \"cuda:N\")");
  }
  return make_cuda_kernels(ordinal);
}

}  // namespace pf::kernels
