// The reference engine on plain page buffers (no daemon): determinism, paging invariance,
// KV moved page by page, negative controls, an independent double-precision reference,
// write-run handling and sampling. Every test runs on the host engine and, where a GPU is
// usable, on the CUDA engine too (skipped visibly otherwise).
#include "perf/engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tests/support/daemon_process.h"

namespace pf::engine {
namespace {

ModelConfig tiny() {
  return model_preset("tiny").value();
}

// A PagedKv over `n_pages` pages of `arena`, table entry i -> arena page order[i].
PagedKv kv_over(const rt::Geometry& g, const PageArena& arena,
                const std::vector<std::size_t>& order) {
  PagedKv kv(g);
  for (std::size_t i : order) kv.push_page(arena.page(i));
  return kv;
}

std::vector<std::size_t> iota_order(std::size_t n) {
  std::vector<std::size_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::vector<std::size_t> shuffled_order(std::size_t n, unsigned seed) {
  std::vector<std::size_t> v = iota_order(n);
  std::mt19937 rng(seed);
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Compares the K and V rows of tokens [0, n) of two sequences (unwritten slots of the
// last page are uninitialised and not compared).
void expect_same_rows(Engine& e, const PagedKv& a, const PagedKv& b, std::uint64_t n) {
  const rt::Geometry& g = a.geometry();
  std::vector<std::byte> x(g.token_bytes()), y(g.token_bytes());
  for (std::uint64_t t = 0; t < n; ++t) {
    for (std::uint32_t l = 0; l < g.layers; ++l) {
      for (rt::Half h : {rt::Half::kK, rt::Half::kV}) {
        ASSERT_TRUE(e.copy_to_host(x.data(), a.row(l, h, t), x.size()).is_ok());
        ASSERT_TRUE(e.copy_to_host(y.data(), b.row(l, h, t), y.size()).is_ok());
        ASSERT_EQ(x, y) << "token " << t << " layer " << l << " half " << int(h);
      }
    }
  }
}

// Engines under test: "host" always; "cuda" when a GPU is usable (else the test skips with
// the reason).
class EngineTest : public ::testing::TestWithParam<const char*> {
 protected:
  std::unique_ptr<Engine> make(const ModelConfig& cfg) {
    Result<std::unique_ptr<Engine>> e = make_engine(cfg, GetParam());
    if (!e.is_ok()) {
      skip_reason_ = e.status().to_string();
      return nullptr;
    }
    return std::move(e).value();
  }
  std::string skip_reason_;
};

#define MAKE_ENGINE_OR_SKIP(var, cfg)      \
  std::unique_ptr<Engine> var = make(cfg); \
  if (!var) GTEST_SKIP() << "engine unavailable: " << skip_reason_

// Prefills `prompt`, then decodes `steps` greedy tokens; returns every step's logits
// concatenated (prefill's last logits first).
std::vector<float> run(Engine& e, PagedKv& kv, const std::vector<rt::Token>& prompt, int steps) {
  const std::size_t V = e.config().vocab;
  std::vector<float> all;
  std::vector<float> logits(V);
  EXPECT_TRUE(e.forward(kv, prompt, logits).is_ok());
  all.insert(all.end(), logits.begin(), logits.end());
  for (int s = 0; s < steps; ++s) {
    const rt::Token next = sample_greedy(logits);
    const Status st = e.forward(kv, std::span<const rt::Token>(&next, 1), logits);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

TEST_P(EngineTest, SameTokensGiveIdenticalLogitBits) {
  const ModelConfig cfg = tiny();
  MAKE_ENGINE_OR_SKIP(e1, cfg);
  MAKE_ENGINE_OR_SKIP(e2, cfg);
  const rt::Geometry g = cfg.kv_geometry(8, rt::DType::kFP32);
  const std::vector<rt::Token> prompt = random_tokens(3, 70, cfg.vocab);
  auto a1 = e1->alloc_pages(12, g.page_bytes());
  auto a2 = e2->alloc_pages(12, g.page_bytes());
  ASSERT_TRUE(a1.is_ok() && a2.is_ok());
  PagedKv kv1 = kv_over(g, *a1, iota_order(12));
  PagedKv kv2 = kv_over(g, *a2, iota_order(12));
  const std::vector<float> l1 = run(*e1, kv1, prompt, 10);
  const std::vector<float> l2 = run(*e2, kv2, prompt, 10);
  EXPECT_TRUE(same_bits(l1, l2));
  // The logits are not degenerate: they vary across the vocabulary and across steps.
  const auto [mn, mx] = std::minmax_element(l1.begin(), l1.begin() + cfg.vocab);
  EXPECT_GT(*mx - *mn, 1.0f);
  EXPECT_FALSE(std::equal(l1.begin(), l1.begin() + cfg.vocab, l1.begin() + cfg.vocab));
  // A different seed is a different model.
  ModelConfig other = cfg;
  other.seed = 2;
  MAKE_ENGINE_OR_SKIP(e3, other);
  PagedKv kv3 = kv_over(g, *a2, iota_order(12));
  EXPECT_FALSE(same_bits(l1, run(*e3, kv3, prompt, 10)));
}

TEST_P(EngineTest, ShuffledPagesGiveIdenticalLogitsAndKv) {
  const ModelConfig cfg = tiny();
  MAKE_ENGINE_OR_SKIP(e, cfg);
  const rt::Geometry g = cfg.kv_geometry(4, rt::DType::kFP32);
  const std::vector<rt::Token> prompt = random_tokens(5, 41, cfg.vocab);
  const std::size_t n = 14;  // 41 + 12 decoded tokens in pages of 4
  auto a = e->alloc_pages(n, g.page_bytes());
  auto b = e->alloc_pages(n + 5, g.page_bytes());
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  PagedKv in_order = kv_over(g, *a, iota_order(n));
  std::vector<std::size_t> order = shuffled_order(n + 5, 11);
  order.resize(n);  // scattered over a larger arena, in a shuffled order
  PagedKv scattered = kv_over(g, *b, order);
  const std::vector<float> l1 = run(*e, in_order, prompt, 12);
  const std::vector<float> l2 = run(*e, scattered, prompt, 12);
  EXPECT_TRUE(same_bits(l1, l2));
  ASSERT_EQ(in_order.n_tokens(), 53u);
  expect_same_rows(*e, in_order, scattered, in_order.n_tokens());
}

TEST_P(EngineTest, DecodeAfterKvCopiedPageByPageMatches) {
  const ModelConfig cfg = tiny();
  MAKE_ENGINE_OR_SKIP(e, cfg);
  const rt::Geometry g = cfg.kv_geometry(8, rt::DType::kFP32);
  const std::vector<rt::Token> prompt = random_tokens(9, 100, cfg.vocab);
  const std::size_t n = 16;
  auto a = e->alloc_pages(n, g.page_bytes());
  auto b = e->alloc_pages(n, g.page_bytes());
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  PagedKv src = kv_over(g, *a, iota_order(n));
  std::vector<float> logits(cfg.vocab);
  ASSERT_TRUE(e->forward(src, prompt, logits).is_ok());
  // Copy every written page to another address (a shuffled slot of arena b), as a process
  // that maps the same pages elsewhere would see them.
  const std::vector<std::size_t> order = shuffled_order(n, 3);
  PagedKv moved(g);
  for (std::size_t i = 0; i < n; ++i) {
    if (i < (prompt.size() + 7) / 8) {
      ASSERT_TRUE(e->copy_within(b->page(order[i]), src.pages()[i], g.page_bytes()).is_ok());
    }
    moved.push_page(b->page(order[i]));
  }
  ASSERT_TRUE(moved.set_n_tokens(prompt.size()).is_ok());
  // Continue both with the same tokens: identical logits at every step.
  const std::vector<rt::Token> cont = random_tokens(10, 20, cfg.vocab);
  std::vector<float> la(cfg.vocab), lb(cfg.vocab);
  for (rt::Token t : cont) {
    ASSERT_TRUE(e->forward(src, std::span<const rt::Token>(&t, 1), la).is_ok());
    ASSERT_TRUE(e->forward(moved, std::span<const rt::Token>(&t, 1), lb).is_ok());
    ASSERT_TRUE(same_bits(la, lb)) << "token " << src.n_tokens();
  }
}

TEST_P(EngineTest, OneAlteredKvByteChangesTheLogits) {
  const ModelConfig cfg = tiny();
  MAKE_ENGINE_OR_SKIP(e, cfg);
  const rt::Geometry g = cfg.kv_geometry(8, rt::DType::kFP32);
  const std::vector<rt::Token> prompt = random_tokens(21, 64, cfg.vocab);
  auto a = e->alloc_pages(9, g.page_bytes());
  auto b = e->alloc_pages(9, g.page_bytes());
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  PagedKv base = kv_over(g, *a, iota_order(9));
  std::vector<float> logits(cfg.vocab);
  ASSERT_TRUE(e->forward(base, prompt, logits).is_ok());
  const rt::Token next = 7;
  // Clean control: an exact copy decodes to the same bits.
  // Altered: one byte (the high byte of one element) of one page, in K or in V, in the
  // first, a middle and the last written page.
  struct Case {
    std::size_t page;
    rt::Half half;
    std::uint32_t layer;
  };
  const Case cases[] = {
      {0, rt::Half::kK, 0}, {3, rt::Half::kV, 1}, {7, rt::Half::kK, 1}, {4, rt::Half::kV, 0}};
  std::vector<float> reference(cfg.vocab);
  {
    PagedKv copy = kv_over(g, *b, iota_order(9));
    for (std::size_t i = 0; i < 8; ++i) {
      ASSERT_TRUE(e->copy_within(b->page(i), a->page(i), g.page_bytes()).is_ok());
    }
    ASSERT_TRUE(copy.set_n_tokens(prompt.size()).is_ok());
    ASSERT_TRUE(e->forward(copy, std::span<const rt::Token>(&next, 1), reference).is_ok());
  }
  for (const Case& c : cases) {
    for (std::size_t i = 0; i < 8; ++i) {
      ASSERT_TRUE(e->copy_within(b->page(i), a->page(i), g.page_bytes()).is_ok());
    }
    const std::size_t off = g.offset(c.layer, c.half, 5) + 4 * 3 + 3;  // element 3's high byte
    std::byte byte{};
    ASSERT_TRUE(e->copy_to_host(&byte, b->page(c.page) + off, 1).is_ok());
    byte ^= std::byte{0x01};  // exponent bit 1: the element scales by 4 or 1/4
    ASSERT_TRUE(e->copy_from_host(b->page(c.page) + off, &byte, 1).is_ok());
    PagedKv altered = kv_over(g, *b, iota_order(9));
    ASSERT_TRUE(altered.set_n_tokens(prompt.size()).is_ok());
    std::vector<float> got(cfg.vocab);
    ASSERT_TRUE(e->forward(altered, std::span<const rt::Token>(&next, 1), got).is_ok());
    EXPECT_FALSE(same_bits(reference, got)) << "page " << c.page << " layer " << c.layer;
  }
}

TEST_P(EngineTest, OneForwardOfManyTokensEqualsManyForwardsOfOne) {
  const ModelConfig cfg = tiny();
  MAKE_ENGINE_OR_SKIP(e, cfg);
  const rt::Geometry g = cfg.kv_geometry(4, rt::DType::kFP32);
  const std::vector<rt::Token> prompt = random_tokens(33, 37, cfg.vocab);  // not a block multiple
  auto a = e->alloc_pages(10, g.page_bytes());
  auto b = e->alloc_pages(10, g.page_bytes());
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  PagedKv whole = kv_over(g, *a, iota_order(10));
  PagedKv single = kv_over(g, *b, iota_order(10));
  std::vector<float> lw(cfg.vocab), ls(cfg.vocab);
  ASSERT_TRUE(e->forward(whole, prompt, lw).is_ok());
  for (rt::Token t : prompt) {
    ASSERT_TRUE(e->forward(single, std::span<const rt::Token>(&t, 1), ls).is_ok());
  }
  EXPECT_TRUE(same_bits(lw, ls));
  expect_same_rows(*e, whole, single, prompt.size());
}

TEST_P(EngineTest, Bf16PagesAreDeterministicAndCloseToFp32) {
  const ModelConfig cfg = tiny();
  MAKE_ENGINE_OR_SKIP(e, cfg);
  const rt::Geometry g32 = cfg.kv_geometry(8, rt::DType::kFP32);
  const rt::Geometry g16 = cfg.kv_geometry(8, rt::DType::kBF16);
  EXPECT_EQ(g16.page_bytes() * 2, g32.page_bytes());
  const std::vector<rt::Token> prompt = random_tokens(4, 50, cfg.vocab);
  auto a = e->alloc_pages(8, g32.page_bytes());
  auto b = e->alloc_pages(8, g16.page_bytes());
  auto c = e->alloc_pages(8, g16.page_bytes());
  ASSERT_TRUE(a.is_ok() && b.is_ok() && c.is_ok());
  PagedKv kv32 = kv_over(g32, *a, iota_order(8));
  PagedKv kv16 = kv_over(g16, *b, iota_order(8));
  PagedKv kv16b = kv_over(g16, *c, shuffled_order(8, 1));
  const std::vector<float> l32 = run(*e, kv32, prompt, 4);
  const std::vector<float> l16 = run(*e, kv16, prompt, 4);
  EXPECT_TRUE(same_bits(l16, run(*e, kv16b, prompt, 4)));
  EXPECT_FALSE(same_bits(l16, l32));  // the KV really is stored (rounded) in bf16
  double max_err = 0;
  for (std::size_t i = 0; i < cfg.vocab; ++i) {
    max_err = std::max(max_err, std::fabs(double(l16[i]) - double(l32[i])));
  }
  EXPECT_LT(max_err, 0.1);  // first logits only: greedy paths may diverge later
}

// An independent, straightforward double-precision forward pass over contiguous KV,
// written from the architecture description (model.h), not from host_engine.cpp.
std::vector<double> naive_logits(const ModelConfig& c, const std::vector<rt::Token>& tokens) {
  const Weights w = make_weights(c);
  const std::size_t d = c.d_model, hd = c.head_dim, H = c.n_heads, KH = c.n_kv_heads;
  const std::size_t T = tokens.size();
  std::vector<std::vector<double>> x(T, std::vector<double>(d));
  for (std::size_t t = 0; t < T; ++t) {
    for (std::size_t i = 0; i < d; ++i) x[t][i] = w.embed[tokens[t] * d + i];
  }
  auto norm = [&](const std::vector<double>& v, const std::vector<float>& gain) {
    double ss = 0;
    for (double e : v) ss += e * e;
    const double s = 1.0 / std::sqrt(ss / double(d) + double(c.norm_eps));
    std::vector<double> y(d);
    for (std::size_t i = 0; i < d; ++i) y[i] = v[i] * s * gain[i];
    return y;
  };
  auto mv = [](const std::vector<float>& W, const std::vector<double>& v, std::size_t out) {
    std::vector<double> y(out, 0.0);
    for (std::size_t o = 0; o < out; ++o) {
      for (std::size_t i = 0; i < v.size(); ++i) y[o] += double(W[o * v.size() + i]) * v[i];
    }
    return y;
  };
  auto rope = [&](std::vector<double>& v, std::size_t head, std::size_t pos) {
    for (std::size_t i = 0; i < hd / 2; ++i) {
      const double th = double(pos) * std::pow(double(c.rope_theta), -2.0 * double(i) / double(hd));
      const double a = v[head * hd + i], b = v[head * hd + i + hd / 2];
      v[head * hd + i] = a * std::cos(th) - b * std::sin(th);
      v[head * hd + i + hd / 2] = a * std::sin(th) + b * std::cos(th);
    }
  };
  for (std::size_t l = 0; l < c.layers; ++l) {
    const LayerWeights& L = w.layers[l];
    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (std::size_t t = 0; t < T; ++t) {
      const std::vector<double> h = norm(x[t], L.attn_norm);
      q[t] = mv(L.wq, h, H * hd);
      k[t] = mv(L.wk, h, KH * hd);
      v[t] = mv(L.wv, h, KH * hd);
      for (std::size_t hh = 0; hh < H; ++hh) rope(q[t], hh, t);
      for (std::size_t hh = 0; hh < KH; ++hh) rope(k[t], hh, t);
    }
    for (std::size_t t = 0; t < T; ++t) {
      std::vector<double> att(H * hd, 0.0);
      for (std::size_t hh = 0; hh < H; ++hh) {
        const std::size_t kh = hh * KH / H;  // consecutive query heads share a KV head
        std::vector<double> s(t + 1);
        double m = -1e300;
        for (std::size_t j = 0; j <= t; ++j) {
          double dp = 0;
          for (std::size_t i = 0; i < hd; ++i) dp += q[t][hh * hd + i] * k[j][kh * hd + i];
          s[j] = dp / std::sqrt(double(hd));
          m = std::max(m, s[j]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - m));
        for (std::size_t j = 0; j <= t; ++j) {
          for (std::size_t i = 0; i < hd; ++i) att[hh * hd + i] += s[j] / z * v[j][kh * hd + i];
        }
      }
      const std::vector<double> o = mv(L.wo, att, d);
      for (std::size_t i = 0; i < d; ++i) x[t][i] += o[i];
      const std::vector<double> h = norm(x[t], L.mlp_norm);
      const std::vector<double> gt = mv(L.w_gate, h, c.ffn_dim);
      const std::vector<double> up = mv(L.w_up, h, c.ffn_dim);
      std::vector<double> a(c.ffn_dim);
      for (std::size_t i = 0; i < c.ffn_dim; ++i) a[i] = gt[i] / (1 + std::exp(-gt[i])) * up[i];
      const std::vector<double> dn = mv(L.w_down, a, d);
      for (std::size_t i = 0; i < d; ++i) x[t][i] += dn[i];
    }
  }
  const std::vector<double> h = norm(x[T - 1], w.final_norm);
  std::vector<double> logits = mv(w.head(), h, c.vocab);
  for (double& z : logits) z *= double(c.logit_scale());
  return logits;
}

TEST_P(EngineTest, MatchesAnIndependentDoublePrecisionReference) {
  ModelConfig cfg = tiny();
  for (bool tied : {true, false}) {
    cfg.tied_embeddings = tied;
    MAKE_ENGINE_OR_SKIP(e, cfg);
    const rt::Geometry g = cfg.kv_geometry(4, rt::DType::kFP32);
    const std::vector<rt::Token> prompt = random_tokens(77, 29, cfg.vocab);
    auto a = e->alloc_pages(8, g.page_bytes());
    ASSERT_TRUE(a.is_ok());
    PagedKv kv = kv_over(g, *a, shuffled_order(8, 5));
    std::vector<float> got(cfg.vocab);
    ASSERT_TRUE(e->forward(kv, prompt, got).is_ok());
    const std::vector<double> want = naive_logits(cfg, prompt);
    double max_err = 0, max_abs = 0;
    for (std::size_t i = 0; i < cfg.vocab; ++i) {
      max_err = std::max(max_err, std::fabs(want[i] - got[i]));
      max_abs = std::max(max_abs, std::fabs(want[i]));
    }
    EXPECT_GT(max_abs, 0.5) << "tied=" << tied;
    EXPECT_LT(max_err, 2e-4 * std::max(1.0, max_abs)) << "tied=" << tied;
  }
}

TEST_P(EngineTest, BadCallsAreRejectedAndChangeNothing) {
  const ModelConfig cfg = tiny();
  MAKE_ENGINE_OR_SKIP(e, cfg);
  const rt::Geometry g = cfg.kv_geometry(4, rt::DType::kFP32);
  auto a = e->alloc_pages(2, g.page_bytes());
  ASSERT_TRUE(a.is_ok());
  PagedKv kv = kv_over(g, *a, iota_order(2));
  std::vector<float> logits(cfg.vocab);
  const std::vector<rt::Token> nine = random_tokens(1, 9, cfg.vocab);
  EXPECT_EQ(e->forward(kv, nine, logits).code(), Code::kInvalidArgument);  // 9 > 8 slots
  EXPECT_EQ(kv.n_tokens(), 0u);
  const std::vector<rt::Token> bad = {1, cfg.vocab};
  EXPECT_EQ(e->forward(kv, bad, logits).code(), Code::kInvalidArgument);
  EXPECT_EQ(kv.n_tokens(), 0u);
  std::vector<float> short_logits(3);
  EXPECT_EQ(e->forward(kv, std::vector<rt::Token>{1}, short_logits).code(), Code::kInvalidArgument);
  rt::Geometry wrong = g;
  wrong.kv_heads = 1;
  PagedKv kv_wrong(wrong);
  kv_wrong.push_page(a->page(0));
  EXPECT_EQ(e->forward(kv_wrong, std::vector<rt::Token>{1}, logits).code(), Code::kInvalidArgument);
  wrong = g;
  wrong.dtype = rt::DType::kFP16;
  PagedKv kv_fp16(wrong);
  kv_fp16.push_page(a->page(0));
  EXPECT_EQ(e->forward(kv_fp16, std::vector<rt::Token>{1}, logits).code(), Code::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Engines, EngineTest, ::testing::Values("host", "cuda"),
                         [](const auto& info) { return std::string(info.param); });

TEST(EngineCuda, CloseToTheHostEngine) {
  const ModelConfig cfg = tiny();
  auto cuda = make_cuda_engine(cfg, 0);
  if (!cuda.is_ok()) GTEST_SKIP() << "no CUDA engine: " << cuda.status().to_string();
  std::unique_ptr<Engine> host = make_host_engine(cfg);
  const rt::Geometry g = cfg.kv_geometry(8, rt::DType::kFP32);
  const std::vector<rt::Token> prompt = random_tokens(12, 90, cfg.vocab);
  auto ha = host->alloc_pages(12, g.page_bytes());
  auto da = (*cuda)->alloc_pages(12, g.page_bytes());
  ASSERT_TRUE(ha.is_ok() && da.is_ok());
  PagedKv hk = kv_over(g, *ha, iota_order(12));
  PagedKv dk = kv_over(g, *da, iota_order(12));
  std::vector<float> hl(cfg.vocab), dl(cfg.vocab);
  ASSERT_TRUE(host->forward(hk, prompt, hl).is_ok());
  ASSERT_TRUE((*cuda)->forward(dk, prompt, dl).is_ok());
  for (std::size_t i = 0; i < cfg.vocab; ++i) EXPECT_NEAR(hl[i], dl[i], 1e-3) << i;
}

// --- PagedKv::add_write_runs ----------------------------------------------------------

TEST(PagedKv, WriteRunsExtendTheTableAndReplaceACopiedLastPage) {
  rt::Geometry g = tiny().kv_geometry(4, rt::DType::kFP32);
  std::vector<std::byte> mem(10 * g.page_bytes());
  auto resolve = [&](rt::PageId id) -> Result<std::byte*> {
    if (id >= 10) return PF_ERROR(Code::kNotFound, "no page");
    return mem.data() + id * g.page_bytes();
  };
  PagedKv kv(g);
  const rt::WriteRun first[] = {{5, 0, 4, 0}, {2, 0, 2, 4}};
  ASSERT_TRUE(kv.add_write_runs(first, resolve).is_ok());
  ASSERT_EQ(kv.pages().size(), 2u);
  EXPECT_EQ(kv.pages()[0], mem.data() + 5 * g.page_bytes());
  EXPECT_EQ(kv.pages()[1], mem.data() + 2 * g.page_bytes());
  ASSERT_TRUE(kv.set_n_tokens(6).is_ok());
  // Copy-on-write of the half-filled last page: the run names a new page for slot 2.
  const rt::WriteRun cow[] = {{7, 2, 2, 6}, {8, 0, 1, 8}};
  ASSERT_TRUE(kv.add_write_runs(cow, resolve).is_ok());
  ASSERT_EQ(kv.pages().size(), 3u);
  EXPECT_EQ(kv.pages()[1], mem.data() + 7 * g.page_bytes());
  EXPECT_EQ(kv.pages()[2], mem.data() + 8 * g.page_bytes());
}

TEST(PagedKv, MalformedWriteRunsAreRejectedAndChangeNothing) {
  rt::Geometry g = tiny().kv_geometry(4, rt::DType::kFP32);
  std::vector<std::byte> mem(4 * g.page_bytes());
  auto resolve = [&](rt::PageId id) -> Result<std::byte*> {
    if (id >= 4) return PF_ERROR(Code::kNotFound, "no page");
    return mem.data() + id * g.page_bytes();
  };
  PagedKv kv(g);
  const rt::WriteRun gap[] = {{0, 0, 4, 0}, {1, 0, 4, 5}};      // skips token 4
  const rt::WriteRun bad_slot[] = {{0, 1, 3, 0}};               // token 0 in slot 1
  const rt::WriteRun overflow[] = {{0, 2, 3, 2}};               // slots 2..4 of a 4-slot page
  const rt::WriteRun unknown[] = {{0, 0, 4, 0}, {9, 0, 1, 4}};  // no such page
  const rt::WriteRun late[] = {{0, 0, 4, 4}};                   // the sequence is at 0
  for (auto runs : {std::span<const rt::WriteRun>(gap), std::span<const rt::WriteRun>(bad_slot),
                    std::span<const rt::WriteRun>(overflow), std::span<const rt::WriteRun>(unknown),
                    std::span<const rt::WriteRun>(late)}) {
    EXPECT_FALSE(kv.add_write_runs(runs, resolve).is_ok());
    EXPECT_TRUE(kv.pages().empty());
  }
  EXPECT_FALSE(kv.set_n_tokens(1).is_ok());
}

// --- sampling, config --------------------------------------------------------------------

TEST(Sampling, GreedyTakesTheFirstMaximum) {
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(sample_greedy(l), 1u);
  Rng rng(1);
  EXPECT_EQ(sample(l, 0.0f, rng), 1u);
}

TEST(Sampling, TemperatureSamplingIsSeededAndFollowsTheSoftmax) {
  std::vector<float> l = {0.0f, 1.0f, 2.0f, 0.5f};
  Rng a(42), b(42), c(43);
  std::vector<rt::Token> sa, sb, sc;
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 20000; ++i) {
    sa.push_back(sample(l, 1.0f, a));
    sb.push_back(sample(l, 1.0f, b));
    sc.push_back(sample(l, 1.0f, c));
    ++counts[sa.back()];
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
  double z = 0;
  for (float x : l) z += std::exp(double(x));
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(counts[i] / 20000.0, std::exp(double(l[i])) / z, 0.015) << i;
  }
}

TEST(ModelConfigTest, ParsesPresetsAndOverrides) {
  auto c = parse_model_config("tiny,seed=7,layers=3");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->layers, 3u);
  EXPECT_EQ(c->d_model, 64u);
  EXPECT_EQ(c->seed, 7u);
  auto round = parse_model_config(c->to_string());
  ASSERT_TRUE(round.is_ok());
  EXPECT_EQ(*round, *c);
  EXPECT_FALSE(parse_model_config("n_heads=3,n_kv_heads=2").is_ok());
  EXPECT_FALSE(parse_model_config("head_dim=15").is_ok());
  EXPECT_FALSE(parse_model_config("bogus=1").is_ok());
  EXPECT_FALSE(parse_model_config("layers=x").is_ok());
  EXPECT_FALSE(parse_model_config("layers=2,tiny").is_ok());
  EXPECT_FALSE(model_preset("huge").is_ok());
  const rt::Geometry g = model_preset("demo")->kv_geometry(16, rt::DType::kFP32);
  EXPECT_TRUE(g.validate().is_ok());
  EXPECT_EQ(g.layers, 4u);
  EXPECT_EQ(g.kv_heads, 2u);
}

// --- across processes -------------------------------------------------------------------

// The same logits from a freshly exec'd process (engine_probe prints one run's logits as
// hex words; it places the pages in a shuffled order, this process in order).
TEST(EngineProcess, AFreshProcessComputesTheSameBits) {
  const ModelConfig cfg = tiny();
  std::unique_ptr<Engine> e = make_host_engine(cfg);
  const rt::Geometry g = cfg.kv_geometry(8, rt::DType::kFP32);
  auto a = e->alloc_pages(10, g.page_bytes());
  ASSERT_TRUE(a.is_ok());
  PagedKv kv = kv_over(g, *a, iota_order(10));
  const std::vector<float> mine = run(*e, kv, random_tokens(8, 60, cfg.vocab), 5);

  pf::testing::Child probe(pf::testing::ChildSpec(PF_ENGINE_PROBE_PATH));
  ASSERT_GT(probe.pid(), 0);
  probe.close_stdin();
  ASSERT_EQ(probe.wait(std::chrono::seconds(120)), 0) << probe.output();
  const std::string& out = probe.output();
  const std::size_t at = out.find("LOGITS ");
  ASSERT_NE(at, std::string::npos) << out;
  std::vector<float> theirs;
  const char* p = out.c_str() + at + 7;
  while (*p != '\n' && *p != '\0') {
    char* end = nullptr;
    const unsigned long word = std::strtoul(p, &end, 16);
    if (end == p) break;
    const std::uint32_t u = static_cast<std::uint32_t>(word);
    float f;
    std::memcpy(&f, &u, 4);
    theirs.push_back(f);
    p = end;
  }
  EXPECT_TRUE(same_bits(mine, theirs)) << mine.size() << " vs " << theirs.size();
}

}  // namespace
}  // namespace pf::engine
