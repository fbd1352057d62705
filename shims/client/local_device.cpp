// resolve_local_device (local_device.h).
#include "shims/client/local_device.h"

#include "base/device_name.h"
#include "vmm/cuda_backend.h"

namespace pf::client {

LocalDevice resolve_local_device(std::string_view daemon_device, std::string_view uuid,
                                 std::string_view pci_bus_id) {
  LocalDevice out{std::string(daemon_device), Status::ok()};
  Result<DeviceName> parsed = parse_device_name(daemon_device);
  if (!parsed.is_ok() || parsed->kind != DeviceName::Kind::kCuda) return out;
  if (uuid.empty() && pci_bus_id.empty()) return out;  // a 3.2 daemon: its ordinal is all
#if defined(PF_HAVE_CUDA)
  Result<int> ordinal = vmm::find_cuda_device(uuid, pci_bus_id);
  if (ordinal.is_ok()) {
    out.name = "cuda:" + std::to_string(ordinal.value());
  } else {
    out.status = Status(ordinal.status().code(), "the daemon's pool is on its " +
                                                     std::string(daemon_device) + ": " +
                                                     ordinal.status().message());
  }
#else
  out.status = PF_ERROR(Code::kNotFound, "the daemon's pool is on its " +
                                             std::string(daemon_device) + " (" + std::string(uuid) +
                                             "), but this library was built without CUDA");
#endif
  return out;
}

}  // namespace pf::client
