// Prefix-index namespaces through the C ABI (ABI 1.3: pf_branch_create_ns,
// pf_pages_lookup_keys_ns, pf_pages_publish_ns) and the C++ header, against a real daemon:
// isolation between namespaces, NULL and the all-zero tag as the default namespace, and
// bad arguments refused with nothing changed.
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "processfork.hpp"
#include "tests/shims/shims_harness.h"

namespace pf::shimtest {
namespace {

using Ns = std::array<std::uint8_t, PF_NAMESPACE_BYTES>;

Ns ns_of(std::uint8_t tag) {
  Ns ns{};
  ns.fill(tag);
  return ns;
}

class ShimsNamespaces : public ::testing::Test {
 protected:
  void SetUp() override { c_.reset(connect_or_fail(daemon_.socket())); }

  // Reused tokens of a new branch on `tokens` in `ns` (the branch is freed).
  std::uint64_t reused(const std::vector<std::uint32_t>& tokens, const std::uint8_t* ns) {
    pf_new_branch b{};
    EXPECT_EQ(pf_branch_create_ns(c_.get(), tokens.data(), tokens.size(), ns, &b), PF_OK)
        << pf_last_error_message(nullptr);
    EXPECT_EQ(pf_branch_free(c_.get(), b.branch), PF_OK);
    return b.reused_tokens;
  }

  Daemon daemon_;
  ClientPtr c_;
};

TEST_F(ShimsNamespaces, BranchesCommitAndReuseWithinTheirNamespace) {
  EXPECT_GE(PF_ABI_VERSION_MINOR, 3);
  const std::uint32_t pt = pool_info(c_.get()).page_tokens;
  std::vector<std::uint32_t> tokens(2 * pt);
  for (std::uint32_t i = 0; i < tokens.size(); ++i) tokens[i] = 500 + i;
  const Ns a = ns_of(0xa1);
  pf_new_branch b{};
  ASSERT_EQ(pf_branch_create_ns(c_.get(), nullptr, 0, a.data(), &b), PF_OK);
  std::vector<pf_write_run> runs(pf_append_max_runs(c_.get(), tokens.size()));
  pf_append_result ar{};
  ASSERT_EQ(
      pf_append(c_.get(), b.branch, tokens.data(), tokens.size(), runs.data(), runs.size(), &ar),
      PF_OK);
  ASSERT_EQ(pf_commit(c_.get(), b.branch), PF_OK);

  EXPECT_EQ(reused(tokens, a.data()), tokens.size());
  const Ns other = ns_of(0xb2);
  EXPECT_EQ(reused(tokens, other.data()), 0u);
  EXPECT_EQ(reused(tokens, nullptr), 0u);
  const Ns zero{};
  EXPECT_EQ(reused(tokens, zero.data()), 0u);  // the all-zero tag is the default namespace

  // The C++ header's optional parameter reaches the same namespace.
  processfork::ConnectOptions options;
  options.socket_path = daemon_.socket();
  processfork::Client cpp(options);
  processfork::Namespace ns = a;
  EXPECT_EQ(cpp.branch(tokens, &ns).reused_tokens, tokens.size());
  EXPECT_EQ(cpp.branch(tokens).reused_tokens, 0u);
}

TEST_F(ShimsNamespaces, KeyedPagesStayInTheirNamespace) {
  std::uint8_t key[PF_KEY_BYTES];
  for (std::size_t i = 0; i < sizeof key; ++i) key[i] = static_cast<std::uint8_t>(i * 7);
  std::uint32_t page = 0;
  ASSERT_EQ(pf_pages_alloc(c_.get(), 1, &page, 1), PF_OK);
  const Ns a = ns_of(0xa1);
  size_t n_new = 0;
  ASSERT_EQ(pf_pages_publish_ns(c_.get(), key, &page, 1, nullptr, a.data(), &n_new), PF_OK)
      << pf_last_error_message(nullptr);
  EXPECT_EQ(n_new, 1u);
  std::uint32_t found_page = 0;
  size_t found = 9;
  ASSERT_EQ(pf_pages_lookup_keys_ns(c_.get(), key, 1, a.data(), 0, &found_page, 1, &found), PF_OK);
  EXPECT_EQ(found, 1u);
  EXPECT_EQ(found_page, page);
  const Ns b = ns_of(0xb2);
  ASSERT_EQ(pf_pages_lookup_keys_ns(c_.get(), key, 1, b.data(), 0, &found_page, 1, &found), PF_OK);
  EXPECT_EQ(found, 0u);
  ASSERT_EQ(pf_pages_lookup_keys(c_.get(), key, 1, 0, &found_page, 1, &found), PF_OK);
  EXPECT_EQ(found, 0u);
}

TEST_F(ShimsNamespaces, BadArgumentsChangeNothing) {
  const Ns a = ns_of(0xa1);
  pf_pool_stats before{};
  before.struct_size = sizeof before;
  ASSERT_EQ(pf_pool_stats_get(c_.get(), &before), PF_OK);
  std::uint32_t tok = 1;
  EXPECT_EQ(pf_branch_create_ns(c_.get(), &tok, 1, a.data(), nullptr), PF_INVALID_ARGUMENT);
  pf_new_branch out{};
  EXPECT_EQ(pf_branch_create_ns(c_.get(), nullptr, 3, a.data(), &out), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_create_ns(nullptr, nullptr, 0, a.data(), &out), PF_INVALID_ARGUMENT);
  std::uint8_t key[PF_KEY_BYTES] = {};
  size_t found = 0;
  std::uint32_t pages[1];
  EXPECT_EQ(pf_pages_lookup_keys_ns(c_.get(), key, 1, a.data(), 0, pages, 0, &found),
            PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pages_lookup_keys_ns(c_.get(), key, 1, a.data(), 0x80, pages, 1, &found),
            PF_INVALID_ARGUMENT);
  std::uint32_t bogus = 3;
  EXPECT_EQ(pf_pages_publish_ns(c_.get(), key, &bogus, 1, nullptr, a.data(), nullptr),
            PF_INVALID_ARGUMENT);  // not a page this client allocated
  EXPECT_EQ(pf_pages_publish_ns(c_.get(), nullptr, &bogus, 1, nullptr, a.data(), nullptr),
            PF_INVALID_ARGUMENT);
  pf_pool_stats after{};
  after.struct_size = sizeof after;
  ASSERT_EQ(pf_pool_stats_get(c_.get(), &after), PF_OK);
  EXPECT_EQ(after.used_pages, before.used_pages);
  EXPECT_EQ(after.cached_pages, before.cached_pages);
}

}  // namespace
}  // namespace pf::shimtest
