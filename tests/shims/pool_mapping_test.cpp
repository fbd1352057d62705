// PoolMapping's page protection (shims/client/pool_mapping.h) on real host mappings of
// real memfd chunks: guarded chunks are read-only but for the pages set_writable opened;
// a failing protect call (the fault backend, standing in for vm.max_map_count) unguards
// the chunk so that no legal store faults; pages smaller than an OS page are not guarded.
#include "shims/client/pool_mapping.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <vector>

#include "vmm/fault_backend.h"
#include "vmm/host_backend.h"

namespace pf::client {
namespace {

constexpr std::size_t kChunk = vmm::kHostGranularity;  // 2 MiB
constexpr std::size_t kPage = 8192;                    // 256 pages per chunk

// Two chunks made by a "daemon" backend, exported as fds the mapping imports.
struct Chunks {
  std::unique_ptr<vmm::Backend> maker =
      vmm::make_host_backend(vmm::HostBackendOptions{vmm::HugePages::kOff});
  std::vector<vmm::ChunkHandle> handles = std::vector<vmm::ChunkHandle>(2);
  std::vector<UniqueFd> fds;
  std::vector<std::uint64_t> serials = {1, 2};
  Chunks() {
    for (vmm::ChunkHandle& h : handles) {
      EXPECT_TRUE(maker->create_chunk(kChunk, &h).is_ok());
      int fd = -1;
      EXPECT_TRUE(maker->export_chunk(h, &fd).is_ok());
      fds.emplace_back(fd);
    }
  }
  ~Chunks() {
    for (vmm::ChunkHandle& h : handles) maker->release_chunk(h).ignore();
  }
};

volatile char* page_at(PoolMapping& m, std::uint32_t page) {
  return reinterpret_cast<volatile char*>(m.base() + std::size_t{page} * kPage);
}

TEST(PoolMappingProtection, OnlyOpenedPagesTakeStoresAndAFailedProtectUnguards) {
  if (static_cast<std::size_t>(sysconf(_SC_PAGESIZE)) > kPage) GTEST_SKIP() << "OS page > 8 KiB";
  Chunks chunks;
  auto made = PoolMapping::create("fault:host", 2 * kChunk, kChunk, kPage);
  ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  std::unique_ptr<PoolMapping> m = std::move(*made);
  const std::vector<std::uint32_t> writable = {3, 4, 5, 300};
  ASSERT_TRUE(m->apply(0, chunks.fds, chunks.serials, {}).is_ok());
  ASSERT_TRUE(m->guarded(0) && m->guarded(300));
  ASSERT_TRUE(m->set_writable(writable, true).is_ok());
  page_at(*m, 4)[17] = 1;  // opened: takes the store
  page_at(*m, 300)[0] = 1;
  EXPECT_EQ(page_at(*m, 4)[17], 1);
  EXPECT_DEATH(page_at(*m, 6)[0] = 1, "") << "a page next to an opened run stays read-only";
  EXPECT_DEATH(page_at(*m, 299)[0] = 1, "");
  ASSERT_TRUE(m->set_writable(std::vector<std::uint32_t>{300}, false).is_ok());
  EXPECT_DEATH(page_at(*m, 300)[0] = 2, "") << "closed again";

  // The next protect call fails (as mprotect does past vm.max_map_count): chunk 0 is made
  // read-write whole and no longer guarded; chunk 1 keeps its protection.
  auto* fault = dynamic_cast<vmm::FaultBackend*>(&m->backend());
  ASSERT_NE(fault, nullptr);
  vmm::FaultRule once;
  once.fail_after = 0;
  once.fail_count = 1;
  fault->set_rule(vmm::FaultOp::kSetAccess, once);
  ASSERT_TRUE(m->set_writable(std::vector<std::uint32_t>{10}, true).is_ok());
  EXPECT_EQ(fault->injected(vmm::FaultOp::kSetAccess), 1u);
  EXPECT_FALSE(m->guarded(10));
  EXPECT_FALSE(m->guarded(0));
  EXPECT_TRUE(m->guarded(300));
  page_at(*m, 10)[0] = 3;  // the page asked for is writable ...
  page_at(*m, 0)[0] = 3;   // ... and so is the rest of the unguarded chunk: nothing faults
  EXPECT_EQ(page_at(*m, 10)[0], 3);
  EXPECT_DEATH(page_at(*m, 300)[0] = 2, "");
}

TEST(PoolMappingProtection, PagesSmallerThanAnOsPageAreNotGuarded) {
  Chunks chunks;
  auto made = PoolMapping::create("host", 2 * kChunk, kChunk, 512);
  ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  std::unique_ptr<PoolMapping> m = std::move(*made);
  ASSERT_TRUE(m->apply(0, chunks.fds, chunks.serials, {}).is_ok());
  EXPECT_FALSE(m->guarded(0));
  ASSERT_TRUE(m->set_writable(std::vector<std::uint32_t>{1}, false).is_ok());
  m->base()[0] = std::byte{1};  // read-write as before: nothing faults
  m->base()[kChunk + 5] = std::byte{2};
  EXPECT_EQ(m->base()[kChunk + 5], std::byte{2});
}

}  // namespace
}  // namespace pf::client
