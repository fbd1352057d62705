// MappedRange growth sets access on the new chunk's mapping only (vmm/mapped_range.h): on
// CUDA each cuMemSetAccess synchronizes, and re-setting it over the whole range made
// growth O(n^2). Checked on the host backend through the access the OS reports, and the
// number of set_access calls the fault decorator counts.
#include "vmm/mapped_range.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "vmm/fault_backend.h"
#include "vmm/host_backend.h"

namespace pf::vmm {
namespace {

constexpr std::size_t kG = kHostGranularity;

// The permissions ("rw-s", "r--s", ...) of the mapping that contains `va`, from
// /proc/self/maps; "" when nothing maps it.
std::string permissions_at(const void* va) {
  const auto at = reinterpret_cast<unsigned long long>(va);
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    unsigned long long start = 0;
    unsigned long long end = 0;
    char perms[8] = {};
    if (std::sscanf(line.c_str(), "%llx-%llx %7s", &start, &end, perms) == 3 && start <= at &&
        at < end) {
      return perms;
    }
  }
  return "";
}

TEST(MappedRangeGrowth, SetsAccessOnTheNewChunkOnly) {
  FaultBackend backend(make_host_backend(HostBackendOptions{HugePages::kOff}));
  auto range = MappedRange::create(backend, 8 * kG);
  ASSERT_TRUE(range.is_ok()) << range.status().to_string();
  char* base = static_cast<char*>(range.value()->base());
  ASSERT_TRUE(range.value()->grow(kG).is_ok());
  ASSERT_TRUE(range.value()->grow(kG).is_ok());
  EXPECT_EQ(backend.calls(FaultOp::kSetAccess), 2u);
  EXPECT_EQ(permissions_at(base), "rw-s");

  // Chunk 0 made read-only by its owner stays so while the range grows: growth does not
  // set access again on the chunks mapped before.
  ASSERT_TRUE(backend.set_access(base, kG, Access::kRead).is_ok());
  ASSERT_EQ(permissions_at(base), "r--s");
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(range.value()->grow(kG).is_ok());
  EXPECT_EQ(permissions_at(base), "r--s") << "a growth re-set access on chunk 0";
  EXPECT_EQ(backend.calls(FaultOp::kSetAccess), 2u + 1u + 4u) << "one call per growth";
  for (std::size_t i = 1; i < range.value()->chunk_count(); ++i) {
    EXPECT_EQ(permissions_at(base + i * kG), "rw-s") << "chunk " << i;
  }
}

}  // namespace
}  // namespace pf::vmm
