// The host PageKernels against plain references (memcpy, memcmp, blake3_digest), argument
// validation, and kernels_for()'s choice of implementation.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/page_kernels.h"
#include "tests/support/pattern.h"

namespace pf::kernels {
namespace {

using testing::pattern;

TEST(HostKernels, Name) {
  EXPECT_EQ(make_host_kernels()->name(), "host");
}

TEST(HostKernels, CopyBatchMatchesMemcpy) {
  auto k = make_host_kernels();
  const std::vector<std::size_t> sizes = {1, 7, 64, 1000, 4096, 65543, 2u << 20};
  std::vector<std::vector<std::uint8_t>> src, dst, want;
  std::vector<CopyOp> ops;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    src.push_back(pattern(sizes[i] + 3, 10 + i));
    dst.push_back(pattern(sizes[i] + 6, 50 + i));  // guard bytes around the destination
  }
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    want.push_back(dst[i]);
    std::memcpy(want[i].data() + 3, src[i].data() + 1, sizes[i]);  // unaligned src and dst
    ops.push_back(CopyOp{src[i].data() + 1, dst[i].data() + 3, sizes[i]});
  }
  ops.push_back(CopyOp{nullptr, nullptr, 0});  // an empty op is fine
  ASSERT_TRUE(k->copy_batch(ops).is_ok());
  for (std::size_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(dst[i], want[i]) << "op " << i;
  EXPECT_TRUE(k->copy_batch({}).is_ok());
}

TEST(HostKernels, CopyBatchRejectsNullAndWritesNothing) {
  auto k = make_host_kernels();
  std::vector<std::uint8_t> a = pattern(100, 1), b(100, 0);
  const std::vector<CopyOp> ops = {{a.data(), b.data(), 100}, {nullptr, b.data(), 10}};
  const Status s = k->copy_batch(ops);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.to_string();
  EXPECT_EQ(b, std::vector<std::uint8_t>(100, 0));
  const std::vector<CopyOp> ops2 = {{a.data(), nullptr, 1}};
  EXPECT_EQ(k->copy_batch(ops2).code(), Code::kInvalidArgument);
}

TEST(HostKernels, DigestBatchMatchesBlake3) {
  auto k = make_host_kernels();
  const std::vector<std::size_t> sizes = {0, 1, 64, 1000, 1024, 1025, 4096, 65543, 2u << 20};
  std::vector<std::vector<std::uint8_t>> bufs;
  std::vector<ConstSpan> pages;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    bufs.push_back(pattern(sizes[i], 100 + i));
    pages.push_back(ConstSpan{bufs[i].data(), sizes[i]});
  }
  std::vector<Digest> out(pages.size());
  ASSERT_TRUE(k->digest_batch(pages, out).is_ok());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(out[i], blake3_digest(bufs[i].data(), sizes[i])) << "page " << i;
  }
  EXPECT_NE(out[7], out[8]);
}

// Batches above the threading threshold give the same digests, in order.
TEST(HostKernels, LargeDigestBatchIsDeterministic) {
  auto k = make_host_kernels();
  std::vector<std::vector<std::uint8_t>> bufs;
  std::vector<ConstSpan> pages;
  for (std::size_t i = 0; i < 9; ++i) {
    bufs.push_back(pattern((2u << 20) - 512 * i, 300 + i));
    pages.push_back(ConstSpan{bufs[i].data(), bufs[i].size()});
  }
  std::vector<Digest> out(pages.size());
  ASSERT_TRUE(k->digest_batch(pages, out).is_ok());
  for (std::size_t i = 0; i < pages.size(); ++i) {
    EXPECT_EQ(out[i], blake3_digest(bufs[i].data(), bufs[i].size())) << "page " << i;
  }
}

TEST(HostKernels, DigestBatchRejectsBadArguments) {
  auto k = make_host_kernels();
  std::vector<std::uint8_t> a = pattern(10, 1);
  const std::vector<ConstSpan> pages = {{a.data(), 10}, {nullptr, 5}};
  std::vector<Digest> out(2);
  EXPECT_EQ(k->digest_batch(pages, out).code(), Code::kInvalidArgument);
  std::vector<Digest> short_out(1);
  EXPECT_EQ(k->digest_batch(std::span(pages).first(1), std::span<Digest>()).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(k->digest_batch(pages, short_out).code(), Code::kInvalidArgument);
  const std::vector<ConstSpan> empty_page = {{nullptr, 0}};
  ASSERT_TRUE(k->digest_batch(empty_page, short_out).is_ok());
  EXPECT_EQ(short_out[0], blake3_digest(nullptr, 0));
}

TEST(HostKernels, CompareBatchMatchesMemcmp) {
  auto k = make_host_kernels();
  const std::vector<std::uint8_t> base = pattern(65543, 5);
  std::vector<std::uint8_t> same = base, first = base, last = base, mid = base;
  first[0] ^= 0x80;
  last[last.size() - 1] ^= 1;
  mid[40000] ^= 4;
  const std::vector<ConstSpan> a = {{base.data(), base.size()},
                                    {base.data(), base.size()},
                                    {base.data(), base.size()},
                                    {base.data(), base.size()},
                                    {base.data(), base.size()},
                                    {base.data(), 100},
                                    {nullptr, 0},
                                    {base.data() + 1, 5000},
                                    {base.data(), base.size()}};
  const std::vector<ConstSpan> b = {{same.data(), same.size()},
                                    {first.data(), first.size()},
                                    {last.data(), last.size()},
                                    {mid.data(), mid.size()},
                                    {base.data(), base.size()},
                                    {same.data(), 101},
                                    {nullptr, 0},
                                    {same.data() + 1, 5000},
                                    {last.data(), last.size() - 1}};
  const std::vector<std::uint8_t> want = {1, 0, 0, 0, 1, 0, 1, 1, 0};
  std::vector<std::uint8_t> equal(a.size(), 7);
  ASSERT_TRUE(k->compare_batch(a, b, equal).is_ok());
  EXPECT_EQ(equal, want);
}

TEST(HostKernels, CompareBatchRejectsBadArguments) {
  auto k = make_host_kernels();
  std::vector<std::uint8_t> x = pattern(8, 1);
  const std::vector<ConstSpan> one = {{x.data(), 8}};
  const std::vector<ConstSpan> two = {{x.data(), 8}, {x.data(), 8}};
  const std::vector<ConstSpan> null_one = {{nullptr, 8}};
  std::vector<std::uint8_t> eq1(1, 7), eq2(2, 7);
  EXPECT_EQ(k->compare_batch(one, two, eq1).code(), Code::kInvalidArgument);
  EXPECT_EQ(k->compare_batch(two, two, eq1).code(), Code::kInvalidArgument);
  EXPECT_EQ(k->compare_batch(one, null_one, eq1).code(), Code::kInvalidArgument);
  EXPECT_EQ(k->compare_batch(null_one, one, eq1).code(), Code::kInvalidArgument);
  EXPECT_EQ(eq1[0], 7);  // nothing written on failure
}

// ---- kernels_for --------------------------------------------------------------------

// A backend that only answers the questions kernels_for() asks.
class FakeBackend final : public vmm::Backend {
 public:
  FakeBackend(vmm::MemoryKind kind, std::string device) : kind_(kind), device_(device) {}
  std::string_view name() const override { return "fake"; }
  std::string device() const override { return device_; }
  vmm::MemoryKind memory_kind() const override { return kind_; }
  std::size_t granularity() const override { return 4096; }
  Status create_chunk(std::size_t, vmm::ChunkHandle*) override { return unsupported(); }
  Status export_chunk(const vmm::ChunkHandle&, int*) override { return unsupported(); }
  Status import_chunk(int, std::size_t, vmm::ChunkHandle*) override { return unsupported(); }
  Status release_chunk(const vmm::ChunkHandle&) override { return unsupported(); }
  Status reserve(std::size_t, void**) override { return unsupported(); }
  Status free_reservation(void*, std::size_t) override { return unsupported(); }
  Status map(void*, std::size_t, const vmm::ChunkHandle&, std::size_t) override {
    return unsupported();
  }
  Status set_access(void*, std::size_t, vmm::Access) override { return unsupported(); }
  Status unmap(void*, std::size_t) override { return unsupported(); }
  Status copy_to_mapped(void*, const void*, std::size_t) override { return unsupported(); }
  Status copy_from_mapped(void*, const void*, std::size_t) override { return unsupported(); }
  vmm::BackendStats stats() const override { return {}; }

 private:
  static Status unsupported() { return Status(Code::kUnsupported, "fake backend"); }
  vmm::MemoryKind kind_;
  std::string device_;
};

TEST(KernelsFor, HostMemoryGetsHostKernels) {
  FakeBackend host(vmm::MemoryKind::kHost, "host");
  auto k = kernels_for(host);
  ASSERT_TRUE(k.is_ok()) << k.status().to_string();
  EXPECT_EQ((*k)->name(), "host");
}

TEST(KernelsFor, DeviceMemoryGetsCudaKernelsOrUnavailable) {
  FakeBackend dev(vmm::MemoryKind::kDevice, "cuda:0");
  auto k = kernels_for(dev);
  auto direct = make_cuda_kernels(0);
  ASSERT_EQ(k.is_ok(), direct.is_ok());
  if (k.is_ok()) {
    EXPECT_EQ((*k)->name(), "cuda");
  } else {
    EXPECT_EQ(k.status().code(), Code::kUnavailable) << k.status().to_string();
    EXPECT_EQ(k.status().message(), direct.status().message());
  }
}

TEST(KernelsFor, MalformedDeviceNameIsRejected) {
  for (const char* name : {"host", "cuda:", "cuda:x", "cuda:1x", "cuda:-1", "gpu:0"}) {
    FakeBackend dev(vmm::MemoryKind::kDevice, name);
    auto k = kernels_for(dev);
    ASSERT_FALSE(k.is_ok()) << name;
    EXPECT_EQ(k.status().code(), Code::kUnsupported) << name;
  }
}

TEST(CudaKernels, MissingDeviceIsUnavailableNotFatal) {
  auto k = make_cuda_kernels(1 << 20);  // no machine has this many GPUs
  ASSERT_FALSE(k.is_ok());
  EXPECT_EQ(k.status().code(), Code::kUnavailable) << k.status().to_string();
  EXPECT_FALSE(k.status().message().empty());
  EXPECT_EQ(make_cuda_kernels(-1).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace pf::kernels
