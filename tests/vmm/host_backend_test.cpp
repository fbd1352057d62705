// Host-backend specifics: memfd sealing, page protection, placeholders after unmap.
#include "vmm/host_backend.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "base/unique_fd.h"
#include "tests/support/process_resources.h"

namespace pf::vmm {
namespace {

constexpr std::size_t kG = kHostGranularity;

TEST(HostBackend, ReportsItself) {
  auto b = make_host_backend();
  EXPECT_EQ(b->name(), "host");
  EXPECT_EQ(b->device(), "host");
  EXPECT_EQ(b->memory_kind(), MemoryKind::kHost);
  EXPECT_EQ(b->granularity(), kG);
}

TEST(HostBackend, ImportRefusesAnUnsealedMemfd) {
  auto b = make_host_backend();
  UniqueFd fd(memfd_create("not-ours", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(ftruncate(fd.get(), kG), 0);
  ChunkHandle h;
  const Status s = b->import_chunk(fd.get(), kG, &h);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("sealed"), std::string::npos) << s.to_string();
  EXPECT_EQ(b->stats().live_chunks, 0u);
}

TEST(HostBackend, ExportedChunkCannotBeShrunkByAPeer) {
  auto b = make_host_backend();
  ChunkHandle chunk;
  ASSERT_TRUE(b->create_chunk(kG, &chunk).is_ok());
  int raw = -1;
  ASSERT_TRUE(b->export_chunk(chunk, &raw).is_ok());
  UniqueFd fd(raw);
  EXPECT_NE(ftruncate(fd.get(), 4096), 0) << "a peer must not be able to truncate a chunk";
  EXPECT_EQ(errno, EPERM);
  ASSERT_TRUE(b->release_chunk(chunk).is_ok());
}

TEST(HostBackend, WriteThroughReadOnlyMappingFaults) {
  auto b = make_host_backend();
  ChunkHandle chunk;
  ASSERT_TRUE(b->create_chunk(kG, &chunk).is_ok());
  void* va = nullptr;
  ASSERT_TRUE(b->reserve(kG, &va).is_ok());
  ASSERT_TRUE(b->map(va, kG, chunk, 0).is_ok());
  ASSERT_TRUE(b->set_access(va, kG, Access::kReadWrite).is_ok());
  static_cast<volatile char*>(va)[5] = 42;
  ASSERT_TRUE(b->set_access(va, kG, Access::kRead).is_ok());
  EXPECT_EQ(static_cast<volatile char*>(va)[5], 42);
  EXPECT_DEATH(static_cast<volatile char*>(va)[5] = 1, "");
  ASSERT_TRUE(b->unmap(va, kG).is_ok());
  EXPECT_DEATH(static_cast<void>(static_cast<volatile char*>(va)[5]), "")
      << "an unmapped range must be inaccessible, not silently backed by fresh memory";
  ASSERT_TRUE(b->release_chunk(chunk).is_ok());
  ASSERT_TRUE(b->free_reservation(va, kG).is_ok());
}

TEST(HostBackend, ProtectChangesAccessInsideAMapping) {
  auto b = make_host_backend(HostBackendOptions{HugePages::kOff});
  ChunkHandle chunk;
  ASSERT_TRUE(b->create_chunk(kG, &chunk).is_ok());
  const std::size_t unit = b->protect_granularity(chunk);
  ASSERT_EQ(unit, static_cast<std::size_t>(sysconf(_SC_PAGESIZE)));
  void* va = nullptr;
  ASSERT_TRUE(b->reserve(2 * kG, &va).is_ok());
  ASSERT_TRUE(b->map(va, kG, chunk, 0).is_ok());
  ASSERT_TRUE(b->set_access(va, kG, Access::kRead).is_ok());
  auto* bytes = static_cast<volatile char*>(va);
  // One OS page in the middle of the mapping opens for writing; its neighbours stay read-only.
  ASSERT_TRUE(b->protect(static_cast<char*>(va) + 3 * unit, unit, Access::kReadWrite).is_ok());
  bytes[3 * unit + 1] = 7;
  EXPECT_EQ(bytes[3 * unit + 1], 7);
  EXPECT_DEATH(bytes[2 * unit] = 1, "");
  EXPECT_DEATH(bytes[4 * unit] = 1, "");
  ASSERT_TRUE(b->protect(static_cast<char*>(va) + 3 * unit, unit, Access::kRead).is_ok());
  EXPECT_DEATH(bytes[3 * unit + 1] = 1, "");
  // Bad ranges are refused before mprotect: misaligned, outside every mapping, empty.
  EXPECT_EQ(b->protect(static_cast<char*>(va) + 1, unit, Access::kReadWrite).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(b->protect(static_cast<char*>(va) + kG - unit, 2 * unit, Access::kReadWrite).code(),
            Code::kInvalidArgument)
      << "runs past the mapping into the bare reservation";
  EXPECT_EQ(b->protect(va, 0, Access::kReadWrite).code(), Code::kInvalidArgument);
  EXPECT_EQ(bytes[3 * unit + 1], 7);
  ASSERT_TRUE(b->unmap(va, kG).is_ok());
  ASSERT_TRUE(b->release_chunk(chunk).is_ok());
  ASSERT_TRUE(b->free_reservation(va, 2 * kG).is_ok());
}

TEST(HostBackend, ReleasingEverythingReturnsEveryFdAndMapping) {
  auto scenario = [] {
    auto b = make_host_backend(HostBackendOptions{HugePages::kOff});
    ChunkHandle chunks[3];
    void* va = nullptr;
    ASSERT_TRUE(b->reserve(3 * kG, &va).is_ok());
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(b->create_chunk(kG, &chunks[i]).is_ok());
      ASSERT_TRUE(b->map(static_cast<char*>(va) + i * kG, kG, chunks[i], 0).is_ok());
    }
    ASSERT_TRUE(b->set_access(va, 3 * kG, Access::kReadWrite).is_ok());
    std::memset(va, 0x5a, 3 * kG);
    ASSERT_TRUE(b->unmap(va, 3 * kG).is_ok()) << "one unmap may cover several mappings";
    for (auto& c : chunks) ASSERT_TRUE(b->release_chunk(c).is_ok());
    ASSERT_TRUE(b->free_reservation(va, 3 * kG).is_ok());
  };
  // A first run lets the C++ heap (and a sanitizer's allocator) settle its own mappings.
  scenario();
  const testing::ProcessResources before;
  scenario();
  EXPECT_EQ(testing::ProcessResources{}, before);
}

}  // namespace
}  // namespace pf::vmm
