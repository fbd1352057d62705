// Device identity and lookup by UUID / PCI bus id (vmm/cuda_device.h).
#include "vmm/cuda_device.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "vmm/cuda_backend.h"

namespace pf::vmm {
namespace cuda {
namespace {

// Parses "[domain:]bus:device.function" (hex fields) into one number; false on junk.
bool parse_bus_id(std::string_view text, std::uint64_t* out) {
  std::uint64_t fields[4] = {};
  int n = 0;
  std::uint64_t value = 0;
  bool digits = false;
  for (const char c : text) {
    if (std::isxdigit(static_cast<unsigned char>(c))) {
      value = value * 16 + static_cast<std::uint64_t>(
                               std::isdigit(static_cast<unsigned char>(c))
                                   ? c - '0'
                                   : std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
      if (value > 0xffffffffull) return false;
      digits = true;
    } else if ((c == ':' || c == '.') && digits && n < 3) {
      fields[n++] = value;
      value = 0;
      digits = false;
    } else {
      return false;
    }
  }
  if (!digits) return false;
  fields[n++] = value;
  if (n == 3) {  // no domain: domain 0
    fields[3] = fields[2];
    fields[2] = fields[1];
    fields[1] = fields[0];
    fields[0] = 0;
  } else if (n != 4) {
    return false;
  }
  *out = (fields[0] << 24) | (fields[1] << 16) | (fields[2] << 8) | fields[3];
  return fields[1] <= 0xff && fields[2] <= 0xff && fields[3] <= 0xff;
}

}  // namespace

Result<int> init_and_count() {
  PF_TRY(load_driver());
  const CUresult r = PF_CU_CALL(cuInit(0));
  if (r == CUDA_ERROR_NO_DEVICE) return 0;
  if (r != CUDA_SUCCESS) {
    return driver_error(Code::kUnavailable, "CUDA driver present but unusable", r, "cuInit",
                        __FILE__, __LINE__);
  }
  int count = 0;
  PF_CU_TRY(cuDeviceGetCount(&count));
  return count;
}

std::string uuid_text(const CUuuid& uuid) {
  const auto* b = reinterpret_cast<const unsigned char*>(uuid.bytes);
  char text[48];
  std::snprintf(text, sizeof text,
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                b[14], b[15]);
  return text;
}

Status device_identity(CUdevice device, std::string* uuid, std::string* pci_bus_id) {
  CUuuid raw = {};
  PF_CU_TRY(cuDeviceGetUuid(&raw, device));
  char bus[32] = {};
  PF_CU_TRY(cuDeviceGetPCIBusId(bus, static_cast<int>(sizeof bus - 1), device));
  *uuid = uuid_text(raw);
  *pci_bus_id = bus;
  return Status::ok();
}

bool same_pci_bus_id(std::string_view a, std::string_view b) {
  std::uint64_t x = 0;
  std::uint64_t y = 0;
  return parse_bus_id(a, &x) && parse_bus_id(b, &y) && x == y;
}

}  // namespace cuda

Result<int> cuda_device_count() {
  return cuda::init_and_count();
}

Result<int> find_cuda_device(std::string_view uuid, std::string_view pci_bus_id) {
  if (uuid.empty() && pci_bus_id.empty()) {
    return PF_ERROR(Code::kInvalidArgument, "find_cuda_device: neither a UUID nor a bus id");
  }
  const std::string sought =
      uuid.empty()
          ? "PCI " + std::string(pci_bus_id)
          : std::string(uuid) +
                (pci_bus_id.empty() ? std::string() : " (PCI " + std::string(pci_bus_id) + ")");
  PF_ASSIGN_OR_RETURN(const int count, cuda::init_and_count());
  std::string seen;
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    CUdevice device = 0;
    PF_CU_TRY(cuDeviceGet(&device, ordinal));
    std::string u;
    std::string bus;
    PF_TRY(cuda::device_identity(device, &u, &bus));
    const bool match = uuid.empty() ? cuda::same_pci_bus_id(bus, pci_bus_id) : u == uuid;
    if (match) return ordinal;
    seen += (seen.empty() ? "" : ", ") + std::string("cuda:") + std::to_string(ordinal) + " " + u +
            " (PCI " + bus + ")";
  }
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  return PF_ERROR(Code::kUnavailable,
                  "CUDA device " + sought + " is not visible to this process: it sees " +
                      std::to_string(count) + " device" + (count == 1 ? "" : "s") +
                      (seen.empty() ? std::string() : " (" + seen + ")") +
                      "; CUDA_VISIBLE_DEVICES is " +
                      (visible ? "'" + std::string(visible) + "'" : std::string("unset")));
}

}  // namespace pf::vmm
