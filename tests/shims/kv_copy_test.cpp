// pf_kv_copy (the C ABI's KV layout copies) against a real daemon: an engine-shaped host
// buffer (vLLM FlashAttention per-layer layout) stored into appended pages and loaded back
// into a second buffer at other blocks, checked byte for byte through pf_page_ptr; bad
// layouts and runs are rejected before any byte moves.
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/stream_choice.h"
#include "shims/include/processfork.hpp"
#include "tests/shims/shims_harness.h"
#include "tests/support/pattern.h"

namespace pf::shimtest {
namespace {

// The pool: 2 layers, 2 kv heads, head_dim 8, fp32, 4 tokens per page.
constexpr std::uint32_t kL = 2, kH = 2, kD = 8, kP = 4, kE = 4;
constexpr std::uint32_t kBlocks = 4, kBlock = 4;  // the engine: 4 blocks of 4 tokens
constexpr std::size_t kRow = kD * kE;
constexpr std::size_t kLayerHalf = std::size_t{kBlocks} * kBlock * kH * kRow;  // K or V of a layer

class ShimsKVCopy : public ::testing::Test {
 protected:
  ShimsKVCopy()
      : daemon_("64MiB", "2MiB", "layers=2,kv_heads=2,head_dim=8,dtype=fp32,page_tokens=4") {}
  void SetUp() override { c_.reset(connect_or_fail(daemon_.socket())); }

  // An engine buffer per layer (2, blocks, block, H, D), as one allocation.
  struct Engine {
    std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(kL * 2 * kLayerHalf);
    std::vector<std::uint64_t> k, v;
    Engine() {
      for (std::uint32_t l = 0; l < kL; ++l) {
        k.push_back(reinterpret_cast<std::uintptr_t>(bytes.data() + (2 * l) * kLayerHalf));
        v.push_back(reinterpret_cast<std::uintptr_t>(bytes.data() + (2 * l + 1) * kLayerHalf));
      }
    }
    pf_kv_layout layout() const {
      return kv_layout(k, v, kBlock, static_cast<std::int64_t>(kBlock * kH * kRow),
                       static_cast<std::int64_t>(kH * kRow), static_cast<std::int64_t>(kRow), kE);
    }
    // Fills the buffer in place (the layer pointers stay valid).
    void fill(std::uint64_t seed) {
      const std::vector<std::uint8_t> p = testing::pattern(bytes.size(), seed);
      std::memcpy(bytes.data(), p.data(), p.size());
    }
    const std::uint8_t* row(std::uint32_t l, int kv, std::uint32_t token) const {
      return bytes.data() + (2 * l + kv) * kLayerHalf + std::size_t{token} * kH * kRow;
    }
  };

  // A branch of n tokens; returns its write runs.
  std::vector<pf_write_run> append(std::size_t n) {
    pf_new_branch nb{};
    EXPECT_EQ(pf_branch_create(c_.get(), nullptr, 0, &nb), PF_OK);
    std::vector<std::uint32_t> tokens(n, 7);
    std::vector<pf_write_run> runs(pf_append_max_runs(c_.get(), n));
    pf_append_result res{};
    EXPECT_EQ(pf_append(c_.get(), nb.branch, tokens.data(), n, runs.data(), runs.size(), &res),
              PF_OK);
    runs.resize(res.n_runs);
    return runs;
  }

  Daemon daemon_;
  ClientPtr c_;
};

TEST_F(ShimsKVCopy, StoreThenLoadAtOtherBlocks) {
  Engine a;
  a.fill(42);
  const std::vector<pf_write_run> wr = append(6);
  std::vector<pf_kv_run> runs;
  for (const pf_write_run& r : wr) {  // engine tokens 4.. (block 1 onwards)
    runs.push_back({r.page, r.first_slot, r.count, 0, 4 + r.first_token});
  }
  const pf_kv_layout la = a.layout();
  std::uint64_t bytes = 0;
  ASSERT_EQ(
      pf_kv_copy(c_.get(), &la, runs.data(), runs.size(), 0, kL, PF_KV_STORE, nullptr, &bytes),
      PF_OK)
      << pf_last_error_message(nullptr);
  EXPECT_EQ(bytes, 6ull * kL * 2 * kH * kRow);
  // Page-first: [layer][K|V][slot][head][dim].
  for (const pf_write_run& r : wr) {
    void* p = nullptr;
    ASSERT_EQ(pf_page_ptr(c_.get(), r.page, &p), PF_OK);
    for (std::uint32_t l = 0; l < kL; ++l)
      for (int kv = 0; kv < 2; ++kv)
        for (std::uint32_t t = 0; t < r.count; ++t) {
          const auto* page_row = static_cast<const std::uint8_t*>(p) +
                                 ((std::size_t{l} * 2 + kv) * kP + r.first_slot + t) * kH * kRow;
          EXPECT_EQ(std::memcmp(page_row, a.row(l, kv, 4 + r.first_token + t), kH * kRow), 0);
        }
  }
  // Load the 6 tokens into engine B at block 2 (tokens 8..13), layer 1 only.
  Engine b;
  const pf_kv_layout lb = b.layout();
  for (pf_kv_run& r : runs) r.engine_token += 4;
  ASSERT_EQ(pf_kv_copy(c_.get(), &lb, runs.data(), runs.size(), 1, 2, PF_KV_LOAD, nullptr, nullptr),
            PF_OK);
  for (std::uint32_t t = 0; t < 16; ++t)
    for (int kv = 0; kv < 2; ++kv) {
      std::vector<std::uint8_t> zero(kH * kRow, 0);
      const bool loaded = t >= 8 && t < 14;
      EXPECT_EQ(std::memcmp(b.row(1, kv, t), loaded ? a.row(1, kv, t - 4) : zero.data(), kH * kRow),
                0)
          << "token " << t;
      EXPECT_EQ(std::memcmp(b.row(0, kv, t), zero.data(), kH * kRow), 0) << "layer 0 untouched";
    }
}

TEST_F(ShimsKVCopy, BadLayoutsAndRunsChangeNothing) {
  Engine a;
  a.fill(7);
  const std::vector<std::uint8_t> before = a.bytes;
  const std::vector<pf_write_run> wr = append(4);
  void* page = nullptr;
  ASSERT_EQ(pf_page_ptr(c_.get(), wr[0].page, &page), PF_OK);
  std::vector<std::uint8_t> page_before(static_cast<std::uint8_t*>(page),
                                        static_cast<std::uint8_t*>(page) + kL * 2 * kP * kH * kRow);
  const pf_kv_run good{wr[0].page, 0, 4, 0, 0};
  const pf_kv_layout ok = a.layout();
  auto expect_invalid = [&](const pf_kv_layout* layout, const pf_kv_run* runs, std::size_t n,
                            std::uint32_t lb, std::uint32_t le, const char* what) {
    EXPECT_EQ(pf_kv_copy(c_.get(), layout, runs, n, lb, le, PF_KV_LOAD, nullptr, nullptr),
              PF_INVALID_ARGUMENT)
        << what;
    EXPECT_STRNE(pf_last_error_message(nullptr), "") << what;
    EXPECT_EQ(a.bytes, before) << what;
    EXPECT_EQ(std::memcmp(page, page_before.data(), page_before.size()), 0) << what;
  };
  expect_invalid(nullptr, &good, 1, 0, kL, "NULL layout");
  pf_kv_layout l = ok;
  l.struct_size = 8;
  expect_invalid(&l, &good, 1, 0, kL, "struct_size");
  l = ok;
  l.elem_bytes = 2;
  expect_invalid(&l, &good, 1, 0, kL, "elem_bytes differs from the pool's fp32");
  l = ok;
  l.n_layers = 1;
  expect_invalid(&l, &good, 1, 0, kL, "one layer pointer for a 2-layer pool");
  l = ok;
  l.block_tokens = 0;
  expect_invalid(&l, &good, 1, 0, kL, "block_tokens 0");
  expect_invalid(&ok, nullptr, 1, 0, kL, "NULL runs");
  expect_invalid(&ok, &good, 1, 1, 1, "empty layer range");
  expect_invalid(&ok, &good, 1, 0, kL + 1, "layer range past the pool");
  const pf_kv_run past_page{wr[0].page, 2, 3, 0, 0};
  expect_invalid(&ok, &past_page, 1, 0, kL, "slots past the page");
  const pf_kv_run beyond_pool{1u << 30, 0, 1, 0, 0};
  expect_invalid(&ok, &beyond_pool, 1, 0, kL, "page beyond the pool's capacity");
  const pf_kv_run reserved{wr[0].page, 0, 1, 5, 0};
  expect_invalid(&ok, &reserved, 1, 0, kL, "reserved field set");
  EXPECT_EQ(
      pf_kv_copy(c_.get(), &ok, &good, 1, 0, kL, static_cast<pf_kv_direction>(9), nullptr, nullptr),
      PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_kv_copy(nullptr, &ok, &good, 1, 0, kL, PF_KV_LOAD, nullptr, nullptr),
            PF_INVALID_ARGUMENT);
  // Zero runs is a no-op, not an error.
  std::uint64_t bytes = 99;
  EXPECT_EQ(pf_kv_copy(c_.get(), &ok, nullptr, 0, 0, kL, PF_KV_STORE, nullptr, &bytes), PF_OK);
  EXPECT_EQ(bytes, 0u);
}

// ABI 1.5: PF_CUDA_STREAM_OWN names the library's own stream (NULL is the legacy default
// stream). A host pool ignores both; the calls that seal the stored pages then pass through
// the library's fence (a no-op on the host) and see the stored bytes.
TEST_F(ShimsKVCopy, OwnStreamSentinelOnAHostPoolThenSealingCalls) {
  EXPECT_EQ(PF_CUDA_STREAM_OWN, pf::kernels::kOwnStream);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(PF_CUDA_STREAM_OWN), ~std::uintptr_t{0});
  EXPECT_GE(pf_abi_version() & 0xffffu, 5u);
  Engine a, b;
  a.fill(99);
  pf_new_branch nb{};
  ASSERT_EQ(pf_branch_create(c_.get(), nullptr, 0, &nb), PF_OK);
  const std::vector<std::uint32_t> tokens(8, 3);
  std::vector<pf_write_run> wr(pf_append_max_runs(c_.get(), tokens.size()));
  pf_append_result res{};
  ASSERT_EQ(
      pf_append(c_.get(), nb.branch, tokens.data(), tokens.size(), wr.data(), wr.size(), &res),
      PF_OK);
  std::vector<pf_kv_run> runs;
  for (std::size_t i = 0; i < res.n_runs; ++i) {
    runs.push_back({wr[i].page, wr[i].first_slot, wr[i].count, 0, wr[i].first_token});
  }
  const pf_kv_layout la = a.layout();
  std::uint64_t bytes = 0;
  ASSERT_EQ(pf_kv_copy(c_.get(), &la, runs.data(), runs.size(), 0, kL, PF_KV_STORE,
                       PF_CUDA_STREAM_OWN, &bytes),
            PF_OK)
      << pf_last_error_message(nullptr);
  EXPECT_EQ(bytes, 8ull * kL * 2 * kH * kRow);
  ASSERT_EQ(pf_commit(c_.get(), nb.branch), PF_OK) << pf_last_error_message(nullptr);
  pf_snapshot_result snap{};
  ASSERT_EQ(pf_snapshot(c_.get(), nb.branch, nullptr, &snap), PF_OK)
      << pf_last_error_message(nullptr);
  EXPECT_EQ(snap.n_tokens, 8u);
  pf_branch_id kid = 0;
  const pf_source from = pf_source_named(snap.cid);
  ASSERT_EQ(pf_fork(c_.get(), &from, 1, &kid, 1, nullptr, 0), PF_OK)
      << pf_last_error_message(nullptr);
  // The sealed pages hold what the store wrote.
  const pf_kv_layout lb = b.layout();
  ASSERT_EQ(pf_kv_copy(c_.get(), &lb, runs.data(), runs.size(), 0, kL, PF_KV_LOAD,
                       PF_CUDA_STREAM_OWN, nullptr),
            PF_OK);
  for (std::uint32_t l = 0; l < kL; ++l)
    for (int kv = 0; kv < 2; ++kv)
      EXPECT_EQ(std::memcmp(b.row(l, kv, 0), a.row(l, kv, 0), 8 * kH * kRow), 0);
}

TEST_F(ShimsKVCopy, CppHeaderRoundTripAndErrorsAsExceptions) {
  processfork::ConnectOptions o;
  o.socket_path = daemon_.socket();
  processfork::Client c(o);
  Engine a, b;
  a.fill(11);
  // Stores go into pages of this client's own append (another session's are refused).
  processfork::NewBranch nb = c.branch();
  const std::vector<std::uint32_t> tokens(4, 7);
  const processfork::AppendResult ar = nb.branch.append(tokens);
  const std::vector<pf_kv_run> runs = {{ar.runs[0].page, 0, 4, 0, 0}};
  EXPECT_EQ(c.kv_copy(a.layout(), runs, PF_KV_STORE), 4ull * kL * 2 * kH * kRow);
  EXPECT_EQ(c.kv_copy(b.layout(), runs, PF_KV_LOAD), 4ull * kL * 2 * kH * kRow);
  for (std::uint32_t l = 0; l < kL; ++l)
    for (int kv = 0; kv < 2; ++kv)
      EXPECT_EQ(std::memcmp(b.row(l, kv, 0), a.row(l, kv, 0), 4 * kH * kRow), 0);
  pf_kv_layout bad = a.layout();
  bad.elem_bytes = 1;
  EXPECT_THROW(c.kv_copy(bad, runs, PF_KV_STORE), processfork::Error);
}

}  // namespace
}  // namespace pf::shimtest
