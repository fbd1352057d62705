// Sealed pages are not writable (DESIGN §8), against a real daemon with real client
// processes and real mappings:
//  - through the API: pf_kv_copy(PF_KV_STORE) into a page the session may not write (a
//    snapshot's page, a checkout's or fork's shared page, a committed full page) is
//    PF_PERMISSION_DENIED naming the page, copies nothing (a second process's checkout
//    reads the original bytes), while stores into the session's own write runs work;
//  - through the mapping: where the page size allows (8 KiB pages here), a forked child
//    that stores straight into a sealed page's address dies with SIGSEGV and the bytes stay;
//    a store into a writable page of the same mapping goes through.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "shims/include/processfork.hpp"
#include "tests/shims/shims_harness.h"
#include "tests/support/pattern.h"

namespace pf::shimtest {
namespace {

// The pool: 2 layers, 2 kv heads, head_dim 64, fp32, 4 tokens per page: 8 KiB pages, two
// OS pages each, so the mapping can protect them.
constexpr std::uint32_t kL = 2, kH = 2, kD = 64, kP = 4, kE = 4;
constexpr std::size_t kRow = std::size_t{kH} * kD * kE;  // one token of one layer's K (or V)
constexpr std::size_t kPageBytes = std::size_t{kL} * 2 * kP * kRow;
constexpr std::uint32_t kEngineTokens = 16;
const char* const kGeometry = "layers=2,kv_heads=2,head_dim=64,dtype=fp32,page_tokens=4";

// An engine's KV: per layer one K and one V buffer of [token][head][dim].
struct Engine {
  std::vector<std::uint8_t> bytes;
  std::vector<std::uint64_t> k, v;
  explicit Engine(std::uint64_t seed)
      : bytes(testing::pattern(std::size_t{kL} * 2 * kEngineTokens * kRow, seed)) {
    for (std::uint32_t l = 0; l < kL; ++l) {
      k.push_back(reinterpret_cast<std::uintptr_t>(bytes.data() + (2 * l) * kEngineTokens * kRow));
      v.push_back(
          reinterpret_cast<std::uintptr_t>(bytes.data() + (2 * l + 1) * kEngineTokens * kRow));
    }
  }
  pf_kv_layout layout() const {
    return kv_layout(k, v, kEngineTokens, static_cast<std::int64_t>(kEngineTokens * kRow),
                     static_cast<std::int64_t>(kRow), static_cast<std::int64_t>(kD * kE), kE);
  }
};

// Runs `body` in a forked child process and returns its wait status. The child makes no
// core dump (a SIGSEGV is expected in some) and never returns into the test.
int in_child(const std::function<int()>& body) {
  const pid_t pid = fork();
  if (pid == 0) {
    const rlimit none{0, 0};
    setrlimit(RLIMIT_CORE, &none);
    _exit(body());
  }
  int status = 0;
  EXPECT_GT(pid, 0);
  if (pid > 0) {
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
  }
  return status;
}

class ShimsSealedPages : public ::testing::Test {
 protected:
  ShimsSealedPages() : daemon_("64MiB", "2MiB", kGeometry) {}
  void SetUp() override { c_.reset(connect_or_fail(daemon_.socket())); }

  pf_branch_id new_branch() {
    pf_new_branch nb{};
    EXPECT_EQ(pf_branch_create(c_.get(), nullptr, 0, &nb), PF_OK) << pf_last_error_message(nullptr);
    return nb.branch;
  }
  std::vector<pf_write_run> append(pf_branch_id b, std::size_t n) {
    std::vector<std::uint32_t> tokens(n, 9);
    std::vector<pf_write_run> runs(pf_append_max_runs(c_.get(), n));
    pf_append_result res{};
    EXPECT_EQ(pf_append(c_.get(), b, tokens.data(), n, runs.data(), runs.size(), &res), PF_OK)
        << pf_last_error_message(nullptr);
    runs.resize(res.n_runs);
    return runs;
  }
  std::string snapshot(pf_branch_id b) {
    pf_snapshot_result s{};
    EXPECT_EQ(pf_snapshot(c_.get(), b, nullptr, &s), PF_OK) << pf_last_error_message(nullptr);
    return s.cid;
  }
  std::uint32_t access(std::uint32_t page) {
    std::uint32_t flags = 0;
    EXPECT_EQ(pf_page_access(c_.get(), page, &flags), PF_OK) << pf_last_error_message(nullptr);
    return flags;
  }
  std::uint8_t* page_ptr(std::uint32_t page) {
    void* p = nullptr;
    EXPECT_EQ(pf_page_ptr(c_.get(), page, &p), PF_OK) << pf_last_error_message(nullptr);
    return static_cast<std::uint8_t*>(p);
  }
  std::vector<std::uint8_t> page_bytes(std::uint32_t page) {
    const std::uint8_t* p = page_ptr(page);
    return {p, p + kPageBytes};
  }
  // Stores engine tokens [engine_token, +count) into slots [slot, +count) of each page.
  pf_result store(const Engine& e, const std::vector<pf_kv_run>& runs) {
    const pf_kv_layout layout = e.layout();
    return pf_kv_copy(c_.get(), &layout, runs.data(), runs.size(), 0, kL, PF_KV_STORE, nullptr,
                      nullptr);
  }
  static std::vector<pf_kv_run> as_kv_runs(const std::vector<pf_write_run>& wr) {
    std::vector<pf_kv_run> out;
    for (const pf_write_run& r : wr)
      out.push_back({r.page, r.first_slot, r.count, 0, r.first_token});
    return out;
  }

  Daemon daemon_;
  ClientPtr c_;
};

TEST_F(ShimsSealedPages, StoreIntoSharedPagesIsRefusedAndWritesNothing) {
  ASSERT_EQ(pool_info(c_.get()).page_bytes, kPageBytes);
  // A branch of 6 tokens: page A full, page B holding 2 of 4 slots; both written by the
  // session that appended them, then snapshotted.
  const pf_branch_id b = new_branch();
  const std::vector<pf_write_run> wr = append(b, 6);
  ASSERT_EQ(wr.size(), 2u);
  const std::uint32_t page_a = wr[0].page, page_b = wr[1].page;
  EXPECT_NE(access(page_a) & PF_PAGE_WRITABLE, 0u);
  const Engine first(1), second(2);
  ASSERT_EQ(store(first, as_kv_runs(wr)), PF_OK) << pf_last_error_message(nullptr);
  const std::string cid = snapshot(b);
  const std::vector<std::uint8_t> a_before = page_bytes(page_a), b_before = page_bytes(page_b);
  EXPECT_EQ(access(page_a) & PF_PAGE_WRITABLE, 0u) << "the snapshot sealed page A";
  EXPECT_EQ(access(page_b) & PF_PAGE_WRITABLE, 0u) << "the snapshot sealed page B";

  auto expect_refused = [&](const std::vector<pf_kv_run>& runs, std::uint32_t named,
                            const char* what) {
    EXPECT_EQ(store(second, runs), PF_PERMISSION_DENIED) << what;
    const std::string message = pf_last_error_message(nullptr);
    EXPECT_NE(message.find("page " + std::to_string(named) + " "), std::string::npos)
        << what << ": " << message;
    EXPECT_EQ(page_bytes(page_a), a_before) << what;
    EXPECT_EQ(page_bytes(page_b), b_before) << what;
  };
  // The snapshotted branch itself, through the session that wrote it.
  expect_refused({{page_a, 0, 4, 0, 0}}, page_a, "store into the snapshot's full page");
  EXPECT_NE(std::string(pf_last_error_message(nullptr)).find("branch " + std::to_string(b)),
            std::string::npos)
      << "the message names the branch that held the page: " << pf_last_error_message(nullptr);
  // A checkout of the snapshot holds the same pages, shared: the free slots of its last
  // page included.
  pf_branch_id co = 0;
  ASSERT_EQ(pf_checkout(c_.get(), cid.c_str(), &co, nullptr, 0), PF_OK);
  ASSERT_EQ(view_pages(c_.get(), co), (std::vector<std::uint32_t>{page_a, page_b}));
  expect_refused({{page_b, 2, 2, 0, 0}}, page_b, "store into the checkout's shared last page");
  // A fork of the snapshot: the same.
  pf_branch_id kid = 0;
  const pf_source src = pf_source_named(cid.c_str());
  ASSERT_EQ(pf_fork(c_.get(), &src, 1, &kid, 1, nullptr, 0), PF_OK);
  ASSERT_EQ(view_pages(c_.get(), kid), (std::vector<std::uint32_t>{page_a, page_b}));
  expect_refused({{page_a, 1, 1, 0, 0}}, page_a, "store into the fork's shared page");

  // The checkout's own tail: appending copies the shared last page first; the copy is the
  // checkout's, writable, and a store into it works.
  const std::vector<pf_write_run> tail = append(co, 2);
  ASSERT_EQ(tail.size(), 1u);
  const std::uint32_t copy = tail[0].page;
  EXPECT_NE(copy, page_b);
  EXPECT_NE(access(copy) & PF_PAGE_WRITABLE, 0u);
  ASSERT_EQ(store(second, as_kv_runs(tail)), PF_OK) << pf_last_error_message(nullptr);
  // One refused run refuses the whole call: the writable page is not touched either.
  const std::vector<std::uint8_t> copy_before = page_bytes(copy);
  expect_refused({{copy, 0, 4, 0, 8}, {page_a, 0, 4, 0, 0}}, page_a,
                 "a writable run followed by a shared one");
  EXPECT_EQ(page_bytes(copy), copy_before);

  // Another process checks the snapshot out and reads the bytes the first store wrote.
  const int status = in_child([&]() {
    pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
    cfg.socket_path = daemon_.socket().c_str();
    pf_client* other = nullptr;
    if (pf_connect(&cfg, &other) != PF_OK) return 2;
    pf_branch_id mine = 0;
    pf_branch_info info{};
    std::uint32_t pages[2] = {0, 0};
    if (pf_checkout(other, cid.c_str(), &mine, nullptr, 0) != PF_OK ||
        pf_branch_view(other, mine, &info, pages, 2, nullptr, 0) != PF_OK || info.n_pages != 2) {
      return 3;
    }
    void* pa = nullptr;
    void* pb = nullptr;
    if (pf_page_ptr(other, pages[0], &pa) != PF_OK || pf_page_ptr(other, pages[1], &pb) != PF_OK)
      return 4;
    const bool same = std::memcmp(pa, a_before.data(), kPageBytes) == 0 &&
                      std::memcmp(pb, b_before.data(), kPageBytes) == 0;
    pf_disconnect(other);
    return same ? 0 : 1;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
}

TEST_F(ShimsSealedPages, CommitSealsFullPagesOnlyAndCppReportsAccess) {
  const pf_branch_id b = new_branch();
  const std::vector<pf_write_run> wr = append(b, 6);
  ASSERT_EQ(wr.size(), 2u);
  ASSERT_EQ(pf_commit(c_.get(), b), PF_OK);
  EXPECT_EQ(access(wr[0].page) & PF_PAGE_WRITABLE, 0u) << "a committed full page is sealed";
  EXPECT_NE(access(wr[1].page) & PF_PAGE_WRITABLE, 0u)
      << "the partial last page stays the branch's";
  const Engine e(3);
  EXPECT_EQ(store(e, {{wr[1].page, 0, 2, 0, 4}}), PF_OK) << pf_last_error_message(nullptr);
  EXPECT_EQ(store(e, {{wr[0].page, 0, 4, 0, 0}}), PF_PERMISSION_DENIED);
  // Bad page ids are refused like everywhere else.
  std::uint32_t flags = 0;
  EXPECT_EQ(pf_page_access(c_.get(), 1u << 30, &flags), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_page_access(c_.get(), wr[0].page, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_page_access(nullptr, wr[0].page, &flags), PF_INVALID_ARGUMENT);

  // The C++ header: a second client (its own session) may write none of these pages, and
  // its store throws processfork::Error with the code.
  processfork::ConnectOptions o;
  o.socket_path = daemon_.socket();
  processfork::Client other(o);
  EXPECT_FALSE(other.page_writable(wr[1].page)) << "another session's exclusive page";
  try {
    other.kv_copy(e.layout(), std::vector<pf_kv_run>{{wr[1].page, 0, 2, 0, 4}}, PF_KV_STORE);
    ADD_FAILURE() << "a store into another session's page went through";
  } catch (const processfork::Error& err) {
    EXPECT_EQ(err.code(), PF_PERMISSION_DENIED);
  }
  // Free drops the branch's pages from this session's writable set.
  ASSERT_EQ(pf_branch_free(c_.get(), b), PF_OK);
  EXPECT_EQ(access(wr[1].page) & PF_PAGE_WRITABLE, 0u);
}

TEST_F(ShimsSealedPages, StrayStoreIntoSealedPageFaultsInForkedChild) {
  const pf_branch_id b = new_branch();
  const std::vector<pf_write_run> wr = append(b, 2 * kP);
  ASSERT_EQ(wr.size(), 2u);
  const std::uint32_t sealed = wr[0].page;
  if ((access(sealed) & PF_PAGE_GUARDED) == 0) {
    GTEST_SKIP() << "the mapping cannot protect " << kPageBytes << "-byte pages here (OS page "
                 << sysconf(_SC_PAGESIZE)
                 << " bytes; a hugetlb chunk protects only in huge pages): only the API refuses";
  }
  // Written through the mapping by the session that appended it: allowed.
  const std::vector<std::uint8_t> content = testing::pattern(kPageBytes, 77);
  std::memcpy(page_ptr(sealed), content.data(), kPageBytes);
  snapshot(b);
  ASSERT_EQ(access(sealed) & PF_PAGE_WRITABLE, 0u);
  ASSERT_NE(access(sealed) & PF_PAGE_GUARDED, 0u);

  // A store into the sealed page's address: the child dies of SIGSEGV, nothing changes.
  std::uint8_t* target = page_ptr(sealed) + kPageBytes / 2;
  const int status = in_child([&]() {
    *reinterpret_cast<volatile std::uint32_t*>(target) = 0xdeadbeefu;
    return 0;
  });
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) << "child status " << status;
  EXPECT_EQ(page_bytes(sealed), content);

  // A writable page in the same mapping (the tail of a checkout) takes the store, and the
  // parent sees it (MAP_SHARED): the protection is per page.
  pf_branch_id co = 0;
  ASSERT_EQ(pf_checkout(c_.get(), snapshot(b).c_str(), &co, nullptr, 0), PF_OK);
  const std::vector<pf_write_run> tail = append(co, 1);
  ASSERT_EQ(tail.size(), 1u);
  std::uint8_t* own = page_ptr(tail[0].page);
  const int ok = in_child([&]() {
    *reinterpret_cast<volatile std::uint32_t*>(own) = 0x600dcafeu;
    return 0;
  });
  EXPECT_TRUE(WIFEXITED(ok) && WEXITSTATUS(ok) == 0) << "child status " << ok;
  std::uint32_t seen = 0;
  std::memcpy(&seen, own, sizeof seen);
  EXPECT_EQ(seen, 0x600dcafeu);
  // Freeing the checkout makes its page read-only again.
  ASSERT_EQ(pf_branch_free(c_.get(), co), PF_OK);
  const int after_free = in_child([&]() {
    *reinterpret_cast<volatile std::uint32_t*>(own) = 1;
    return 0;
  });
  EXPECT_TRUE(WIFSIGNALED(after_free) && WTERMSIG(after_free) == SIGSEGV)
      << "child status " << after_free;
}

TEST(ShimsSealedPagesTiny, SmallPagesAreNotGuardedAndStayWritableToTheirOwner) {
  Daemon daemon;  // tiny: 512-byte pages, smaller than an OS page
  ClientPtr c(connect_or_fail(daemon.socket()));
  pf_new_branch nb{};
  ASSERT_EQ(pf_branch_create(c.get(), nullptr, 0, &nb), PF_OK);
  std::uint32_t tokens[3] = {1, 2, 3};
  pf_write_run runs[8];
  pf_append_result res{};
  ASSERT_EQ(pf_append(c.get(), nb.branch, tokens, 3, runs, 8, &res), PF_OK);
  std::uint32_t flags = 0;
  ASSERT_EQ(pf_page_access(c.get(), runs[0].page, &flags), PF_OK);
  EXPECT_EQ(flags, PF_PAGE_WRITABLE);
  void* p = nullptr;
  ASSERT_EQ(pf_page_ptr(c.get(), runs[0].page, &p), PF_OK);
  std::memset(p, 0x5a, 64);  // the mapping is read-write: nothing faults
  pf_snapshot_result s{};
  ASSERT_EQ(pf_snapshot(c.get(), nb.branch, nullptr, &s), PF_OK);
  ASSERT_EQ(pf_page_access(c.get(), runs[0].page, &flags), PF_OK);
  EXPECT_EQ(flags, 0u) << "sealed, and the page size does not allow guarding it";
}

}  // namespace
}  // namespace pf::shimtest
