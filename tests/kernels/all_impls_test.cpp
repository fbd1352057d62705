// One suite, every PageKernels implementation: each result is compared byte for byte with
// the host implementation's result on the same bytes (DESIGN §3 kernels/, §9). An
// implementation this machine cannot run (no CUDA build, no driver, no GPU) is skipped with
// the reason make_cuda_kernels() gave.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/page_kernels.h"
#include "tests/support/pattern.h"

#if defined(PF_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

namespace pf::kernels {
namespace {

using testing::pattern;

constexpr std::size_t k2MiB = std::size_t{2} << 20;
const std::vector<std::size_t> kPageSizes = {1, 64, 1000, 1024, 1025, 4096, 65536 + 7, k2MiB};

// Memory of the kind an implementation serves, plus host<->memory copies for the test.
class TestMemory {
 public:
  virtual ~TestMemory() = default;
  virtual std::uint8_t* alloc(std::size_t bytes) = 0;
  virtual void upload(void* dst, const void* src, std::size_t bytes) = 0;
  virtual void download(void* dst, const void* src, std::size_t bytes) = 0;
};

class HostMemory final : public TestMemory {
 public:
  std::uint8_t* alloc(std::size_t bytes) override {
    blocks_.push_back(std::make_unique<std::uint8_t[]>(bytes));
    return blocks_.back().get();
  }
  void upload(void* dst, const void* src, std::size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, std::size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }

 private:
  std::vector<std::unique_ptr<std::uint8_t[]>> blocks_;
};

#if defined(PF_HAVE_CUDA)
class CudaMemory final : public TestMemory {
 public:
  ~CudaMemory() override {
    for (void* p : blocks_) cudaFree(p);
  }
  std::uint8_t* alloc(std::size_t bytes) override {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, bytes), cudaSuccess);
    blocks_.push_back(p);
    return static_cast<std::uint8_t*>(p);
  }
  void upload(void* dst, const void* src, std::size_t bytes) override {
    EXPECT_EQ(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  void download(void* dst, const void* src, std::size_t bytes) override {
    EXPECT_EQ(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  }

 private:
  std::vector<void*> blocks_;
};
#endif

class AllImpls : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    host_ = make_host_kernels();
    if (GetParam() == "host") {
      impl_ = make_host_kernels();
      mem_ = std::make_unique<HostMemory>();
      return;
    }
    auto k = make_cuda_kernels(0);
    if (!k.is_ok()) GTEST_SKIP() << k.status().message();
#if defined(PF_HAVE_CUDA)
    impl_ = std::move(k).value();
    mem_ = std::make_unique<CudaMemory>();
#else
    FAIL() << "make_cuda_kernels succeeded in a build without CUDA";
#endif
  }

  // A copy of `bytes` in the implementation's memory.
  std::uint8_t* place(const std::vector<std::uint8_t>& bytes) {
    std::uint8_t* p = mem_->alloc(bytes.size());
    mem_->upload(p, bytes.data(), bytes.size());
    return p;
  }
  std::vector<std::uint8_t> fetch(const std::uint8_t* p, std::size_t bytes) {
    std::vector<std::uint8_t> out(bytes);
    mem_->download(out.data(), p, bytes);
    return out;
  }

  std::unique_ptr<PageKernels> host_;  // the reference
  std::unique_ptr<PageKernels> impl_;  // under test
  std::unique_ptr<TestMemory> mem_;
};

TEST_P(AllImpls, NameMatches) {
  EXPECT_EQ(impl_->name(), GetParam());
}

TEST_P(AllImpls, DigestOfEachPageSize) {
  for (std::size_t size : kPageSizes) {
    const std::vector<std::uint8_t> data = pattern(size, size);
    const std::vector<ConstSpan> page = {{place(data), size}};
    const std::vector<ConstSpan> host_page = {{data.data(), size}};
    std::vector<Digest> got(1), want(1);
    ASSERT_TRUE(impl_->digest_batch(page, got).is_ok()) << size;
    ASSERT_TRUE(host_->digest_batch(host_page, want).is_ok());
    EXPECT_EQ(got[0].hex(), want[0].hex()) << "page size " << size;
    EXPECT_EQ(got[0], blake3_digest(data.data(), size)) << "page size " << size;
  }
}

// Several pages of mixed sizes packed into one allocation at odd offsets (every alignment
// the device loads distinguish), including an empty page and a repeated page.
TEST_P(AllImpls, DigestMixedBatchPackedUnaligned) {
  std::vector<std::size_t> sizes = kPageSizes;
  sizes.insert(sizes.end(), {0, 3, 2048, 3073, 1024 * 5 + 1, k2MiB + 1});
  std::vector<std::size_t> offsets;
  std::size_t total = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    total += i % 4;  // offsets with alignment 16, 1, 2, 3, ...
    offsets.push_back(total);
    total += sizes[i];
  }
  const std::vector<std::uint8_t> data = pattern(total, 77);
  const std::uint8_t* base = place(data);
  std::vector<ConstSpan> pages, host_pages;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    pages.push_back({sizes[i] ? base + offsets[i] : nullptr, sizes[i]});
    host_pages.push_back({data.data() + offsets[i], sizes[i]});
  }
  pages.push_back(pages[5]);  // the same page twice in one batch
  host_pages.push_back(host_pages[5]);
  std::vector<Digest> got(pages.size()), want(pages.size());
  ASSERT_TRUE(impl_->digest_batch(pages, got).is_ok());
  ASSERT_TRUE(host_->digest_batch(host_pages, want).is_ok());
  for (std::size_t i = 0; i < pages.size(); ++i) {
    EXPECT_EQ(got[i].hex(), want[i].hex()) << "page " << i << " size " << pages[i].bytes;
  }
  EXPECT_EQ(got.back(), got[5]);
}

TEST_P(AllImpls, DigestManySmallPages) {
  const std::size_t n = 300, size = 4096;
  const std::vector<std::uint8_t> data = pattern(n * size, 5);
  const std::uint8_t* base = place(data);
  std::vector<ConstSpan> pages, host_pages;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t len = size - (i % 7) * 300;  // 1 to 4 chunks
    pages.push_back({base + i * size, len});
    host_pages.push_back({data.data() + i * size, len});
  }
  std::vector<Digest> got(n), want(n);
  ASSERT_TRUE(impl_->digest_batch(pages, got).is_ok());
  ASSERT_TRUE(host_->digest_batch(host_pages, want).is_ok());
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(got[i].hex(), want[i].hex()) << "page " << i;
}

TEST_P(AllImpls, CopyBatchMatchesHost) {
  std::size_t total = 0;
  std::vector<std::size_t> src_off, dst_off;
  for (std::size_t i = 0; i < kPageSizes.size(); ++i) {
    src_off.push_back(total + i % 3);
    dst_off.push_back(total + (i + 1) % 5);
    total += kPageSizes[i] + 8;
  }
  const std::vector<std::uint8_t> src = pattern(total, 1);
  const std::vector<std::uint8_t> dst_before = pattern(total, 2);
  std::uint8_t* dsrc = place(src);
  std::uint8_t* ddst = place(dst_before);
  std::vector<std::uint8_t> want = dst_before;
  std::vector<CopyOp> ops, host_ops;
  for (std::size_t i = 0; i < kPageSizes.size(); ++i) {
    ops.push_back({dsrc + src_off[i], ddst + dst_off[i], kPageSizes[i]});
    host_ops.push_back({src.data() + src_off[i], want.data() + dst_off[i], kPageSizes[i]});
  }
  ops.push_back({nullptr, nullptr, 0});
  host_ops.push_back({nullptr, nullptr, 0});
  ASSERT_TRUE(impl_->copy_batch(ops).is_ok());
  ASSERT_TRUE(host_->copy_batch(host_ops).is_ok());
  const std::vector<std::uint8_t> got = fetch(ddst, total);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "first difference at byte "
                           << (std::mismatch(got.begin(), got.end(), want.begin()).first -
                               got.begin());
  EXPECT_NE(got, dst_before);
}

TEST_P(AllImpls, CompareBatchMatchesHost) {
  const std::vector<std::uint8_t> base = pattern(k2MiB, 9);
  std::vector<std::uint8_t> first = base, last = base, mid = base;
  first[0] ^= 0x80;
  last[k2MiB - 1] ^= 1;
  mid[k2MiB / 2 + 3] ^= 4;
  const std::uint8_t* d_base = place(base);
  const std::uint8_t* d_same = place(base);
  const std::uint8_t* d_first = place(first);
  const std::uint8_t* d_last = place(last);
  const std::uint8_t* d_mid = place(mid);
  struct Case {
    std::size_t a_off, b_off, a_len, b_len;
    int b;  // 0 same, 1 first, 2 last, 3 mid, 4 base itself
    std::uint8_t want;
  };
  const std::vector<Case> cases = {
      {0, 0, k2MiB, k2MiB, 0, 1},
      {0, 0, k2MiB, k2MiB, 1, 0},
      {0, 0, k2MiB, k2MiB, 2, 0},
      {0, 0, k2MiB, k2MiB, 3, 0},
      {0, 0, k2MiB, k2MiB, 4, 1},
      {0, 0, 100, 101, 0, 0},
      {0, 0, 0, 0, 0, 1},
      {1, 1, 65536 + 7, 65536 + 7, 0, 1},
      {3, 3, k2MiB - 3, k2MiB - 3, 2, 0},
      {0, 0, k2MiB - 1, k2MiB - 1, 2, 1},
      {1, 0, 1000, 1000, 0, 0},
      {5, 5, 1, 1, 1, 1},
      {0, 0, 1, 1, 1, 0},
      {8, 8, 1025, 1025, 3, 1},
  };
  const std::uint8_t* dev_b[] = {d_same, d_first, d_last, d_mid, d_base};
  const std::uint8_t* host_b[] = {base.data(), first.data(), last.data(), mid.data(), base.data()};
  std::vector<ConstSpan> a, b, ha, hb;
  std::vector<std::uint8_t> expected;
  for (const Case& c : cases) {
    a.push_back({c.a_len ? d_base + c.a_off : nullptr, c.a_len});
    b.push_back({c.b_len ? dev_b[c.b] + c.b_off : nullptr, c.b_len});
    ha.push_back({base.data() + c.a_off, c.a_len});
    hb.push_back({host_b[c.b] + c.b_off, c.b_len});
    expected.push_back(c.want);
  }
  std::vector<std::uint8_t> got(cases.size(), 7), want(cases.size(), 7);
  ASSERT_TRUE(impl_->compare_batch(a, b, got).is_ok());
  ASSERT_TRUE(host_->compare_batch(ha, hb, want).is_ok());
  EXPECT_EQ(got, want);
  EXPECT_EQ(got, expected);
}

TEST_P(AllImpls, InvalidArgumentsAreRejected) {
  std::uint8_t* p = place(pattern(64, 3));
  const std::vector<ConstSpan> one = {{p, 64}};
  const std::vector<ConstSpan> two = {{p, 64}, {p, 32}};
  const std::vector<ConstSpan> null_page = {{nullptr, 64}};
  std::vector<Digest> d1(1), d2(2);
  std::vector<std::uint8_t> e1(1), e2(2);
  EXPECT_EQ(impl_->digest_batch(one, d2).code(), Code::kInvalidArgument);
  EXPECT_EQ(impl_->digest_batch(null_page, d1).code(), Code::kInvalidArgument);
  EXPECT_EQ(impl_->compare_batch(one, two, e1).code(), Code::kInvalidArgument);
  EXPECT_EQ(impl_->compare_batch(two, two, e1).code(), Code::kInvalidArgument);
  EXPECT_EQ(impl_->compare_batch(one, null_page, e1).code(), Code::kInvalidArgument);
  const std::vector<CopyOp> bad_copy = {{p, nullptr, 8}};
  EXPECT_EQ(impl_->copy_batch(bad_copy).code(), Code::kInvalidArgument);
  // Empty batches are fine.
  EXPECT_TRUE(impl_->copy_batch({}).is_ok());
  EXPECT_TRUE(impl_->digest_batch({}, {}).is_ok());
  EXPECT_TRUE(impl_->compare_batch({}, {}, {}).is_ok());
}

INSTANTIATE_TEST_SUITE_P(kernels, AllImpls, ::testing::Values("host", "cuda"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace pf::kernels
