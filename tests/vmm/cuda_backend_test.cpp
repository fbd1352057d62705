// CUDA backend tests (vmm/cuda_backend.h). Standalone gtest source (no main).
//
// Without a driver (CI, laptops): make_cuda_backend() must fail cleanly with kUnavailable
// naming libcuda; nothing crashes and nothing is linked against libcuda. With a GPU: the
// backend's own behaviour (self-description, ordinals, the VMM round trip through an
// exported fd, access modes, context hygiene, argument checks that leak nothing). The
// backend-independent behaviour is covered for cuda:0 by backend_suite_test.cpp.
#include "vmm/cuda_backend.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>
#if defined(PF_HAVE_CUDA)
#include "vmm/cuda_driver.h"
#endif

namespace pf::vmm {
namespace {

#if !defined(PF_HAVE_CUDA)

TEST(CudaBackend, NotBuilt) {
  static_assert(!kCudaBackendBuilt);
  GTEST_SKIP() << "built without CUDA (PF_HAVE_CUDA is off): no cuda backend to test";
}

#else

// Independent of the code under test: can this process load the driver at all?
bool driver_library_present() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return false;
  dlclose(lib);
  return true;
}

std::size_t open_fd_count() {
  std::size_t n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++n;
    closedir(d);
  }
  return n;
}

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(rng());
  return out;
}

void expect_no_live_resources(const Backend& b) {
  const BackendStats s = b.stats();
  EXPECT_EQ(s.live_chunks, 0u) << "chunk leaked";
  EXPECT_EQ(s.live_reservations, 0u) << "reservation leaked";
  EXPECT_EQ(s.live_mappings, 0u) << "mapping leaked";
  EXPECT_EQ(s.mapped_bytes, 0u);
}

TEST(CudaDriver, WithoutDriverMakeIsUnavailableAndNamesLibcuda) {
  if (driver_library_present()) {
    GTEST_SKIP() << "libcuda.so.1 is present here; the GPU tests below cover this machine";
  }
  for (int attempt = 0; attempt < 2; ++attempt) {  // the cached load outcome is stable
    auto backend = make_cuda_backend(0);
    ASSERT_FALSE(backend.is_ok());
    EXPECT_EQ(backend.status().code(), Code::kUnavailable) << backend.status().to_string();
    EXPECT_NE(backend.status().message().find("libcuda.so.1"), std::string::npos)
        << backend.status().to_string();
    EXPECT_NE(backend.status().message().find("not found"), std::string::npos)
        << backend.status().to_string();
  }
  auto count = cuda_device_count();
  ASSERT_FALSE(count.is_ok());
  EXPECT_EQ(count.status().code(), Code::kUnavailable);
  EXPECT_EQ(cuda::load_driver().code(), Code::kUnavailable);
}

TEST(CudaDriver, WithDriverMakeWorksOrSaysWhy) {
  if (!driver_library_present()) GTEST_SKIP() << "no CUDA driver (libcuda.so.1) on this machine";
  ASSERT_TRUE(cuda::load_driver().is_ok()) << cuda::load_driver().to_string();
  EXPECT_GT(cuda::api().driver_version, 0);
  auto count = cuda_device_count();
  auto backend = make_cuda_backend(0);
  if (!count.is_ok() || count.value() == 0) {
    ASSERT_FALSE(backend.is_ok());
    EXPECT_EQ(backend.status().code(), Code::kUnavailable) << backend.status().to_string();
    return;
  }
  if (!backend.is_ok()) {
    // A device without VMM or POSIX-fd export is the only acceptable reason.
    EXPECT_EQ(backend.status().code(), Code::kUnsupported) << backend.status().to_string();
    return;
  }
  Backend& b = *backend.value();
  const std::size_t g = b.granularity();
  ChunkHandle chunk;
  ASSERT_TRUE(b.create_chunk(g, &chunk).is_ok());
  int fd = -1;
  ASSERT_TRUE(b.export_chunk(chunk, &fd).is_ok());
  ChunkHandle imported;
  ASSERT_TRUE(b.import_chunk(fd, g, &imported).is_ok());
  close(fd);
  void* va = nullptr;
  ASSERT_TRUE(b.reserve(2 * g, &va).is_ok());
  void* second = static_cast<char*>(va) + g;
  ASSERT_TRUE(b.map(va, g, chunk, 0).is_ok());
  ASSERT_TRUE(b.map(second, g, imported, 0).is_ok());
  ASSERT_TRUE(b.set_access(va, 2 * g, Access::kReadWrite).is_ok());
  const auto pattern = random_bytes(g, 1);
  ASSERT_TRUE(b.copy_to_mapped(va, pattern.data(), g).is_ok());
  std::vector<std::uint8_t> back(g);
  ASSERT_TRUE(b.copy_from_mapped(back.data(), second, g).is_ok());
  EXPECT_EQ(back, pattern);
  ASSERT_TRUE(b.unmap(va, 2 * g).is_ok());
  ASSERT_TRUE(b.release_chunk(chunk).is_ok());
  ASSERT_TRUE(b.release_chunk(imported).is_ok());
  ASSERT_TRUE(b.free_reservation(va, 2 * g).is_ok());
  expect_no_live_resources(b);
}

// Tests that need a usable GPU; each skips with the reason where there is none.
class CudaBackendGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    auto count = cuda_device_count();
    if (!count.is_ok()) GTEST_SKIP() << "no CUDA: " << count.status().to_string();
    if (count.value() == 0) GTEST_SKIP() << "CUDA driver present but it sees no device";
    device_count_ = count.value();
    auto backend = make_cuda_backend(0);
    if (!backend.is_ok()) GTEST_SKIP() << "cuda:0 unusable: " << backend.status().to_string();
    backend_ = std::move(backend).value();
    g_ = backend_->granularity();
  }
  void TearDown() override {
    if (backend_) expect_no_live_resources(*backend_);
  }

  int device_count_ = 0;
  std::unique_ptr<Backend> backend_;
  std::size_t g_ = 0;
};

TEST_F(CudaBackendGpu, DescribesItself) {
  EXPECT_EQ(backend_->name(), "cuda");
  EXPECT_EQ(backend_->device(), "cuda:0");
  EXPECT_EQ(backend_->memory_kind(), MemoryKind::kDevice);
  ASSERT_GT(g_, 0u);
  EXPECT_EQ(g_ & (g_ - 1), 0u) << "granularity " << g_ << " is not a power of two";
  EXPECT_GE(g_, 4096u) << "VMM granularity is 2 MiB on every current GPU";
}

TEST_F(CudaBackendGpu, OutOfRangeOrdinalIsUnavailable) {
  for (int ordinal : {device_count_, device_count_ + 7, -1}) {
    auto other = make_cuda_backend(ordinal);
    ASSERT_FALSE(other.is_ok()) << ordinal;
    EXPECT_EQ(other.status().code(), Code::kUnavailable);
    const std::string want = "no CUDA device " + std::to_string(ordinal) + " (found " +
                             std::to_string(device_count_) + ")";
    EXPECT_NE(other.status().message().find(want), std::string::npos) << other.status().to_string();
  }
}

TEST_F(CudaBackendGpu, RoundTripThroughExportedFdAndAccessModes) {
  ChunkHandle chunk;
  ASSERT_TRUE(backend_->create_chunk(2 * g_, &chunk).is_ok());
  EXPECT_EQ(chunk.bytes, 2 * g_);
  int fd = -1;
  ASSERT_TRUE(backend_->export_chunk(chunk, &fd).is_ok());
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC) << "exported fds must be close-on-exec";
  ChunkHandle imported;
  ASSERT_TRUE(backend_->import_chunk(fd, 2 * g_, &imported).is_ok());
  EXPECT_GE(fcntl(fd, F_GETFD), 0) << "import_chunk must not close the caller's fd";
  ASSERT_EQ(close(fd), 0);  // the caller may close it right away

  void* va = nullptr;
  ASSERT_TRUE(backend_->reserve(4 * g_, &va).is_ok());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(va) % g_, 0u);
  char* base = static_cast<char*>(va);
  ASSERT_TRUE(backend_->map(base, 2 * g_, chunk, 0).is_ok());
  ASSERT_TRUE(backend_->map(base + 2 * g_, 2 * g_, imported, 0).is_ok());
  EXPECT_EQ(backend_->stats().mapped_bytes, 4 * g_);

  // Mapped but not yet accessible: copies are refused before the driver is asked.
  std::vector<std::uint8_t> back(2 * g_);
  EXPECT_EQ(backend_->copy_from_mapped(back.data(), base, g_).code(), Code::kInvalidArgument);

  // One set_access over both mappings; the two halves alias the same physical memory.
  ASSERT_TRUE(backend_->set_access(base, 4 * g_, Access::kReadWrite).is_ok());
  const auto pattern = random_bytes(2 * g_, 5);
  ASSERT_TRUE(backend_->copy_to_mapped(base, pattern.data(), pattern.size()).is_ok());
  ASSERT_TRUE(backend_->copy_from_mapped(back.data(), base + 2 * g_, back.size()).is_ok());
  EXPECT_EQ(back, pattern);
  // A copy that straddles the two mappings.
  std::vector<std::uint8_t> middle(g_);
  ASSERT_TRUE(backend_->copy_from_mapped(middle.data(), base + g_ + g_ / 2, g_).is_ok());
  EXPECT_TRUE(std::equal(middle.begin(), middle.begin() + g_ / 2, pattern.begin() + g_ + g_ / 2));
  EXPECT_TRUE(std::equal(middle.begin() + g_ / 2, middle.end(), pattern.begin()));

  // Read-only: reads work, writes are refused and change nothing.
  const Status read_only = backend_->set_access(base, 4 * g_, Access::kRead);
  if (read_only.is_ok()) {
    ASSERT_TRUE(backend_->copy_from_mapped(back.data(), base, back.size()).is_ok());
    EXPECT_EQ(back, pattern);
    const auto other = random_bytes(g_, 6);
    EXPECT_EQ(backend_->copy_to_mapped(base, other.data(), g_).code(), Code::kInvalidArgument);
  } else {
    EXPECT_EQ(read_only.code(), Code::kUnsupported) << read_only.to_string();
  }

  // None: either the driver revokes access or the call is kUnsupported; never a driver error.
  const Status none = backend_->set_access(base, 4 * g_, Access::kNone);
  if (none.is_ok()) {
    EXPECT_EQ(backend_->copy_from_mapped(back.data(), base, g_).code(), Code::kInvalidArgument);
  } else {
    EXPECT_EQ(none.code(), Code::kUnsupported) << none.to_string();
    RecordProperty("access_none", none.message());
  }

  ASSERT_TRUE(backend_->unmap(base, 4 * g_).is_ok());  // one call over two mappings
  EXPECT_EQ(backend_->stats().live_mappings, 0u);
  ASSERT_TRUE(backend_->release_chunk(chunk).is_ok());
  ASSERT_TRUE(backend_->release_chunk(imported).is_ok());
  ASSERT_TRUE(backend_->free_reservation(va, 4 * g_).is_ok());
}

TEST_F(CudaBackendGpu, CallsFromOtherThreadsLeaveTheirContextAlone) {
  ChunkHandle chunk;
  ASSERT_TRUE(backend_->create_chunk(g_, &chunk).is_ok());
  void* va = nullptr;
  ASSERT_TRUE(backend_->reserve(g_, &va).is_ok());
  ASSERT_TRUE(backend_->map(va, g_, chunk, 0).is_ok());
  ASSERT_TRUE(backend_->set_access(va, g_, Access::kReadWrite).is_ok());

  std::atomic<bool> ok{true};
  std::thread worker([&] {
    CUcontext before = reinterpret_cast<CUcontext>(0x1);
    if (cuda::api().pfn_cuCtxGetCurrent(&before) != CUDA_SUCCESS || before != nullptr) {
      ok = false;  // a fresh thread has no current context
      return;
    }
    const auto pattern = random_bytes(g_, 9);
    std::vector<std::uint8_t> back(g_);
    if (!backend_->copy_to_mapped(va, pattern.data(), g_).is_ok() ||
        !backend_->copy_from_mapped(back.data(), va, g_).is_ok() || back != pattern) {
      ok = false;
    }
    CUcontext after = reinterpret_cast<CUcontext>(0x1);
    if (cuda::api().pfn_cuCtxGetCurrent(&after) != CUDA_SUCCESS || after != nullptr) ok = false;
  });
  worker.join();
  EXPECT_TRUE(ok) << "a backend call from a fresh thread failed or left a context current";

  ASSERT_TRUE(backend_->unmap(va, g_).is_ok());
  ASSERT_TRUE(backend_->release_chunk(chunk).is_ok());
  ASSERT_TRUE(backend_->free_reservation(va, g_).is_ok());
}

TEST_F(CudaBackendGpu, ConcurrentCreateAndReleaseBalance) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 16; ++i) {
        ChunkHandle c;
        if (!backend_->create_chunk(g_, &c).is_ok() || !backend_->release_chunk(c).is_ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(CudaBackendGpu, BadArgumentsAreRejectedAndLeakNothing) {
  const std::size_t fds_before = open_fd_count();
  ChunkHandle chunk;
  ASSERT_TRUE(backend_->create_chunk(g_, &chunk).is_ok());
  void* va = nullptr;
  ASSERT_TRUE(backend_->reserve(2 * g_, &va).is_ok());
  char* base = static_cast<char*>(va);
  ASSERT_TRUE(backend_->map(base, g_, chunk, 0).is_ok());
  const BackendStats before = backend_->stats();

  ChunkHandle unused;
  void* unused_va = nullptr;
  int unused_fd = -1;
  EXPECT_EQ(backend_->create_chunk(0, &unused).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->create_chunk(g_ + 1, &unused).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->create_chunk(g_, nullptr).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->reserve(0, &unused_va).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->reserve(g_, nullptr).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->export_chunk(ChunkHandle{987654, g_}, &unused_fd).code(), Code::kNotFound);
  EXPECT_EQ(backend_->export_chunk(chunk, nullptr).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->release_chunk(ChunkHandle{987654, g_}).code(), Code::kNotFound);
  EXPECT_EQ(backend_->map(base, g_, chunk, 0).code(), Code::kAlreadyExists);
  EXPECT_EQ(backend_->map(base + 2 * g_, g_, chunk, 0).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->map(base + g_ + 1, g_, chunk, 0).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->set_access(base, 2 * g_, Access::kReadWrite).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->unmap(base + g_, g_).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->free_reservation(va, 2 * g_).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->copy_to_mapped(nullptr, &unused, 1).code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->copy_from_mapped(&unused, base + g_, 1).code(), Code::kInvalidArgument)
      << "reserved but unmapped";

  // cuMemMap maps from offset 0 only.
  ChunkHandle two;
  ASSERT_TRUE(backend_->create_chunk(2 * g_, &two).is_ok());
  EXPECT_EQ(backend_->map(base + g_, g_, two, g_).code(), Code::kUnsupported);
  ASSERT_TRUE(backend_->release_chunk(two).is_ok());

  // Imports: closed fd, a non-CUDA fd, a size larger than the chunk, a size off-granularity.
  EXPECT_EQ(backend_->import_chunk(-1, g_, &unused).code(), Code::kInvalidArgument);
  {
    const int closed = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(closed, 0);
    close(closed);  // a number that is surely not open now
    EXPECT_EQ(backend_->import_chunk(closed, g_, &unused).code(), Code::kInvalidArgument);
  }
  {
    const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    ASSERT_GE(devnull, 0);
    EXPECT_NE(backend_->import_chunk(devnull, g_, &unused).code(), Code::kOk);
    close(devnull);
    int exported = -1;
    ASSERT_TRUE(backend_->export_chunk(chunk, &exported).is_ok());
    // Too big: refused at import when the driver hands back the live handle (its size is
    // known), else by the map that needs the missing bytes (no trial map at import).
    ChunkHandle too_big;
    const Status imported = backend_->import_chunk(exported, 2 * g_, &too_big);
    if (imported.is_ok()) {
      void* scratch = nullptr;
      ASSERT_TRUE(backend_->reserve(2 * g_, &scratch).is_ok());
      const Status mapped = backend_->map(scratch, 2 * g_, too_big, 0);
      EXPECT_EQ(mapped.code(), Code::kInvalidArgument) << mapped.to_string();
      ASSERT_TRUE(backend_->release_chunk(too_big).is_ok());
      ASSERT_TRUE(backend_->free_reservation(scratch, 2 * g_).is_ok());
    } else {
      EXPECT_EQ(imported.code(), Code::kInvalidArgument) << imported.to_string();
    }
    EXPECT_EQ(backend_->import_chunk(exported, g_ / 2, &unused).code(), Code::kInvalidArgument);
    close(exported);
  }

  const BackendStats after = backend_->stats();
  EXPECT_EQ(after.live_chunks, before.live_chunks);
  EXPECT_EQ(after.live_reservations, before.live_reservations);
  EXPECT_EQ(after.live_mappings, before.live_mappings);
  EXPECT_EQ(after.mapped_bytes, before.mapped_bytes);

  ASSERT_TRUE(backend_->unmap(base, g_).is_ok());
  ASSERT_TRUE(backend_->release_chunk(chunk).is_ok());
  ASSERT_TRUE(backend_->free_reservation(va, 2 * g_).is_ok());
  EXPECT_EQ(open_fd_count(), fds_before) << "an fd leaked";
}

#endif  // PF_HAVE_CUDA

}  // namespace
}  // namespace pf::vmm
