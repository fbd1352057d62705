// CUDA device identity (vmm/ internal; includes cuda.h through vmm/cuda_driver.h).
//
// An ordinal names a device only inside one process: CUDA_VISIBLE_DEVICES renumbers the
// devices each process sees. The UUID (and the PCI bus id) name it machine-wide, so the
// daemon announces those and a client looks the device up among the ones it sees
// (find_cuda_device, vmm/cuda_backend.h). docs/cuda.md "Device identity".
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"
#include "vmm/cuda_driver.h"

namespace pf::vmm::cuda {

// Loads the driver and calls cuInit; the number of visible devices. CUDA_ERROR_NO_DEVICE is
// 0 devices, not an error. Errors: kUnavailable (no driver, cuInit failed).
Result<int> init_and_count();

// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", the form nvidia-smi -L and
// CUDA_VISIBLE_DEVICES use.
std::string uuid_text(const CUuuid& uuid);

// The UUID text and the PCI bus id of `device`. Driver errors are kDriver.
Status device_identity(CUdevice device, std::string* uuid, std::string* pci_bus_id);

// True when two PCI bus ids ("[domain]:bus:device.function", hex) name the same device,
// compared as numbers; false when either does not parse.
bool same_pci_bus_id(std::string_view a, std::string_view b);

}  // namespace pf::vmm::cuda
