// Issue 14 (GPU readiness) over every PageKernels implementation, compared with the host
// result: the stream argument of kv_copy (0 = legacy default stream, kOwnStream = the
// kernels' own, anything else = that stream), fence(), the one-op copy path, and batches
// larger than the scratch the CUDA kernels allocate at construction (cuda_buffers.cuh), which
// must grow without changing a byte. The CUDA cases skip with make_cuda_kernels()'s reason on
// a machine without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/page_kernels.h"
#include "kernels/stream_choice.h"
#include "tests/kernels/impl_fixture.h"
#include "tests/support/pattern.h"

namespace pf::kernels {
namespace {

using testing::pattern;

class StreamsScratch : public AllImpls {
 protected:
  // A contiguous engine of `tokens` tokens, [layer][K|V][token][head][dim], stored into
  // consecutive pages on `stream`; returns the pool bytes (compared with the host's).
  std::vector<std::uint8_t> store(const KVPageFormat& f, std::uint32_t tokens, void* stream) {
    const std::size_t row = f.row_bytes();
    const std::size_t half = std::size_t{tokens} * f.kv_heads * row;  // K or V of one layer
    std::uint8_t* engine = place(pattern(std::size_t{f.layers} * 2 * half, 0xe1));
    std::vector<std::uint64_t> k, v;
    for (std::uint32_t l = 0; l < f.layers; ++l) {
      k.push_back(reinterpret_cast<std::uintptr_t>(engine + (2 * l) * half));
      v.push_back(reinterpret_cast<std::uintptr_t>(engine + (2 * l + 1) * half));
    }
    const std::uint32_t pages = (tokens + f.page_tokens - 1) / f.page_tokens;
    const std::size_t pool_bytes = std::size_t{pages} * f.page_bytes();
    std::uint8_t* pool = place(std::vector<std::uint8_t>(pool_bytes, 0));
    std::vector<KVRun> runs;
    for (std::uint32_t p = 0; p < pages; ++p) {
      const std::uint32_t count = std::min(f.page_tokens, tokens - p * f.page_tokens);
      runs.push_back({reinterpret_cast<std::byte*>(pool + p * f.page_bytes()), 0, count,
                      std::uint64_t{p} * f.page_tokens});
    }
    const KVEngineLayout layout{k,
                                v,
                                tokens,
                                0,
                                static_cast<std::int64_t>(f.kv_heads * row),
                                static_cast<std::int64_t>(row)};
    const Status s =
        impl_->kv_copy({f, layout, runs, 0, f.layers, KVDirection::kEngineToPages}, stream);
    EXPECT_TRUE(s.is_ok()) << s.message();
    EXPECT_TRUE(impl_->fence().is_ok());
    return fetch(pool, pool_bytes);
  }
};

TEST_P(StreamsScratch, KvCopyGivesTheSameBytesOnEveryStreamArgument) {
  const KVPageFormat f{3, 2, 16, 4, 4};
  const std::vector<std::uint8_t> legacy = store(f, 10, nullptr);
  ASSERT_FALSE(legacy.empty());
  EXPECT_NE(legacy, std::vector<std::uint8_t>(legacy.size(), 0)) << "nothing was stored";
  EXPECT_EQ(store(f, 10, kOwnStream), legacy) << "kOwnStream";
#if defined(PF_HAVE_CUDA)
  if (GetParam() == "cuda") {
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    EXPECT_EQ(store(f, 10, s), legacy) << "a caller's stream";
    EXPECT_EQ(store(f, 10, cudaStreamPerThread), legacy) << "cudaStreamPerThread";
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  }
#endif
}

TEST_P(StreamsScratch, FenceWithNothingInFlightSucceeds) {
  EXPECT_TRUE(impl_->fence().is_ok());
  const std::vector<CopyOp> bad = {{nullptr, nullptr, 8}};
  EXPECT_EQ(impl_->copy_batch(bad).code(), Code::kInvalidArgument);  // rejected before launch
  EXPECT_TRUE(impl_->fence().is_ok());
}

// A one-page copy-on-write is one plain copy on the CUDA kernels (no descriptors, no CUB):
// alone, among zero-byte ops, and at odd offsets.
TEST_P(StreamsScratch, OneOpCopyMatchesHost) {
  const std::size_t bytes = (std::size_t{2} << 20) + 3;
  const std::vector<std::uint8_t> src = pattern(bytes + 16, 31);
  const std::vector<std::uint8_t> before = pattern(bytes + 16, 32);
  std::vector<std::uint8_t> want = before;
  std::copy_n(src.begin() + 1, bytes, want.begin() + 5);
  for (const std::size_t zeros : {std::size_t{0}, std::size_t{3}}) {
    SCOPED_TRACE("zero-byte ops: " + std::to_string(zeros));
    std::uint8_t* dsrc = place(src);
    std::uint8_t* ddst = place(before);
    std::vector<CopyOp> ops(zeros, CopyOp{nullptr, nullptr, 0});
    ops.insert(ops.begin() + static_cast<std::ptrdiff_t>(zeros / 2),
               CopyOp{dsrc + 1, ddst + 5, bytes});
    ASSERT_TRUE(impl_->copy_batch(ops).is_ok());
    EXPECT_TRUE(fetch(ddst, want.size()) == want);
  }
}

// Batches past every construction size of the CUDA scratch (1 MiB of descriptors, 64 MiB of
// page bytes per digest batch, 1 MiB of results): the scratch grows and results stay exact,
// also for a small batch after the growth.
TEST_P(StreamsScratch, BatchesBeyondConstructionScratchMatchHost) {
  const std::size_t n_small = 40000;  // 40000 * 32 B of descriptors and digests > 1 MiB
  const std::size_t big = std::size_t{24} << 20;
  const std::size_t n_big = 3;  // 72 MiB: 73728 chunk values > 64 MiB
  const std::vector<std::uint8_t> data = pattern(n_small + n_big * big, 41);
  const std::uint8_t* base = place(data);
  std::vector<ConstSpan> pages, host_pages;
  for (std::size_t i = 0; i < n_small; ++i) {
    pages.push_back({base + i, 1});
    host_pages.push_back({data.data() + i, 1});
  }
  for (std::size_t i = 0; i < n_big; ++i) {
    pages.push_back({base + n_small + i * big, big});
    host_pages.push_back({data.data() + n_small + i * big, big});
  }
  std::vector<Digest> got(pages.size()), want(pages.size());
  ASSERT_TRUE(impl_->digest_batch(pages, got).is_ok());
  ASSERT_TRUE(host_->digest_batch(host_pages, want).is_ok());
  for (std::size_t i = 0; i < pages.size(); ++i) ASSERT_EQ(got[i], want[i]) << "page " << i;

  // 50000 copy ops: 1.2 MB of descriptors.
  const std::size_t n_ops = 50000;
  std::uint8_t* dst = place(std::vector<std::uint8_t>(2 * n_ops, 0));
  std::vector<CopyOp> ops;
  for (std::size_t i = 0; i < n_ops; ++i) ops.push_back({base + i, dst + 2 * i, 1});
  ASSERT_TRUE(impl_->copy_batch(ops).is_ok());
  const std::vector<std::uint8_t> copied = fetch(dst, 2 * n_ops);
  for (std::size_t i = 0; i < n_ops; ++i) {
    ASSERT_EQ(copied[2 * i], data[i]) << "op " << i;
    ASSERT_EQ(copied[2 * i + 1], 0) << "op " << i;
  }

  // 40000 compare pairs (alternately equal and different): 1.3 MB of descriptors.
  std::vector<ConstSpan> a, b;
  for (std::size_t i = 0; i < n_small; ++i) {
    a.push_back({base + i, 1});
    b.push_back({i % 2 == 0 ? base + i : dst + 2 * i + 1, 1});
  }
  std::vector<std::uint8_t> equal(n_small, 7);
  ASSERT_TRUE(impl_->compare_batch(a, b, equal).is_ok());
  for (std::size_t i = 0; i < n_small; ++i) {
    ASSERT_EQ(equal[i], (i % 2 == 0 || data[i] == 0) ? 1 : 0) << "pair " << i;
  }

  // A small batch after the growth.
  std::vector<Digest> one(1);
  ASSERT_TRUE(impl_->digest_batch(std::vector<ConstSpan>{{base, 1025}}, one).is_ok());
  EXPECT_EQ(one[0], blake3_digest(data.data(), 1025));
}

#if defined(PF_HAVE_CUDA)
// Stream 0 is the legacy default stream (PyTorch's default stream): a store asked for on it
// is ordered after the engine's work there. With 0 taken as the kernels' own non-blocking
// stream (the defect), the store ran concurrently with a long legacy-stream memset and read
// the engine's bytes before the last write; the pages then held the old bytes.
TEST_P(StreamsScratch, StoreOnStreamZeroWaitsForLegacyStreamWork) {
  if (GetParam() != "cuda") GTEST_SKIP() << "CUDA streams only";
  const KVPageFormat f{2, 2, 64, 16, 4};
  const std::uint32_t tokens = 64;
  const std::size_t engine_bytes = std::size_t{f.layers} * 2 * tokens * f.kv_heads * f.row_bytes();
  std::uint8_t* engine = place(std::vector<std::uint8_t>(engine_bytes, 0));
  const std::uint32_t pages = tokens / f.page_tokens;
  std::uint8_t* pool = place(std::vector<std::uint8_t>(std::size_t{pages} * f.page_bytes(), 0));
  std::vector<std::uint64_t> k, v;
  const std::size_t half = std::size_t{tokens} * f.kv_heads * f.row_bytes();
  for (std::uint32_t l = 0; l < f.layers; ++l) {
    k.push_back(reinterpret_cast<std::uintptr_t>(engine + (2 * l) * half));
    v.push_back(reinterpret_cast<std::uintptr_t>(engine + (2 * l + 1) * half));
  }
  const std::size_t busy_bytes = std::size_t{1} << 30;
  void* busy = nullptr;
  if (cudaMalloc(&busy, busy_bytes) != cudaSuccess) GTEST_SKIP() << "no 1 GiB for the test";
  // The engine's work on the legacy stream: a long memset, then the KV write.
  ASSERT_EQ(cudaMemsetAsync(busy, 1, busy_bytes, nullptr), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(engine, 0x6b, engine_bytes, nullptr), cudaSuccess);
  std::vector<KVRun> runs;
  for (std::uint32_t p = 0; p < pages; ++p) {
    runs.push_back({reinterpret_cast<std::byte*>(pool + p * f.page_bytes()), 0, f.page_tokens,
                    std::uint64_t{p} * f.page_tokens});
  }
  const KVEngineLayout layout{k,
                              v,
                              tokens,
                              0,
                              static_cast<std::int64_t>(f.kv_heads * f.row_bytes()),
                              static_cast<std::int64_t>(f.row_bytes())};
  ASSERT_TRUE(
      impl_->kv_copy({f, layout, runs, 0, f.layers, KVDirection::kEngineToPages}, nullptr).is_ok());
  const std::vector<std::uint8_t> got = fetch(pool, std::size_t{pages} * f.page_bytes());
  EXPECT_EQ(got, std::vector<std::uint8_t>(got.size(), 0x6b))
      << "the store read the engine before the legacy stream's last write";
  EXPECT_EQ(cudaFree(busy), cudaSuccess);
}
#endif

INSTANTIATE_TEST_SUITE_P(kernels, StreamsScratch, ::testing::Values("host", "cuda"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace pf::kernels
