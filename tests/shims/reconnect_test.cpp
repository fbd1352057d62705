// Clients across daemon restarts (docs/c_api.md "Daemon restarts"), through real processes:
// a daemon (`processfork serve`) is stopped under a connected client (SIGTERM: the clean
// shutdown; SIGKILL: a crash) and a new one started on the same socket path. The client's
// next call reconnects and is answered by the new daemon; generation counts the
// reconnection; the pool is mapped anew and its pages are written and read back; branch ids
// and page holds of the earlier boot epoch are refused with PF_STALE naming both epochs. A
// call in flight while the daemon dies is sent again when it reads, never when it mutates.
// No sleeps: daemons are waited for by their ready file, an in-flight call by the syscall
// its thread blocks in.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <future>
#include <memory>
#include <utility>

#include "shims/include/processfork.hpp"
#include "tests/shims/shims_harness.h"

namespace pf::shimtest {
namespace {

std::string last_error() {
  return pf_last_error_message(nullptr);
}

pf_client* connect_with(const std::string& socket, std::uint32_t reconnect_timeout_ms,
                        std::uint32_t flags = 0) {
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = socket.c_str();
  cfg.reconnect_timeout_ms = reconnect_timeout_ms;
  cfg.flags = flags;
  pf_client* c = nullptr;
  EXPECT_EQ(pf_connect(&cfg, &c), PF_OK) << last_error();
  return c;
}

pf_mapping_info mapping_of(pf_client* c) {
  pf_mapping_info m{};
  EXPECT_EQ(pf_mapping_info_get(c, &m), PF_OK);
  return m;
}

// A new branch of `n` tokens whose pages are filled with `fill` through this client's
// mapping; *pages gets its page ids.
pf_branch_id written_branch(pf_client* c, std::uint32_t n, std::uint8_t fill,
                            std::vector<std::uint32_t>* pages) {
  pf_new_branch nb{};
  EXPECT_EQ(pf_branch_create(c, nullptr, 0, &nb), PF_OK) << last_error();
  std::vector<std::uint32_t> tokens(n);
  for (std::uint32_t i = 0; i < n; ++i) tokens[i] = 100 + i;
  std::vector<pf_write_run> runs(pf_append_max_runs(c, n));
  pf_append_result ar{};
  EXPECT_EQ(pf_append(c, nb.branch, tokens.data(), n, runs.data(), runs.size(), &ar), PF_OK)
      << last_error();
  const std::uint64_t page_bytes = pool_info(c).page_bytes;
  pages->clear();
  for (std::uint32_t i = 0; i < ar.n_runs; ++i) {
    if (!pages->empty() && pages->back() == runs[i].page) continue;
    void* p = nullptr;
    EXPECT_EQ(pf_page_ptr(c, runs[i].page, &p), PF_OK) << last_error();
    if (p != nullptr) std::memset(p, fill, page_bytes);
    pages->push_back(runs[i].page);
  }
  return nb.branch;
}

// Every byte of page `page` through `c`'s mapping equals `fill`.
bool page_is(pf_client* c, std::uint32_t page, std::uint8_t fill) {
  void* p = nullptr;
  if (pf_page_ptr(c, page, &p) != PF_OK) return false;
  const auto* bytes = static_cast<const std::uint8_t*>(p);
  const std::uint64_t n = pool_info(c).page_bytes;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (bytes[i] != fill) return false;
  }
  return true;
}

void stop_with(Daemon& d, int sig) {
  if (sig == SIGKILL) {
    d.kill_hard();
  } else {
    EXPECT_EQ(d.stop(sig), 0) << d.log();
  }
}

// The first daemon stops with the parameter's signal; a new one starts on its socket.
class DaemonRestart : public ::testing::TestWithParam<int> {};

TEST_P(DaemonRestart, ClientReconnectsMapsAnewAndRefusesOldHandles) {
  Daemon first;
  ASSERT_GT(first.pid(), 0);
  ClientPtr c(connect_with(first.socket(), 30000));
  ASSERT_NE(c, nullptr);
  const pf_pool_info before = pool_info(c.get());
  EXPECT_NE(before.boot_epoch, 0u);
  EXPECT_EQ(before.boot_epoch, before.lease >> 32);
  EXPECT_EQ(pf_client_generation(c.get()), 0u);
  std::vector<std::uint32_t> old_pages;
  const pf_branch_id old_branch = written_branch(c.get(), 8, 0x11, &old_pages);
  ASSERT_FALSE(old_pages.empty());
  std::uint32_t held = 0;
  ASSERT_EQ(pf_pages_alloc(c.get(), 1, &held, 1), PF_OK) << last_error();
  const pf_mapping_info m1 = mapping_of(c.get());
  ASSERT_TRUE(m1.attached);

  stop_with(first, GetParam());
  Daemon second("64MiB", "2MiB", "tiny", first.socket());
  ASSERT_GT(second.pid(), 0);

  // The next call finds the daemon gone, reconnects and is answered by the new one.
  const pf_pool_stats stats = pool_stats(c.get());
  EXPECT_EQ(stats.used_pages, 0u);
  EXPECT_EQ(pf_client_generation(c.get()), 1u);
  const pf_pool_info after = pool_info(c.get());
  EXPECT_NE(after.boot_epoch, before.boot_epoch);
  EXPECT_EQ(after.boot_epoch, after.lease >> 32);
  EXPECT_NE(after.lease, before.lease);
  EXPECT_EQ(after.daemon_pid, static_cast<std::uint32_t>(second.pid()));
  EXPECT_EQ(after.page_bytes, before.page_bytes);
  const pf_mapping_info m2 = mapping_of(c.get());
  EXPECT_TRUE(m2.attached);
  EXPECT_NE(m2.base, m1.base) << "a reconnect maps the new pool into a new address range";
  EXPECT_EQ(m2.mapped_chunks, static_cast<std::uint32_t>(pool_json(c.get()).value("chunks", 0)));

  // Handles of the earlier epoch: PF_STALE, naming both epochs, nothing sent.
  const std::string both = "belongs to daemon boot epoch " + std::to_string(before.boot_epoch) +
                           "; the daemon restarted (epoch " + std::to_string(after.boot_epoch) +
                           ")";
  std::uint32_t tok = 7;
  pf_write_run runs[3];
  pf_append_result ar{};
  EXPECT_EQ(pf_append(c.get(), old_branch, &tok, 1, runs, 3, &ar), PF_STALE);
  EXPECT_NE(last_error().find(both), std::string::npos) << last_error();
  char hex[32];
  std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(old_branch));
  EXPECT_NE(last_error().find(std::string("branch ") + hex), std::string::npos) << last_error();
  EXPECT_STREQ(pf_result_string(PF_STALE), "PF_STALE");
  EXPECT_EQ(pf_commit(c.get(), old_branch), PF_STALE);
  EXPECT_EQ(pf_truncate(c.get(), old_branch, 1), PF_STALE);
  pf_branch_info info{};
  EXPECT_EQ(pf_branch_view(c.get(), old_branch, &info, nullptr, 0, nullptr, 0), PF_STALE);
  pf_snapshot_result snap{};
  EXPECT_EQ(pf_snapshot(c.get(), old_branch, nullptr, &snap), PF_STALE);
  const pf_source old_source = pf_source_branch(old_branch);
  pf_branch_id forked[2];
  pf_fork_result fr{};
  EXPECT_EQ(pf_fork_branches(c.get(), &old_source, 2, forked, 2, &fr), PF_STALE);
  EXPECT_NE(last_error().find(both), std::string::npos) << last_error();
  EXPECT_EQ(pf_branch_free(c.get(), old_branch), PF_STALE);
  EXPECT_EQ(pf_pages_release(c.get(), &held, 1), PF_STALE);
  EXPECT_NE(last_error().find("boot epoch " + std::to_string(before.boot_epoch)), std::string::npos)
      << last_error();
  // The earlier session's writable pages are no longer this client's to write.
  std::uint32_t access = 0;
  ASSERT_EQ(pf_page_access(c.get(), old_pages[0], &access), PF_OK);
  EXPECT_EQ(access & PF_PAGE_WRITABLE, 0u);
  EXPECT_EQ(pool_json(c.get()).value("branches", -1), 0) << "a stale call reached the daemon";

  // New handles work, and the new mapping is the new daemon's pool: pages written here read
  // back through another client's mapping.
  std::vector<std::uint32_t> pages;
  const pf_branch_id b = written_branch(c.get(), 8, 0x5A, &pages);
  EXPECT_EQ(b >> 32, after.boot_epoch);
  ASSERT_FALSE(pages.empty());
  snap = {};
  ASSERT_EQ(pf_snapshot(c.get(), b, "after-restart", &snap), PF_OK) << last_error();
  ClientPtr other(connect_or_fail(second.socket()));
  pf_checkout_result co{};
  ASSERT_EQ(pf_checkout_branch(other.get(), "after-restart", &co), PF_OK) << last_error();
  const std::vector<std::uint32_t> seen = view_pages(other.get(), co.branch);
  EXPECT_EQ(seen, pages);
  for (std::uint32_t page : pages) {
    EXPECT_TRUE(page_is(other.get(), page, 0x5A)) << "page " << page;
    EXPECT_TRUE(page_is(c.get(), page, 0x5A)) << "page " << page;
  }
  // Fresh keyed pages too: alloc, write, release.
  std::uint32_t fresh = 0;
  ASSERT_EQ(pf_pages_alloc(c.get(), 1, &fresh, 1), PF_OK) << last_error();
  void* p = nullptr;
  ASSERT_EQ(pf_page_ptr(c.get(), fresh, &p), PF_OK);
  std::memset(p, 0x33, after.page_bytes);
  EXPECT_TRUE(page_is(c.get(), fresh, 0x33));
  EXPECT_EQ(pf_pages_release(c.get(), &fresh, 1), PF_OK) << last_error();
  EXPECT_EQ(pf_client_generation(c.get()), 1u);
}

INSTANTIATE_TEST_SUITE_P(Signals, DaemonRestart, ::testing::Values(SIGTERM, SIGKILL),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return std::string(i.param == SIGKILL ? "Sigkill" : "Sigterm");
                         });

// True when thread `tid` of this process is blocked in recvmsg (a client waiting for a reply).
bool in_recvmsg(pid_t tid) {
  const std::string s = read_file("/proc/self/task/" + std::to_string(tid) + "/syscall");
  return s.rfind(std::to_string(SYS_recvmsg) + " ", 0) == 0;
}

// True when process `pid` is stopped (state T in /proc/PID/stat).
bool stopped(pid_t pid) {
  const std::string s = read_file("/proc/" + std::to_string(pid) + "/stat");
  const std::size_t close = s.rfind(')');
  return close != std::string::npos && close + 2 < s.size() && s[close + 2] == 'T';
}

// Runs `call` on another thread while the daemon is stopped, once the request is sent (the
// thread waits in recvmsg) kills the daemon and starts a new one on the socket; returns the
// call's result and message, with the new daemon in *second.
std::pair<pf_result, std::string> call_across_a_crash(Daemon& first,
                                                      std::unique_ptr<Daemon>* second,
                                                      const std::function<pf_result()>& call) {
  EXPECT_EQ(kill(first.pid(), SIGSTOP), 0);
  EXPECT_TRUE(wait_until([&] { return stopped(first.pid()); }));
  std::atomic<pid_t> tid{0};
  auto answer = std::async(std::launch::async, [&] {
    tid = static_cast<pid_t>(syscall(SYS_gettid));
    const pf_result r = call();
    return std::make_pair(r, last_error());
  });
  EXPECT_TRUE(wait_until([&] { return tid != 0 && in_recvmsg(tid); }));
  first.kill_hard();
  *second = std::make_unique<Daemon>("64MiB", "2MiB", "tiny", first.socket());
  return answer.get();
}

// A mutation whose request reached the daemon that then died is not sent again: the client
// reconnects and answers PF_UNAVAILABLE saying so; the new daemon never saw it.
TEST(DaemonRestartInFlight, MutationIsNotRepeated) {
  Daemon first;
  ASSERT_GT(first.pid(), 0);
  ClientPtr c(connect_with(first.socket(), 60000));
  ASSERT_NE(c, nullptr);
  std::unique_ptr<Daemon> second;
  pf_new_branch nb{};
  const auto [r, message] = call_across_a_crash(
      first, &second, [&] { return pf_branch_create(c.get(), nullptr, 0, &nb); });
  EXPECT_EQ(r, PF_UNAVAILABLE) << message;
  EXPECT_NE(message.find("reconnected"), std::string::npos) << message;
  EXPECT_NE(message.find("branch_create"), std::string::npos) << message;
  EXPECT_EQ(pf_client_generation(c.get()), 1u);
  EXPECT_EQ(pool_json(c.get()).value("branches", -1), 0);
  // The client goes on with the new daemon.
  ASSERT_EQ(pf_branch_create(c.get(), nullptr, 0, &nb), PF_OK) << last_error();
  EXPECT_EQ(nb.branch >> 32, pool_info(c.get()).boot_epoch);
  EXPECT_EQ(pool_json(c.get()).value("branches", -1), 1);
}

// A read in flight when the daemon dies is sent again on the new session and answered.
TEST(DaemonRestartInFlight, ReadIsRetriedOnce) {
  Daemon first;
  ASSERT_GT(first.pid(), 0);
  ClientPtr c(connect_with(first.socket(), 60000));
  ASSERT_NE(c, nullptr);
  const std::uint32_t first_pid = static_cast<std::uint32_t>(first.pid());
  std::unique_ptr<Daemon> second;
  pf_pool_stats s{};
  s.struct_size = sizeof s;
  const auto [r, message] =
      call_across_a_crash(first, &second, [&] { return pf_pool_stats_get(c.get(), &s); });
  EXPECT_EQ(r, PF_OK) << message;
  EXPECT_EQ(s.capacity_pages, pool_info(c.get()).capacity_pages);
  EXPECT_EQ(pf_client_generation(c.get()), 1u);
  EXPECT_NE(pool_info(c.get()).daemon_pid, first_pid);
}

// No daemon comes back within the reconnect timeout: PF_UNAVAILABLE saying so (bounded),
// later calls try once each; once a daemon is back the next call reconnects.
TEST(DaemonRestartBounds, NoDaemonIsUnavailableUntilOneIsBack) {
  Daemon first;
  ASSERT_GT(first.pid(), 0);
  ClientPtr c(connect_with(first.socket(), 50));
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(first.stop(), 0);
  pf_pool_stats s{};
  s.struct_size = sizeof s;
  EXPECT_EQ(pf_pool_stats_get(c.get(), &s), PF_UNAVAILABLE);
  EXPECT_NE(last_error().find("reconnecting failed"), std::string::npos) << last_error();
  std::size_t need = 0;
  EXPECT_EQ(pf_health(c.get(), nullptr, 0, &need), PF_UNAVAILABLE);
  EXPECT_EQ(pf_client_generation(c.get()), 0u);
  Daemon second("64MiB", "2MiB", "tiny", first.socket());
  ASSERT_GT(second.pid(), 0);
  EXPECT_EQ(pf_pool_stats_get(c.get(), &s), PF_OK) << last_error();
  EXPECT_EQ(pf_client_generation(c.get()), 1u);
}

// A client (connected with `flags`) whose daemon stopped (SIGTERM) and was replaced on its
// socket by one with `capacity`: its next two pf_pool_stats_get (which must agree), then.
struct AfterRestart {
  pf_result result = PF_OK;
  std::string message;
  std::uint64_t generation = 0;
  bool fresh_client_connects = false;
};
AfterRestart stats_after_restart(std::uint32_t flags, const std::string& capacity) {
  AfterRestart out;
  Daemon first;
  EXPECT_GT(first.pid(), 0);
  ClientPtr c(connect_with(first.socket(), 0, flags));
  EXPECT_EQ(first.stop(), 0);
  Daemon second(capacity, "2MiB", "tiny", first.socket());
  EXPECT_GT(second.pid(), 0);
  pf_pool_stats s{};
  s.struct_size = sizeof s;
  out.result = pf_pool_stats_get(c.get(), &s);
  out.message = last_error();
  EXPECT_EQ(pf_pool_stats_get(c.get(), &s), out.result) << last_error();
  out.generation = pf_client_generation(c.get());
  out.fresh_client_connects = ClientPtr(connect_or_fail(second.socket())) != nullptr;
  return out;
}

// PF_CONNECT_NO_RECONNECT keeps the old behaviour: a daemon gone is gone for this client.
TEST(DaemonRestartBounds, NoReconnectFlagStaysUnavailable) {
  const AfterRestart r = stats_after_restart(PF_CONNECT_NO_RECONNECT, "64MiB");
  EXPECT_EQ(r.result, PF_UNAVAILABLE);
  EXPECT_EQ(r.generation, 0u);
  EXPECT_TRUE(r.fresh_client_connects);
}

// A daemon restarted with another pool is not this client's: PF_UNAVAILABLE naming the
// difference, on every call; a new client connects to it.
TEST(DaemonRestartBounds, DifferentPoolIsRefused) {
  const AfterRestart r = stats_after_restart(0, "32MiB");
  EXPECT_EQ(r.result, PF_UNAVAILABLE);
  EXPECT_NE(r.message.find("different pool"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("capacity_bytes"), std::string::npos) << r.message;
  EXPECT_EQ(r.generation, 0u);
  EXPECT_TRUE(r.fresh_client_connects);
}

// The C++ header: generation(), StaleHandle (an Error with PF_STALE) from an old Branch,
// whose destructor stays silent.
TEST(DaemonRestartHpp, GenerationAndStaleHandle) {
  Daemon first;
  ASSERT_GT(first.pid(), 0);
  processfork::ConnectOptions options;
  options.socket_path = first.socket();
  options.reconnect_timeout_ms = 30000;
  processfork::Client client(options);
  processfork::NewBranch old = client.branch();
  EXPECT_EQ(client.generation(), 0u);
  ASSERT_EQ(first.stop(SIGKILL), 128 + SIGKILL);
  Daemon second("64MiB", "2MiB", "tiny", first.socket());
  ASSERT_GT(second.pid(), 0);
  EXPECT_EQ(client.pool_stats().used_pages, 0u);
  EXPECT_EQ(client.generation(), 1u);
  const std::uint32_t tokens[] = {1, 2, 3};
  try {
    old.branch.append(tokens);
    ADD_FAILURE() << "append on a branch of the earlier daemon did not throw";
  } catch (const processfork::StaleHandle& e) {
    EXPECT_EQ(e.code(), PF_STALE);
    EXPECT_NE(std::string(e.what()).find("the daemon restarted"), std::string::npos) << e.what();
  }
  EXPECT_THROW(old.branch.commit(), processfork::Error);
  processfork::NewBranch fresh = client.branch();
  EXPECT_EQ(fresh.branch.append(tokens).runs.empty(), false);
}

}  // namespace
}  // namespace pf::shimtest
