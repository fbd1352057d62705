// The host backend: chunks are sealed memfds, mapped MAP_SHARED|MAP_FIXED into PROT_NONE
// reservations (DESIGN §3 vmm/ `host`). A production backend (CPU inference, host tier)
// and the one CI runs.
#pragma once

#include <memory>

#include "vmm/backend.h"

namespace pf::vmm {

enum class HugePages {
  kAuto,  // MFD_HUGETLB when the system has free huge pages, else THP advice on shmem
  kOff,   // plain pages only
};

struct HostBackendOptions {
  HugePages huge_pages = HugePages::kAuto;
};

// Granularity is 2 MiB (the huge page size) in every mode, so chunks made with or without
// huge pages are interchangeable between processes.
inline constexpr std::size_t kHostGranularity = std::size_t{2} << 20;

std::unique_ptr<Backend> make_host_backend(HostBackendOptions options = {});

}  // namespace pf::vmm
