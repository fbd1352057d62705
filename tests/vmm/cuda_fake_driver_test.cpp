// The CUDA backend's own logic against a fake driver (tests/vmm/fake_cuda_driver.h), so it
// runs on machines without a GPU: refusal classification, same-process re-imports, imports
// that never map, access set on new mappings only, copies vs unmap, device lookup by UUID.
// A separate binary from vmm_test: the fake replaces the driver for the whole process.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "shims/client/local_device.h"
#include "tests/vmm/fake_cuda_driver.h"
#include "vmm/cuda_backend.h"
#include "vmm/mapped_range.h"

namespace pf::vmm {
namespace {

constexpr const char* kUuidA = "GPU-00112233-4455-6677-8899-aabbccddeeff";
constexpr const char* kUuidB = "GPU-a0a1a2a3-b0b1-c0c1-d0d1-e0e1e2e3e4e5";

fake_cuda::Config two_devices() {
  fake_cuda::Config c;
  c.devices = {{kUuidA, "00000000:3B:00.0"}, {kUuidB, "00000000:86:00.0"}};
  return c;
}

std::unique_ptr<Backend> open(int ordinal) {
  auto b = make_cuda_backend(ordinal);
  EXPECT_TRUE(b.is_ok()) << b.status().to_string();
  return b.is_ok() ? std::move(b).value() : nullptr;
}

// Exports `chunk` and imports the fd again in this process, claiming `claim` bytes.
Status reimport(Backend& b, const ChunkHandle& chunk, std::size_t claim, ChunkHandle* out) {
  int fd = -1;
  PF_TRY(b.export_chunk(chunk, &fd));
  const Status s = b.import_chunk(fd, claim, out);
  close(fd);
  return s;
}

// One chunk of one granule, mapped at a reservation of its own, access not yet set.
struct OneMapping {
  ChunkHandle chunk;
  void* va = nullptr;
};
Status map_one(Backend& b, OneMapping* m) {
  const std::size_t g = b.granularity();
  PF_TRY(b.create_chunk(g, &m->chunk));
  PF_TRY(b.reserve(g, &m->va));
  return b.map(m->va, g, m->chunk, 0);
}
Status unmap_one(Backend& b, const OneMapping& m) {
  const std::size_t g = b.granularity();
  PF_TRY(b.unmap(m.va, g));
  PF_TRY(b.release_chunk(m.chunk));
  return b.free_reservation(m.va, g);
}

// Tests that drive a backend on the fake: use() resets the fake and opens `b` on
// device `ordinal` (granularity `g`).
class CudaFakeBackend : public ::testing::Test {
 protected:
  ::testing::AssertionResult use(fake_cuda::Config config, int ordinal = 0) {
    b.reset();  // the previous backend goes before the driver state it used
    fake_cuda::reset(std::move(config));
    b = open(ordinal);
    if (b == nullptr) return ::testing::AssertionFailure() << "make_cuda_backend failed";
    g = b->granularity();
    return ::testing::AssertionSuccess();
  }

  std::unique_ptr<Backend> b;
  std::size_t g = 0;
};

TEST(CudaFakeDriver, BackendNamesItsDeviceByUuidAndBusId) {
  fake_cuda::reset(two_devices());
  auto b = open(1);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->device(), "cuda:1");
  EXPECT_EQ(b->device_uuid(), kUuidB);
  EXPECT_EQ(b->device_pci_bus_id(), "00000000:86:00.0");
}

// Another process's CUDA_VISIBLE_DEVICES renumbers devices: the daemon's cuda:1 is this
// process's cuda:0 when only that GPU is visible here.
TEST(CudaFakeDriver, FindsTheDeviceByUuidWhateverItsOrdinal) {
  fake_cuda::reset(two_devices());
  auto found = find_cuda_device(kUuidB, "");
  ASSERT_TRUE(found.is_ok()) << found.status().to_string();
  EXPECT_EQ(found.value(), 1);

  fake_cuda::Config only_b;
  only_b.devices = {{kUuidB, "00000000:86:00.0"}};
  fake_cuda::reset(only_b);
  found = find_cuda_device(kUuidB, "0000:86:00.0");
  ASSERT_TRUE(found.is_ok()) << found.status().to_string();
  EXPECT_EQ(found.value(), 0);
  // By bus id alone, in another spelling (4-digit domain, upper case).
  found = find_cuda_device("", "0000:86:00.0");
  ASSERT_TRUE(found.is_ok()) << found.status().to_string();
  EXPECT_EQ(found.value(), 0);
}

// The client's side: the daemon's cuda:1 (by UUID) is this process's cuda:0; a GPU this
// process cannot see is an error kept for the mapping, naming the daemon's device.
TEST(CudaFakeDriver, ClientResolvesTheDaemonsDeviceToItsOwnOrdinal) {
  fake_cuda::Config only_b;
  only_b.devices = {{kUuidB, "00000000:86:00.0"}};
  fake_cuda::reset(only_b);
  client::LocalDevice local = client::resolve_local_device("cuda:1", kUuidB, "00000000:86:00.0");
  EXPECT_TRUE(local.status.is_ok()) << local.status.to_string();
  EXPECT_EQ(local.name, "cuda:0");

  local = client::resolve_local_device("cuda:0", kUuidA, "00000000:3b:00.0");
  EXPECT_EQ(local.status.code(), Code::kUnavailable);
  EXPECT_NE(local.status.message().find("daemon's pool is on its cuda:0"), std::string::npos)
      << local.status.message();
  EXPECT_NE(local.status.message().find(kUuidA), std::string::npos) << local.status.message();
  EXPECT_EQ(local.name, "cuda:0") << "the daemon's name is kept when the lookup fails";

  // A 3.2 daemon sends no UUID: its ordinal is all there is. Host pools need no lookup.
  local = client::resolve_local_device("cuda:1", "", "");
  EXPECT_TRUE(local.status.is_ok());
  EXPECT_EQ(local.name, "cuda:1");
  local = client::resolve_local_device("host", "", "");
  EXPECT_TRUE(local.status.is_ok());
  EXPECT_EQ(local.name, "host");
}

TEST(CudaFakeDriver, AnInvisibleDeviceIsAClearError) {
  fake_cuda::Config only_b;
  only_b.devices = {{kUuidB, "00000000:86:00.0"}};
  fake_cuda::reset(only_b);
  const auto missing = find_cuda_device(kUuidA, "0000:3b:00.0");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), Code::kUnavailable);
  const std::string m = missing.status().message();
  EXPECT_NE(m.find(kUuidA), std::string::npos) << m;  // what was sought
  EXPECT_NE(m.find(kUuidB), std::string::npos) << m;  // what this process sees
  EXPECT_NE(m.find("CUDA_VISIBLE_DEVICES"), std::string::npos) << m;
  EXPECT_EQ(find_cuda_device("", "0000:3b:00.0").status().code(), Code::kUnavailable);
  EXPECT_EQ(find_cuda_device("", "").status().code(), Code::kInvalidArgument);
}

// cuMemSetAccess refusing an access mode is kUnsupported, whichever of the three codes the
// driver uses for it; any other failure stays a driver error.
TEST_F(CudaFakeBackend, SetAccessRefusalsAreUnsupported) {
  for (const CUresult refusal :
       {CUDA_ERROR_NOT_SUPPORTED, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_INVALID_DEVICE}) {
    fake_cuda::Config c = two_devices();
    c.set_access_restricted_result = refusal;
    ASSERT_TRUE(use(c));
    OneMapping m;
    ASSERT_TRUE(map_one(*b, &m).is_ok());
    ASSERT_TRUE(b->set_access(m.va, g, Access::kReadWrite).is_ok());
    const Status none = b->set_access(m.va, g, Access::kNone);
    EXPECT_EQ(none.code(), Code::kUnsupported) << refusal << ": " << none.to_string();
    EXPECT_EQ(b->set_access(m.va, g, Access::kRead).code(), Code::kUnsupported) << refusal;
    ASSERT_TRUE(unmap_one(*b, m).is_ok());
  }
  fake_cuda::Config c = two_devices();
  c.set_access_restricted_result = CUDA_ERROR_UNKNOWN;
  c.set_access_rw_result = CUDA_ERROR_INVALID_DEVICE;
  ASSERT_TRUE(use(c));
  OneMapping m;
  ASSERT_TRUE(map_one(*b, &m).is_ok());
  EXPECT_EQ(b->set_access(m.va, g, Access::kNone).code(), Code::kDriver);
  EXPECT_EQ(b->set_access(m.va, g, Access::kReadWrite).code(), Code::kDriver)
      << "read-write on the backend's own device is never an unsupported mode";
  ASSERT_TRUE(unmap_one(*b, m).is_ok());
}

// Importing in the process that holds the allocation may yield the live handle: one more
// reference, one cuMemRelease when the last goes, never two.
TEST_F(CudaFakeBackend, SameProcessReimportOfTheLiveHandleIsRefcounted) {
  fake_cuda::Config c = two_devices();
  c.reimport_returns_live_handle = true;
  ASSERT_TRUE(use(c));
  ChunkHandle chunk;
  ASSERT_TRUE(b->create_chunk(g, &chunk).is_ok());
  ChunkHandle imported;
  ASSERT_TRUE(reimport(*b, chunk, g, &imported).is_ok());
  EXPECT_EQ(imported.value, chunk.value) << "the fake hands back the live handle";
  EXPECT_EQ(b->stats().live_chunks, 2u);
  // A claim of another size for the same allocation is refused; the chunk lives on.
  ChunkHandle wrong;
  EXPECT_EQ(reimport(*b, chunk, 2 * g, &wrong).code(), Code::kInvalidArgument);
  EXPECT_EQ(b->stats().live_chunks, 2u);

  ASSERT_TRUE(b->release_chunk(chunk).is_ok());
  EXPECT_EQ(fake_cuda::counts().mem_release.load(), 0) << "the import still holds it";
  void* va = nullptr;
  ASSERT_TRUE(b->reserve(g, &va).is_ok());
  ASSERT_TRUE(b->map(va, g, imported, 0).is_ok());
  ASSERT_TRUE(b->set_access(va, g, Access::kReadWrite).is_ok());
  ASSERT_TRUE(b->unmap(va, g).is_ok());
  ASSERT_TRUE(b->release_chunk(imported).is_ok());
  EXPECT_EQ(fake_cuda::counts().mem_release.load(), 1);
  EXPECT_EQ(fake_cuda::counts().bad_release.load(), 0) << "released twice";
  EXPECT_EQ(b->release_chunk(imported).code(), Code::kNotFound);
  ASSERT_TRUE(b->free_reservation(va, g).is_ok());
  EXPECT_EQ(b->stats().live_chunks, 0u);
  EXPECT_EQ(fake_cuda::live_handles(), 0u);
}

// The other behaviour the driver may show: a new handle per import, each released once.
TEST_F(CudaFakeBackend, SameProcessReimportAsANewHandleReleasesBoth) {
  ASSERT_TRUE(use(two_devices()));
  ChunkHandle chunk;
  ASSERT_TRUE(b->create_chunk(g, &chunk).is_ok());
  ChunkHandle imported;
  ASSERT_TRUE(reimport(*b, chunk, g, &imported).is_ok());
  EXPECT_NE(imported.value, chunk.value);
  ASSERT_TRUE(b->release_chunk(chunk).is_ok());
  ASSERT_TRUE(b->release_chunk(imported).is_ok());
  EXPECT_EQ(fake_cuda::counts().mem_release.load(), 2);
  EXPECT_EQ(fake_cuda::counts().bad_release.load(), 0);
  EXPECT_EQ(fake_cuda::live_handles(), 0u);
}

// An import touches no page table (no trial reserve/map/unmap: cuMemUnmap synchronizes);
// a claim larger than the allocation fails cleanly at the real map.
TEST_F(CudaFakeBackend, ImportMapsNothingAndAnOversizedClaimFailsAtMap) {
  ASSERT_TRUE(use(two_devices()));
  ChunkHandle chunk;
  ASSERT_TRUE(b->create_chunk(g, &chunk).is_ok());
  ChunkHandle big;
  ASSERT_TRUE(reimport(*b, chunk, 2 * g, &big).is_ok());
  EXPECT_EQ(fake_cuda::counts().map.load(), 0);
  EXPECT_EQ(fake_cuda::counts().unmap.load(), 0);
  EXPECT_EQ(fake_cuda::counts().address_reserve.load(), 0);

  void* va = nullptr;
  ASSERT_TRUE(b->reserve(2 * g, &va).is_ok());
  const Status mapped = b->map(va, 2 * g, big, 0);
  EXPECT_EQ(mapped.code(), Code::kInvalidArgument) << mapped.to_string();
  EXPECT_EQ(b->stats().live_mappings, 0u) << "a failed map changes nothing";
  ASSERT_TRUE(b->map(va, g, big, 0).is_ok()) << "the bytes it does hold map";
  ASSERT_TRUE(b->unmap(va, g).is_ok());
  ASSERT_TRUE(b->release_chunk(big).is_ok());
  ASSERT_TRUE(b->release_chunk(chunk).is_ok());
  ASSERT_TRUE(b->free_reservation(va, 2 * g).is_ok());
  EXPECT_EQ(fake_cuda::live_handles(), 0u);
}

// Growing a pool sets access on each new chunk's mapping only: n growths, n calls of one
// chunk each (not 1 + 2 + ... + n chunks).
TEST_F(CudaFakeBackend, GrowthSetsAccessOnTheNewChunkOnly) {
  ASSERT_TRUE(use(two_devices()));
  auto range = MappedRange::create(*b, 8 * g);
  ASSERT_TRUE(range.is_ok()) << range.status().to_string();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(range.value()->grow(g).is_ok());
  const auto calls = fake_cuda::access_calls();
  ASSERT_EQ(calls.size(), 5u);
  const auto base = reinterpret_cast<CUdeviceptr>(range.value()->base());
  for (std::size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].va, base + i * g) << "call " << i;
    EXPECT_EQ(calls[i].bytes, g) << "call " << i;
    EXPECT_EQ(calls[i].flags, static_cast<unsigned long long>(CU_MEM_ACCESS_FLAGS_PROT_READWRITE));
  }
  // The bytes of every chunk are reachable (access really was set on each).
  const std::vector<std::uint8_t> bytes(4096, 0x5a);
  for (std::size_t i = 0; i < 5; ++i) {
    char* chunk = static_cast<char*>(range.value()->base()) + i * g;
    EXPECT_TRUE(b->copy_to_mapped(chunk, bytes.data(), bytes.size()).is_ok()) << "chunk " << i;
  }
  range.value().reset();
  EXPECT_EQ(b->stats().live_chunks, 0u);
}

// An unmap issued while a copy is between its range check and its DMA waits for the copy.
TEST_F(CudaFakeBackend, UnmapWaitsForACopyInFlight) {
  std::promise<void> in_copy;
  std::shared_future<void> in_copy_seen = in_copy.get_future().share();
  std::atomic<bool> once{false};
  fake_cuda::Config c = two_devices();
  c.during_copy = [&] {
    if (!once.exchange(true)) {
      in_copy.set_value();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  };
  ASSERT_TRUE(use(c));
  OneMapping m;
  ASSERT_TRUE(map_one(*b, &m).is_ok());
  void* va = m.va;
  ASSERT_TRUE(b->set_access(va, g, Access::kReadWrite).is_ok());
  const std::vector<std::uint8_t> bytes(4096, 7);
  auto copier = std::async(std::launch::async,
                           [&] { return b->copy_to_mapped(va, bytes.data(), bytes.size()); });
  in_copy_seen.wait();
  ASSERT_TRUE(b->unmap(va, g).is_ok());
  const Status copied = copier.get();
  EXPECT_TRUE(copied.is_ok()) << copied.to_string();
  const auto events = fake_cuda::events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0], "copy-begin");
  EXPECT_EQ(events[1], "copy-end") << "the unmap ran while the copy was in flight";
  EXPECT_EQ(events[2], "unmap");
  // After the unmap, a copy is refused before the driver is asked.
  EXPECT_EQ(b->copy_to_mapped(va, bytes.data(), bytes.size()).code(), Code::kInvalidArgument);
  ASSERT_TRUE(b->release_chunk(m.chunk).is_ok());
  ASSERT_TRUE(b->free_reservation(va, g).is_ok());
}

}  // namespace
}  // namespace pf::vmm
