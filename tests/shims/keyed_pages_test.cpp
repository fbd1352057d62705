// The C ABI and C++ header for keyed pages (processfork.h "keyed pages", docs/c_api.md):
// alloc, write through the mapping, publish, lookup with holds from another client that
// reads the same bytes through its own mapping, release; the C++ header's wrappers; hex
// conversion; and bad input (NULLs, sizes, flags, unheld or foreign pages) answered with a
// code and a message that change nothing; a disconnect ends every hold. (Token reuse of
// published pages is tested by the runtime, daemon and Python suites, which compute keys.)
#include <array>
#include <cstring>

#include "processfork.hpp"
#include "tests/shims/shims_harness.h"

namespace pf::shimtest {
namespace {

using Key = processfork::Client::Key;

Key key_n(std::uint8_t n) {
  Key k{};
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(n * 11 + i);
  return k;
}

// Fills page bytes with a pattern of `seed` through the caller's mapping.
void fill(pf_client* c, std::uint32_t page, std::uint8_t seed) {
  void* p = nullptr;
  ASSERT_EQ(pf_page_ptr(c, page, &p), PF_OK) << pf_last_error_message(nullptr);
  const pf_pool_info info = pool_info(c);
  auto* bytes = static_cast<std::uint8_t*>(p);
  for (std::size_t i = 0; i < info.page_bytes; ++i) {
    bytes[i] = static_cast<std::uint8_t>(seed + i * 13);
  }
}

bool has(pf_client* c, std::uint32_t page, std::uint8_t seed) {
  void* p = nullptr;
  if (pf_page_ptr(c, page, &p) != PF_OK) return false;
  const pf_pool_info info = pool_info(c);
  const auto* bytes = static_cast<const std::uint8_t*>(p);
  for (std::size_t i = 0; i < info.page_bytes; ++i) {
    if (bytes[i] != static_cast<std::uint8_t>(seed + i * 13)) return false;
  }
  return true;
}

class ShimsKeyedPages : public ::testing::Test {
 protected:
  void SetUp() override {
    a_.reset(connect_or_fail(daemon_.socket()));
    b_.reset(connect_or_fail(daemon_.socket()));
  }
  Daemon daemon_;
  ClientPtr a_, b_;
};

TEST_F(ShimsKeyedPages, PublishedPagesAreReadByAnotherClient) {
  EXPECT_EQ(pool_info(a_.get()).protocol_major, 3);
  EXPECT_EQ(pool_info(a_.get()).protocol_minor, 4);
  std::uint32_t pages[3] = {};
  ASSERT_EQ(pf_pages_alloc(a_.get(), 3, pages, 3), PF_OK) << pf_last_error_message(nullptr);
  for (std::uint8_t i = 0; i < 3; ++i) fill(a_.get(), pages[i], static_cast<std::uint8_t>(40 + i));
  std::array<Key, 3> keys = {key_n(1), key_n(2), key_n(3)};
  std::size_t n_new = 99;
  ASSERT_EQ(pf_pages_publish(a_.get(), keys[0].data(), pages, 3, nullptr, &n_new), PF_OK)
      << pf_last_error_message(nullptr);
  EXPECT_EQ(n_new, 3u);

  std::uint32_t found[3] = {};
  std::size_t n_found = 0;
  ASSERT_EQ(pf_pages_lookup_keys(b_.get(), keys[0].data(), 3, PF_LOOKUP_HOLD, found, 3, &n_found),
            PF_OK);
  ASSERT_EQ(n_found, 3u);
  for (std::uint8_t i = 0; i < 3; ++i) {
    EXPECT_EQ(found[i], pages[i]);
    EXPECT_TRUE(has(b_.get(), found[i], static_cast<std::uint8_t>(40 + i))) << int(i);
  }
  // Held: a cache drop cannot take them; released: it can.
  pf_gc_result g{};
  ASSERT_EQ(pf_gc(b_.get(), PF_GC_DROP_CACHE, &g), PF_OK);
  EXPECT_EQ(g.evicted_pages, 0u);
  ASSERT_EQ(pf_pages_release(b_.get(), found, n_found), PF_OK);
  ASSERT_EQ(pf_gc(b_.get(), PF_GC_DROP_CACHE, &g), PF_OK);
  EXPECT_EQ(g.evicted_pages, 3u);
  EXPECT_EQ(pool_stats(a_.get()).used_pages, 0u);
}

TEST_F(ShimsKeyedPages, CppHeaderWrappers) {
  processfork::Client a({daemon_.socket(), 0, true});
  processfork::Client b({daemon_.socket(), 0, true});
  // Two pages published in two calls, the second chained after the first's key.
  auto pages = a.alloc_pages(2);
  ASSERT_EQ(pages.size(), 2u);
  const std::array<Key, 2> keys = {key_n(7), key_n(8)};
  EXPECT_EQ(a.publish_pages(std::span<const Key>(keys.data(), 1),
                            std::span<const std::uint32_t>(pages.data(), 1)),
            1u);
  EXPECT_EQ(a.publish_pages(std::span<const Key>(keys.data() + 1, 1),
                            std::span<const std::uint32_t>(pages.data() + 1, 1), &keys[0]),
            1u);
  auto held = b.lookup_keys(keys, true);
  EXPECT_EQ(held, pages);
  b.release_pages(held);
  EXPECT_TRUE(b.lookup_keys(std::span<const Key>(), true).empty());
  try {
    b.release_pages(held);
    ADD_FAILURE() << "a second release of the same holds must fail";
  } catch (const processfork::Error& e) {
    EXPECT_EQ(e.code(), PF_INVALID_ARGUMENT);
  }
  EXPECT_EQ(processfork::Client::key_to_hex(keys[0]).size(), 64u);
  EXPECT_EQ(processfork::Client::key_from_hex(processfork::Client::key_to_hex(keys[1])), keys[1]);
}

TEST_F(ShimsKeyedPages, HexKeys) {
  Key k{};
  const std::string hex = "00ff10Ab" + std::string(56, 'c');
  ASSERT_EQ(pf_key_from_hex(hex.c_str(), k.data()), PF_OK);
  EXPECT_EQ(k[0], 0x00);
  EXPECT_EQ(k[1], 0xff);
  EXPECT_EQ(k[2], 0x10);
  EXPECT_EQ(k[3], 0xab);
  char out[65];
  ASSERT_EQ(pf_key_to_hex(k.data(), out), PF_OK);
  EXPECT_EQ(std::string(out), "00ff10ab" + std::string(56, 'c'));
  const Key before = k;
  EXPECT_EQ(pf_key_from_hex("abc", k.data()), PF_INVALID_ARGUMENT);  // short: never overread
  EXPECT_NE(std::string(pf_last_error_message(nullptr)).find("hex"), std::string::npos);
  EXPECT_EQ(pf_key_from_hex(("zz" + std::string(62, '0')).c_str(), k.data()), PF_INVALID_ARGUMENT);
  EXPECT_EQ(k, before);  // a failed parse writes nothing
  EXPECT_EQ(pf_key_from_hex(nullptr, k.data()), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_key_to_hex(nullptr, out), PF_INVALID_ARGUMENT);
}

TEST_F(ShimsKeyedPages, BadInputIsRefusedAndChangesNothing) {
  std::uint32_t mine[2] = {};
  ASSERT_EQ(pf_pages_alloc(a_.get(), 2, mine, 2), PF_OK);
  std::uint32_t theirs[1] = {};
  ASSERT_EQ(pf_pages_alloc(b_.get(), 1, theirs, 1), PF_OK);
  const Key k = key_n(3);
  const std::uint64_t used = pool_stats(a_.get()).used_pages;
  std::uint32_t out[4] = {};
  std::size_t n = 0;
  // NULLs, buffers, flags, limits: refused before anything is sent.
  EXPECT_EQ(pf_pages_alloc(nullptr, 1, out, 1), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pages_alloc(a_.get(), 2, out, 1), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pages_alloc(a_.get(), 1, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pages_alloc(a_.get(), PF_MAX_KEYS_PER_CALL + 1, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pages_lookup_keys(a_.get(), nullptr, 1, 0, out, 4, &n), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pages_lookup_keys(a_.get(), k.data(), 1, 0, out, 4, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pages_lookup_keys(a_.get(), k.data(), 1, 0x2, out, 4, &n), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pages_lookup_keys(a_.get(), k.data(), 1, 0, out, 0, &n), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pages_publish(a_.get(), nullptr, mine, 1, nullptr, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pages_release(a_.get(), nullptr, 1), PF_INVALID_ARGUMENT);
  // The daemon's checks: another client's page, a page not held, a held page released twice.
  EXPECT_EQ(pf_pages_publish(a_.get(), k.data(), theirs, 1, nullptr, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_NE(std::string(pf_last_error_message(nullptr)).find("not held"), std::string::npos)
      << pf_last_error_message(nullptr);
  EXPECT_EQ(pf_pages_release(a_.get(), theirs, 1), PF_INVALID_ARGUMENT);
  const std::uint32_t twice[2] = {mine[0], mine[0]};
  EXPECT_EQ(pf_pages_release(a_.get(), twice, 2), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pool_stats(a_.get()).used_pages, used);
  // Empty calls are fine and do nothing.
  EXPECT_EQ(pf_pages_lookup_keys(a_.get(), nullptr, 0, PF_LOOKUP_HOLD, nullptr, 0, &n), PF_OK);
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(pf_pages_alloc(a_.get(), 0, nullptr, 0), PF_OK);
  EXPECT_EQ(pf_pages_release(a_.get(), nullptr, 0), PF_OK);
  // A disconnect ends every hold: both of a's pages and b's are free again.
  a_.reset();
  b_.reset();
  ClientPtr c(connect_or_fail(daemon_.socket()));
  EXPECT_TRUE(wait_until([&] { return pool_stats(c.get()).used_pages == 0; }));
}

}  // namespace
}  // namespace pf::shimtest
