// Which of this process's devices holds the daemon's pool (docs/cuda.md "Device identity").
//
// The daemon names its GPU "cuda:N" with its own ordinal, and since protocol 3.3 also by
// UUID and PCI bus id (wire::HelloDevice). Ordinals depend on each process's
// CUDA_VISIBLE_DEVICES, so a client finds the GPU among those it sees by UUID (else bus
// id) and uses that ordinal for its mapping and kernels.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace pf::client {

struct LocalDevice {
  // This process's name for the pool's device: "host", or "cuda:M" with M this process's
  // ordinal. When the lookup failed (or the daemon sent no UUID: a 3.2 daemon), the
  // daemon's own name.
  std::string name;
  // Why the daemon's GPU cannot be used here (not visible, no driver); ok otherwise.
  // Reported when the pool is mapped, not at connect: a client that never maps pages
  // (the CLI) works without the GPU.
  Status status;
};

// Blocking: for a CUDA pool with a UUID or bus id, loads the driver and queries each visible
// device (vmm::find_cuda_device). Never fails itself; see LocalDevice::status.
LocalDevice resolve_local_device(std::string_view daemon_device, std::string_view uuid,
                                 std::string_view pci_bus_id);

}  // namespace pf::client
