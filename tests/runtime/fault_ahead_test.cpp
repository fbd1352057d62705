// FaultAhead (runtime/fault_ahead.h): destinations in fresh shared memory (a memfd, as the
// host pool is) are resident after the walk, those already claimed by a reader are left to
// it, contents are never changed, only whole pages inside a destination are touched, and
// memory that cannot be populated is skipped without harm.
#include "runtime/fault_ahead.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "base/unique_fd.h"

namespace pf::rt {
namespace {

const std::size_t kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

// A fresh memfd of `pages` pages mapped shared: no page of it exists until touched.
class FreshMemory {
 public:
  explicit FreshMemory(std::size_t pages, int prot = PROT_READ | PROT_WRITE)
      : bytes_(pages * kPage) {
    fd_ = UniqueFd(::memfd_create("fault_ahead_test", MFD_CLOEXEC));
    EXPECT_TRUE(fd_.valid());
    EXPECT_EQ(::ftruncate(fd_.get(), static_cast<off_t>(bytes_)), 0);
    void* p = ::mmap(nullptr, bytes_, prot, MAP_SHARED, fd_.get(), 0);
    EXPECT_NE(p, MAP_FAILED);
    base_ = static_cast<std::byte*>(p);
  }
  ~FreshMemory() { ::munmap(base_, bytes_); }
  std::byte* at(std::size_t page) const { return base_ + page * kPage; }
  // Whether each page is resident (in the memfd's page cache), by mincore.
  std::vector<bool> resident() const {
    std::vector<unsigned char> v(bytes_ / kPage);
    EXPECT_EQ(::mincore(base_, bytes_, v.data()), 0);
    std::vector<bool> out;
    for (unsigned char c : v) out.push_back((c & 1) != 0);
    return out;
  }

 private:
  std::size_t bytes_;
  UniqueFd fd_;
  std::byte* base_ = nullptr;
};

bool populate_supported() {
  FreshMemory m(1);
  return ::madvise(m.at(0), kPage, 23 /* MADV_POPULATE_WRITE */) == 0;
}

class FaultAheadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!populate_supported()) GTEST_SKIP() << "this kernel has no MADV_POPULATE_WRITE (5.14+)";
  }
};

TEST_F(FaultAheadTest, PopulatesEveryUnclaimedDestinationInFreshSharedMemory) {
  FreshMemory m(16);
  std::vector<std::byte*> dsts;
  for (std::size_t i = 0; i < 8; ++i) dsts.push_back(m.at(2 * i));  // 2 pages each
  ASSERT_EQ(m.resident(), std::vector<bool>(16, false));
  const std::atomic<std::size_t> claimed{0};
  FaultAhead ahead(dsts, 2 * kPage, claimed);
  ahead.join();
  EXPECT_EQ(ahead.populated(), 8u);
  EXPECT_EQ(m.resident(), std::vector<bool>(16, true));
  for (std::size_t i = 0; i < 16 * kPage; ++i) ASSERT_EQ(m.at(0)[i], std::byte{0}) << i;
}

TEST_F(FaultAheadTest, LeavesDestinationsAReaderHasClaimedToIt) {
  FreshMemory m(8);
  std::vector<std::byte*> dsts;
  for (std::size_t i = 0; i < 8; ++i) dsts.push_back(m.at(i));
  const std::atomic<std::size_t> claimed{3};
  FaultAhead ahead(dsts, kPage, claimed);
  ahead.join();
  EXPECT_EQ(ahead.populated(), 5u);
  EXPECT_EQ(m.resident(), (std::vector<bool>{false, false, false, true, true, true, true, true}));
}

TEST_F(FaultAheadTest, NeverChangesBytesAlreadyWritten) {
  FreshMemory m(4);
  for (std::size_t i = 0; i < kPage; ++i) m.at(1)[i] = std::byte(i * 7 + 1);
  std::vector<std::byte*> dsts{m.at(0), m.at(1), m.at(2), m.at(3)};
  const std::atomic<std::size_t> claimed{0};
  FaultAhead ahead(dsts, kPage, claimed);
  ahead.join();
  EXPECT_EQ(ahead.populated(), 4u);
  for (std::size_t i = 0; i < kPage; ++i) ASSERT_EQ(m.at(1)[i], std::byte(i * 7 + 1)) << i;
}

TEST_F(FaultAheadTest, TouchesOnlyWholePagesInsideAnUnalignedDestination) {
  FreshMemory m(4);
  // From 100 bytes into page 0 to 100 bytes into page 3: pages 1 and 2 lie wholly inside.
  std::vector<std::byte*> dsts{m.at(0) + 100};
  const std::atomic<std::size_t> claimed{0};
  FaultAhead ahead(dsts, 3 * kPage, claimed);
  ahead.join();
  EXPECT_EQ(ahead.populated(), 1u);
  EXPECT_EQ(m.resident(), (std::vector<bool>{false, true, true, false}));
}

TEST_F(FaultAheadTest, SkipsMemoryItCannotPopulateAndGoesOn) {
  FreshMemory read_only(2, PROT_READ);
  FreshMemory writable(2);
  std::vector<std::byte*> dsts{read_only.at(0), read_only.at(1), writable.at(0), writable.at(1)};
  const std::atomic<std::size_t> claimed{0};
  FaultAhead ahead(dsts, kPage, claimed);
  ahead.join();
  EXPECT_EQ(ahead.populated(), 2u);
  EXPECT_EQ(read_only.resident(), (std::vector<bool>{false, false}));
  EXPECT_EQ(writable.resident(), (std::vector<bool>{true, true}));
}

}  // namespace
}  // namespace pf::rt
