// KV through this process's mapping of the pool, for the shim tests that check every byte
// (e2e_test.cpp, page_tokens_test.cpp): append tokens and write their KV pattern
// (tests/shims/kv_pattern.h), and count the tokens whose bytes differ from a pattern.
#pragma once

#include <cstdint>
#include <vector>

#include "tests/shims/kv_pattern.h"
#include "tests/shims/shims_harness.h"

namespace pf::shimtest {

// Appends tokens to branch b and writes their KV under `seed` through this process's mapping.
inline pf_append_result append_and_write(pf_client* c, pf_branch_id b,
                                         const std::vector<std::uint32_t>& tokens,
                                         std::uint64_t seed) {
  const pf_pool_info info = pool_info(c);
  std::vector<pf_write_run> runs(pf_append_max_runs(c, tokens.size()));
  pf_append_result res{};
  EXPECT_EQ(pf_append(c, b, tokens.data(), tokens.size(), runs.data(), runs.size(), &res), PF_OK)
      << pf_last_error_message(c);
  for (std::size_t i = 0; i < res.n_runs; ++i) {
    void* p = nullptr;
    EXPECT_EQ(pf_page_ptr(c, runs[i].page, &p), PF_OK) << pf_last_error_message(c);
    for (std::uint32_t k = 0; k < runs[i].count; ++k) {
      kvp_write_token(&info, p, runs[i].first_slot + k, seed, runs[i].first_token + k);
    }
  }
  return res;
}

// Tokens [from, to) of branch b whose KV bytes (read through this process's mapping) differ
// from what `seed` wrote.
inline std::uint64_t mismatches(pf_client* c, pf_branch_id b, std::uint64_t from, std::uint64_t to,
                                std::uint64_t seed) {
  const pf_pool_info info = pool_info(c);
  const std::vector<std::uint32_t> pages = view_pages(c, b);
  std::uint64_t bad = 0;
  for (std::uint64_t t = from; t < to; ++t) {
    void* p = nullptr;
    EXPECT_EQ(pf_page_ptr(c, pages.at(t / info.page_tokens), &p), PF_OK);
    if (p == nullptr ||
        !kvp_check_token(&info, p, static_cast<std::uint32_t>(t % info.page_tokens), seed, t)) {
      ++bad;
    }
  }
  return bad;
}

// base, base + 1, ..., base + n - 1.
inline std::vector<std::uint32_t> token_range(std::uint32_t base, std::size_t n) {
  std::vector<std::uint32_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = base + static_cast<std::uint32_t>(i);
  return t;
}

}  // namespace pf::shimtest
