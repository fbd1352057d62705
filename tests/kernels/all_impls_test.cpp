// One suite, every PageKernels implementation: each result is compared byte for byte with
// the host implementation's result on the same bytes (DESIGN §3 kernels/, §9). An
// implementation this machine cannot run (no CUDA build, no driver, no GPU) is skipped with
// the reason make_cuda_kernels() gave.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/page_kernels.h"
#include "tests/kernels/impl_fixture.h"
#include "tests/support/pattern.h"

namespace pf::kernels {
namespace {

using testing::pattern;

constexpr std::size_t k2MiB = std::size_t{2} << 20;
const std::vector<std::size_t> kPageSizes = {1, 64, 1000, 1024, 1025, 4096, 65536 + 7, k2MiB};

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

// ---- layout gather/scatter (kv_layout.h) ----------------------------------------------
// Engine layouts as the engines lay them out, in elements: the base of layer l's K or V,
// and block/token/head strides. The expected bytes come from index arithmetic on a logical
// array E[layer][K|V][token][head][dim], independent of kv_layout.h's address helpers.
struct EngineShape {
  std::string name;
  std::uint64_t block_tokens;
  std::int64_t block_stride, token_stride, head_stride;  // elements
  std::function<std::int64_t(std::uint32_t layer, int kv)> base;
  std::int64_t total;  // elements in the engine allocation
};

std::vector<EngineShape> engine_shapes(std::uint32_t L, std::uint32_t H, std::uint32_t D,
                                       std::uint32_t blocks, std::uint32_t bs) {
  const std::int64_t HD = std::int64_t{H} * D;
  const std::int64_t S = std::int64_t{blocks} * bs;  // tokens the engine holds
  std::vector<EngineShape> out;
  // vLLM 0.33, per layer [num_blocks, H, block_size, 2*D]: K then V in the last axis.
  out.push_back({"vllm_0_33", bs, std::int64_t{H} * bs * 2 * D, 2 * std::int64_t{D},
                 std::int64_t{bs} * 2 * D,
                 [=](std::uint32_t l, int kv) { return std::int64_t{l} * 2 * S * HD + kv * D; },
                 std::int64_t{L} * 2 * S * HD});
  // vLLM before 0.33 (FlashAttention), per layer (2, num_blocks, block_size, H, D).
  out.push_back({"vllm_flash", bs, bs * HD, HD, D,
                 [=](std::uint32_t l, int kv) { return (std::int64_t{l} * 2 + kv) * S * HD; },
                 std::int64_t{L} * 2 * S * HD});
  // vLLM FlashInfer, per layer (num_blocks, 2, block_size, H, D).
  out.push_back(
      {"vllm_flashinfer", bs, 2 * bs * HD, HD, D,
       [=](std::uint32_t l, int kv) { return std::int64_t{l} * 2 * S * HD + kv * bs * HD; },
       std::int64_t{L} * 2 * S * HD});
  // transformers, per layer K and V of (1, H, seq, D): heads are not adjacent.
  out.push_back({"transformers", static_cast<std::uint64_t>(S), S * HD, D, S * D,
                 [=](std::uint32_t l, int kv) { return (std::int64_t{l} * 2 + kv) * S * HD; },
                 std::int64_t{L} * 2 * S * HD});
  // SGLang host pool "page_first": (2, size, L, H, D).
  out.push_back({"sglang_page_first", static_cast<std::uint64_t>(S), S * L * HD, L * HD, D,
                 [=](std::uint32_t l, int kv) { return kv * S * L * HD + std::int64_t{l} * HD; },
                 2 * S * L * HD});
  // SGLang host pool "page_first_direct": (2, page_num, L, page_size, H, D).
  out.push_back(
      {"sglang_page_first_direct", bs, std::int64_t{L} * bs * HD, HD, D,
       [=](std::uint32_t l, int kv) { return kv * S * L * HD + std::int64_t{l} * bs * HD; },
       2 * S * L * HD});
  return out;
}

struct KVCase {
  KVPageFormat format;
  std::uint32_t blocks, block_size, n_pages;
};

class KVLayoutImpls : public AllImpls {
 protected:
  // Runs putting engine tokens [first_token, first_token + n) into pages `pages` (in that
  // order) starting at slot `first_slot` of the first page.
  static std::vector<KVRun> make_runs(const KVPageFormat& f, std::uint8_t* pool,
                                      std::vector<std::uint32_t> pages, std::uint32_t first_slot,
                                      std::uint64_t first_token, std::uint32_t n) {
    std::vector<KVRun> runs;
    std::uint32_t slot = first_slot;
    std::size_t p = 0;
    while (n > 0) {
      const std::uint32_t count = std::min(n, f.page_tokens - slot);
      runs.push_back(
          KVRun{reinterpret_cast<std::byte*>(pool + std::size_t{pages[p]} * f.page_bytes()), slot,
                count, first_token});
      first_token += count;
      n -= count;
      slot = 0;
      ++p;
    }
    return runs;
  }

  // The page bytes a store of `runs` (layers [lb, le)) must produce from logical array E
  // (host bytes), given the pool's prior bytes.
  static void expect_store(const KVPageFormat& f, const std::vector<std::uint8_t>& logical,
                           std::uint32_t tokens, const std::vector<KVRun>& runs,
                           std::uint8_t* pool_dev, std::vector<std::uint8_t>& pool_host,
                           std::uint32_t lb, std::uint32_t le) {
    const std::size_t row = f.row_bytes();
    for (const KVRun& r : runs) {
      const std::size_t page_off =
          static_cast<std::size_t>(reinterpret_cast<std::uint8_t*>(r.page) - pool_dev);
      for (std::uint32_t l = lb; l < le; ++l)
        for (int kv = 0; kv < 2; ++kv)
          for (std::uint32_t t = 0; t < r.count; ++t)
            for (std::uint32_t h = 0; h < f.kv_heads; ++h) {
              const std::size_t src =
                  (((std::size_t{l} * 2 + kv) * tokens + r.engine_token + t) * f.kv_heads + h) *
                  row;
              const std::size_t dst =
                  page_off +
                  (((std::size_t{l} * 2 + kv) * f.page_tokens + r.page_slot + t) * f.kv_heads + h) *
                      row;
              std::memcpy(pool_host.data() + dst, logical.data() + src, row);
            }
    }
  }

  void run_case(const KVCase& c) {
    const KVPageFormat& f = c.format;
    const std::uint32_t tokens = c.blocks * c.block_size;
    const std::size_t e = f.elem_bytes;
    const std::size_t row = f.row_bytes();
    for (const EngineShape& shape :
         engine_shapes(f.layers, f.kv_heads, f.head_dim, c.blocks, c.block_size)) {
      SCOPED_TRACE(shape.name + " elem=" + std::to_string(e) + " D=" + std::to_string(f.head_dim));
      // Logical E and its physical placement in the engine allocation.
      const std::vector<std::uint8_t> logical =
          pattern(std::size_t{f.layers} * 2 * tokens * f.kv_heads * row, 0x5eed + e);
      std::vector<std::uint8_t> engine(static_cast<std::size_t>(shape.total) * e, 0);
      auto engine_off = [&](std::uint32_t l, int kv, std::uint64_t t, std::uint32_t h) {
        return static_cast<std::size_t>(
                   shape.base(l, kv) +
                   static_cast<std::int64_t>(t / shape.block_tokens) * shape.block_stride +
                   static_cast<std::int64_t>(t % shape.block_tokens) * shape.token_stride +
                   std::int64_t{h} * shape.head_stride) *
               e;
      };
      for (std::uint32_t l = 0; l < f.layers; ++l)
        for (int kv = 0; kv < 2; ++kv)
          for (std::uint32_t t = 0; t < tokens; ++t)
            for (std::uint32_t h = 0; h < f.kv_heads; ++h)
              std::memcpy(engine.data() + engine_off(l, kv, t, h),
                          logical.data() +
                              (((std::size_t{l} * 2 + kv) * tokens + t) * f.kv_heads + h) * row,
                          row);
      std::uint8_t* engine_dev = place(engine);
      std::vector<std::uint64_t> k_ptrs, v_ptrs;
      for (std::uint32_t l = 0; l < f.layers; ++l) {
        k_ptrs.push_back(reinterpret_cast<std::uintptr_t>(engine_dev + shape.base(l, 0) * e));
        v_ptrs.push_back(reinterpret_cast<std::uintptr_t>(engine_dev + shape.base(l, 1) * e));
      }
      const KVEngineLayout layout{k_ptrs,
                                  v_ptrs,
                                  shape.block_tokens,
                                  shape.block_stride * static_cast<std::int64_t>(e),
                                  shape.token_stride * static_cast<std::int64_t>(e),
                                  shape.head_stride * static_cast<std::int64_t>(e)};

      // Store every token, pages shuffled, starting mid-page.
      std::vector<std::uint8_t> pool_host(std::size_t{c.n_pages} * f.page_bytes(), 0);
      std::uint8_t* pool_dev = place(pool_host);
      std::vector<std::uint32_t> order(c.n_pages);
      for (std::uint32_t i = 0; i < c.n_pages; ++i) order[i] = (i * 7 + 3) % c.n_pages;
      const std::vector<KVRun> runs = make_runs(f, pool_dev, order, 1, 0, tokens);
      KVCopy store{f, layout, runs, 0, f.layers, KVDirection::kEngineToPages};
      ASSERT_TRUE(impl_->kv_copy(store, nullptr).is_ok());
      expect_store(f, logical, tokens, runs, pool_dev, pool_host, 0, f.layers);
      ASSERT_EQ(fetch(pool_dev, pool_host.size()), pool_host);

      // A store of one layer only (a per-layer save) touches that layer only.
      std::vector<std::uint8_t> zero(pool_host.size(), 0);
      std::uint8_t* pool2 = place(zero);
      const std::vector<KVRun> runs2 = make_runs(f, pool2, order, 1, 0, tokens);
      const std::uint32_t last = f.layers - 1;
      KVCopy one_layer{f, layout, runs2, last, f.layers, KVDirection::kEngineToPages};
      ASSERT_TRUE(impl_->kv_copy(one_layer, nullptr).is_ok());
      expect_store(f, logical, tokens, runs2, pool2, zero, last, f.layers);
      ASSERT_EQ(fetch(pool2, zero.size()), zero);

      // Load the pages back into a zeroed engine allocation, shifted by one block: token
      // t of the pages lands at engine token t + block_size.
      const std::uint32_t shifted = tokens - c.block_size;
      std::vector<std::uint8_t> blank(engine.size(), 0);
      std::uint8_t* engine2 = place(blank);
      std::vector<std::uint64_t> k2, v2;
      for (std::uint32_t l = 0; l < f.layers; ++l) {
        k2.push_back(reinterpret_cast<std::uintptr_t>(engine2 + shape.base(l, 0) * e));
        v2.push_back(reinterpret_cast<std::uintptr_t>(engine2 + shape.base(l, 1) * e));
      }
      const KVEngineLayout layout2{k2,
                                   v2,
                                   layout.block_tokens,
                                   layout.block_stride,
                                   layout.token_stride,
                                   layout.head_stride};
      const std::vector<KVRun> back = make_runs(f, pool_dev, order, 1, c.block_size, shifted);
      // The same pages, but engine tokens start one block later; page tokens are 0..shifted.
      KVCopy load{f, layout2, back, 0, f.layers, KVDirection::kPagesToEngine};
      ASSERT_TRUE(impl_->kv_copy(load, nullptr).is_ok());
      std::vector<std::uint8_t> want(engine.size(), 0);
      for (std::uint32_t l = 0; l < f.layers; ++l)
        for (int kv = 0; kv < 2; ++kv)
          for (std::uint32_t t = 0; t < shifted; ++t)
            for (std::uint32_t h = 0; h < f.kv_heads; ++h)
              std::memcpy(want.data() + engine_off(l, kv, t + c.block_size, h),
                          logical.data() +
                              (((std::size_t{l} * 2 + kv) * tokens + t) * f.kv_heads + h) * row,
                          row);
      ASSERT_EQ(fetch(engine2, want.size()), want);
      EXPECT_EQ(kv_copy_bytes(load), std::uint64_t{shifted} * f.layers * 2 * f.kv_heads * row);
    }
  }
};

TEST_P(KVLayoutImpls, StoreAndLoadEveryEngineLayout) {
  // fp32 rows of 64 bytes (16-byte path), bf16 rows of 6 bytes (byte path), fp8 rows of
  // 12 bytes (4-byte path), several heads and layers, page_tokens unequal to block size.
  run_case({{3, 2, 16, 4, 4}, 3, 4, 4});
  run_case({{2, 3, 3, 4, 2}, 4, 4, 5});
  run_case({{2, 2, 12, 8, 1}, 2, 6, 3});
}

TEST_P(KVLayoutImpls, MalformedJobsWriteNothing) {
  const KVPageFormat f{2, 2, 4, 4, 2};
  std::vector<std::uint8_t> pool_host(f.page_bytes(), 0xab);
  std::uint8_t* pool = place(pool_host);
  std::vector<std::uint8_t> engine_host(4096, 0x11);
  std::uint8_t* engine = place(engine_host);
  const std::uint64_t e = reinterpret_cast<std::uintptr_t>(engine);
  std::vector<std::uint64_t> k = {e, e + 512}, v = {e + 1024, e + 1536}, short_k = {e};
  std::vector<std::uint64_t> null_v = {e + 1024, 0};
  auto* page = reinterpret_cast<std::byte*>(pool);
  const KVEngineLayout good{k, v, 4, 64, 16, 8};
  const std::vector<KVRun> ok_runs = {{page, 0, 4, 0}};
  struct Bad {
    std::string what;
    KVCopy job;
  };
  const std::vector<KVRun> overflow = {{page, 2, 3, 0}};
  const std::vector<KVRun> zero_count = {{page, 0, 0, 0}};
  const std::vector<KVRun> null_page = {{nullptr, 0, 1, 0}};
  const std::vector<KVRun> token_wrap = {{page, 0, 2, UINT64_MAX}};
  const std::vector<Bad> bad = {
      {"slots past the page", {f, good, overflow, 0, 2, KVDirection::kEngineToPages}},
      {"count 0", {f, good, zero_count, 0, 2, KVDirection::kEngineToPages}},
      {"null page", {f, good, null_page, 0, 2, KVDirection::kEngineToPages}},
      {"token overflow", {f, good, token_wrap, 0, 2, KVDirection::kEngineToPages}},
      {"empty layer range", {f, good, ok_runs, 1, 1, KVDirection::kEngineToPages}},
      {"layer range past the pool", {f, good, ok_runs, 0, 3, KVDirection::kEngineToPages}},
      {"too few layer pointers",
       {f, {short_k, v, 4, 64, 16, 8}, ok_runs, 0, 2, KVDirection::kEngineToPages}},
      {"null V pointer",
       {f, {k, null_v, 4, 64, 16, 8}, ok_runs, 0, 2, KVDirection::kPagesToEngine}},
      {"block_tokens 0", {f, {k, v, 0, 64, 16, 8}, ok_runs, 0, 2, KVDirection::kEngineToPages}},
      {"negative stride", {f, {k, v, 4, 64, -16, 8}, ok_runs, 0, 2, KVDirection::kPagesToEngine}},
      {"bad element size", {{2, 2, 4, 4, 3}, good, ok_runs, 0, 2, KVDirection::kEngineToPages}},
  };
  for (const Bad& b : bad) {
    const Status s = impl_->kv_copy(b.job, nullptr);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << b.what;
    EXPECT_EQ(fetch(pool, pool_host.size()), pool_host) << b.what;
    EXPECT_EQ(fetch(engine, engine_host.size()), engine_host) << b.what;
  }
  // The well-formed job itself succeeds (the cases above differ from it in one field).
  EXPECT_TRUE(
      impl_->kv_copy({f, good, ok_runs, 0, 2, KVDirection::kEngineToPages}, nullptr).is_ok());
}

INSTANTIATE_TEST_SUITE_P(kernels, KVLayoutImpls, ::testing::Values("host", "cuda"),
                         [](const auto& info) { return info.param; });

INSTANTIATE_TEST_SUITE_P(kernels, AllImpls, ::testing::Values("host", "cuda"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace pf::kernels
