// Helpers for the runtime tests: a runtime on a named backend, KV bytes that are a pure
// function of the token prefix (like real KV), written through append's write slots with
// backend.copy_to_mapped and read back with copy_from_mapped (so the same tests run on
// host and cuda memory), and a Python runner for independent reference computations.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/prefix_index.h"
#include "runtime/runtime.h"
#include "tests/support/pattern.h"
#include "vmm/registry.h"

namespace pf::rt::testing {

using pf::testing::pattern;
using pf::testing::splitmix64;

// Seed of the KV of the token at position i: a rolling hash of tokens[0..i], so equal
// prefixes have equal bytes (as real KV does) and different ones differ.
inline std::vector<std::uint64_t> prefix_seeds(const std::vector<Token>& tokens,
                                               std::uint64_t salt = 0) {
  std::vector<std::uint64_t> seeds(tokens.size());
  std::uint64_t h = 0x1234567 ^ salt;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    h = splitmix64(h ^ (std::uint64_t{tokens[i]} * 0x9E3779B97F4A7C15ull + i));
    seeds[i] = h;
  }
  return seeds;
}

// The bytes of one (layer, half) row of a token with seed `seed`.
inline std::vector<std::uint8_t> token_row(const Geometry& g, std::uint64_t seed,
                                           std::uint32_t layer, Half half) {
  return pattern(g.token_bytes(), seed * 131 + layer * 2 + static_cast<std::uint32_t>(half));
}

// Writes the KV rows of the tokens append() just placed, seeds[pos] per token position.
inline void write_runs(Runtime& rt, const AppendResult& ar,
                       const std::vector<std::uint64_t>& seeds) {
  const Geometry& g = rt.geometry();
  for (const WriteRun& run : ar.runs) {
    for (std::uint32_t t = 0; t < run.count; ++t) {
      for (std::uint32_t l = 0; l < g.layers; ++l) {
        for (Half h : {Half::kK, Half::kV}) {
          const auto row = token_row(g, seeds.at(run.first_token + t), l, h);
          std::byte* dst = rt.base() + std::size_t{run.page} * rt.page_bytes() +
                           g.offset(l, h, run.first_slot + t);
          ASSERT_TRUE(rt.backend().copy_to_mapped(dst, row.data(), row.size()).is_ok());
        }
      }
    }
  }
}

// Appends `tokens` to branch b whose full token list becomes `all` and writes their KV.
inline AppendResult append_and_write(Runtime& rt, BranchId b, const std::vector<Token>& tokens,
                                     const std::vector<Token>& all_after, std::uint64_t salt = 0) {
  auto ar = rt.append(b, tokens);
  EXPECT_TRUE(ar.is_ok()) << ar.status().to_string();
  if (!ar.is_ok()) return {};
  write_runs(rt, *ar, prefix_seeds(all_after, salt));
  return *ar;
}

inline std::vector<std::uint8_t> read_page(Runtime& rt, PageId p) {
  std::vector<std::uint8_t> buf(rt.page_bytes());
  EXPECT_TRUE(
      rt.backend()
          .copy_from_mapped(buf.data(), rt.base() + std::size_t{p} * rt.page_bytes(), buf.size())
          .is_ok());
  return buf;
}

// Checks every KV byte of every token the branch holds against the expected seeds.
inline ::testing::AssertionResult branch_bytes_match(Runtime& rt, BranchId b,
                                                     const std::vector<Token>& expect_tokens,
                                                     std::uint64_t salt = 0) {
  auto view = rt.branch_view(b);
  if (!view.is_ok()) return ::testing::AssertionFailure() << view.status().to_string();
  if (view->tokens != expect_tokens) {
    return ::testing::AssertionFailure()
           << "branch " << b.value << " has " << view->tokens.size() << " tokens, expected "
           << expect_tokens.size() << " (or different ids)";
  }
  const Geometry& g = rt.geometry();
  const auto seeds = prefix_seeds(expect_tokens, salt);
  for (std::size_t pi = 0; pi < view->pages.size(); ++pi) {
    const auto page = read_page(rt, view->pages[pi]);
    for (std::uint32_t slot = 0; slot < g.page_tokens; ++slot) {
      const std::size_t pos = pi * g.page_tokens + slot;
      if (pos >= expect_tokens.size()) break;
      for (std::uint32_t l = 0; l < g.layers; ++l) {
        for (Half h : {Half::kK, Half::kV}) {
          const auto row = token_row(g, seeds[pos], l, h);
          if (std::memcmp(page.data() + g.offset(l, h, slot), row.data(), row.size()) != 0) {
            return ::testing::AssertionFailure()
                   << "branch " << b.value << " token " << pos << " layer " << l
                   << (h == Half::kK ? " K" : " V") << " bytes differ (page " << view->pages[pi]
                   << ")";
          }
        }
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// A runtime over a backend spec, or the reason it cannot be opened (for GTEST_SKIP).
struct Fixture {
  std::unique_ptr<vmm::Backend> backend;
  std::unique_ptr<Runtime> rt;
  std::string skip_reason;
};

inline Fixture make_runtime(const std::string& spec, const Geometry& g, std::size_t capacity_bytes,
                            std::size_t chunk_bytes = 0) {
  Fixture f;
  auto choice = vmm::open_backend(spec);
  if (!choice.is_ok()) {
    f.skip_reason = "backend '" + spec + "' unavailable: " + choice.status().to_string();
    return f;
  }
  f.backend = std::move(choice->backend);
  RuntimeOptions o;
  o.geometry = g;
  o.pool.capacity_bytes = capacity_bytes;
  o.pool.chunk_bytes = chunk_bytes;
  o.verify_each_op = true;
  auto rt = Runtime::create(*f.backend, o);
  if (!rt.is_ok()) {
    f.skip_reason = "runtime on '" + spec + "' failed: " + rt.status().to_string();
    f.backend.reset();
    return f;
  }
  f.rt = std::move(*rt);
  return f;
}

// The binary chained prefix keys of every full page of `tokens` (DESIGN §4).
inline std::vector<Sha256> keys_of(const std::vector<Token>& tokens, std::uint32_t P) {
  std::vector<Sha256> out;
  for (const std::string& hex : prefix_page_keys(tokens, P)) {
    Sha256 k{};
    EXPECT_TRUE(parse_key_hex(hex, &k));
    out.push_back(k);
  }
  return out;
}

// Allocates pages for `tokens` (whole pages) to `lease` (alloc_pages), writes their KV (a
// function of the token prefix, as real KV is) and returns the pages; empty on failure.
inline std::vector<PageId> alloc_written_pages(Runtime& rt, const std::vector<Token>& tokens,
                                               LeaseId lease) {
  const std::uint32_t P = rt.geometry().page_tokens;
  const std::size_t n = tokens.size() / P;
  auto pages = rt.alloc_pages(n, lease);
  EXPECT_TRUE(pages.is_ok()) << pages.status().to_string();
  if (!pages.is_ok()) return {};
  AppendResult ar;
  for (std::size_t i = 0; i < n; ++i) ar.runs.push_back({(*pages)[i], 0, P, i * P});
  write_runs(rt, ar, prefix_seeds(tokens));
  return *pages;
}

// A test over one runtime per backend spec (the test's parameter) with the "tiny" geometry
// and an 8 MiB pool; skips when the backend cannot be opened.
class BackendRuntimeTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    f_ = make_runtime(GetParam(), *geometry_preset("tiny"), std::size_t{8} << 20);
    if (!f_.rt) GTEST_SKIP() << f_.skip_reason;
    rt_ = f_.rt.get();
    P_ = rt_->geometry().page_tokens;
  }

  Fixture f_;
  Runtime* rt_ = nullptr;
  std::uint32_t P_ = 0;
};

inline std::vector<Token> iota_tokens(std::size_t n, Token first = 1) {
  std::vector<Token> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = first + static_cast<Token>(i);
  return t;
}

inline std::vector<Token> concat(std::vector<Token> a, const std::vector<Token>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Runs a Python script with PF_PYTHON; stdout, or nullopt when Python (or a module) is
// unavailable (the caller skips visibly).
inline std::optional<std::string> run_python(const std::string& script) {
  char path[] = "/tmp/pf_rt_pyXXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return std::nullopt;
  {
    std::ofstream f(path);
    f << script;
  }
  ::close(fd);
  const std::string cmd = std::string(PF_PYTHON) + " " + path + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  if (p != nullptr) {
    char buf[4096];
    std::size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int rc = pclose(p);
    std::remove(path);
    if (rc != 0) return std::nullopt;
    return out;
  }
  std::remove(path);
  return std::nullopt;
}

}  // namespace pf::rt::testing
