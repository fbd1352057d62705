// Shared pieces of the kernels interface: Digest formatting and the backend -> kernels choice.
#include "kernels/page_kernels.h"

#include <charconv>
#include <string>

#include "base/device_name.h"

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
  Result<DeviceName> parsed = parse_device_name(device);
  if (!parsed.is_ok() || parsed->kind != DeviceName::Kind::kCuda) {
    return PF_ERROR(Code::kUnsupported, "no page kernels for device memory of backend '" +
                                            std::string(backend.name()) + "' on device '" + device +
                                            "' (expected \"cuda:N\")");
  }
  return make_cuda_kernels(parsed->ordinal);
}

}  // namespace pf::kernels
