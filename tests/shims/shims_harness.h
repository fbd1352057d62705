// Harness for the shim tests: a real daemon (`processfork serve`, the CLI binary) as a child
// process, real client processes (shims_test_client, the CLI) with their output captured
// (both through tests/support/daemon_process.h), and a few helpers over the C ABI.
// Everything talks to the daemon through libprocessfork.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "shims/include/processfork.h"
#include "tests/support/daemon_process.h"

namespace pf::shimtest {

using nlohmann::json;
using namespace std::chrono_literals;

using pf::testing::Child;
using pf::testing::read_file;
using pf::testing::run;
using pf::testing::RunResult;
using pf::testing::TempDir;
using pf::testing::wait_until;

inline const char* kCli = PF_CLI_PATH;
inline const char* kTestClient = PF_TEST_CLIENT_PATH;

// `processfork serve` as a child process on a socket in its own temporary directory; its log
// is dir()/daemon.log, stop() its exit code, and the destructor stops it (SIGTERM).
class Daemon : public pf::testing::DaemonProcess {
 public:
  // `socket`: "" = one in the daemon's own directory; a path = that one (a restart on the
  // socket of an earlier daemon).
  explicit Daemon(const std::string& capacity = "64MiB", const std::string& chunk = "2MiB",
                  const std::string& geometry = "tiny", const std::string& socket = "")
      : DaemonProcess("pfs"), socket_(socket.empty() ? dir().file("s") : socket) {
    const std::string ready_file = dir().file("r");
    start(kCli,
          {"serve", "--device", "host", "--geometry", geometry, "--capacity", capacity, "--chunk",
           chunk, "--socket", socket_, "--http", "off", "--ready-file", ready_file},
          ready_file);
  }

  const std::string& socket() const { return socket_; }

 private:
  std::string socket_;
};

// --- C ABI helpers ------------------------------------------------------------------------

inline pf_client* connect_or_fail(const std::string& socket, std::uint32_t flags = 0) {
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = socket.c_str();
  cfg.flags = flags;
  pf_client* c = nullptr;
  const pf_result r = pf_connect(&cfg, &c);
  EXPECT_EQ(r, PF_OK) << pf_last_error_message(nullptr);
  return c;
}

struct ClientDeleter {
  void operator()(pf_client* c) const { pf_disconnect(c); }
};
using ClientPtr = std::unique_ptr<pf_client, ClientDeleter>;

inline pf_pool_info pool_info(pf_client* c) {
  pf_pool_info info{};
  info.struct_size = sizeof info;
  EXPECT_EQ(pf_pool_info_get(c, &info), PF_OK);
  return info;
}

inline pf_pool_stats pool_stats(pf_client* c) {
  pf_pool_stats s{};
  s.struct_size = sizeof s;
  EXPECT_EQ(pf_pool_stats_get(c, &s), PF_OK) << pf_last_error_message(c);
  return s;
}

inline json pool_json(pf_client* c) {
  std::size_t need = 0;
  EXPECT_EQ(pf_pool_json(c, nullptr, 0, &need), PF_OK);
  std::string buf(need, '\0');
  EXPECT_EQ(pf_pool_json(c, buf.data(), buf.size(), &need), PF_OK);
  buf.resize(need - 1);
  return json::parse(buf, nullptr, false);
}

inline std::vector<std::uint32_t> view_pages(pf_client* c, pf_branch_id b,
                                             pf_branch_info* info_out = nullptr) {
  pf_branch_info info{};
  EXPECT_EQ(pf_branch_view(c, b, &info, nullptr, 0, nullptr, 0), PF_OK) << pf_last_error_message(c);
  std::vector<std::uint32_t> pages(info.n_pages);
  EXPECT_EQ(pf_branch_view(c, b, &info, pages.data(), pages.size(), nullptr, 0), PF_OK);
  if (info_out != nullptr) *info_out = info;
  return pages;
}

// A pf_kv_layout over one K and one V pointer per layer, strides in bytes (pf_kv_copy).
inline pf_kv_layout kv_layout(const std::vector<std::uint64_t>& k,
                              const std::vector<std::uint64_t>& v, std::uint64_t block_tokens,
                              std::int64_t block_stride, std::int64_t token_stride,
                              std::int64_t head_stride, std::uint32_t elem_bytes) {
  return pf_kv_layout{sizeof(pf_kv_layout),
                      static_cast<std::uint32_t>(k.size()),
                      k.data(),
                      v.data(),
                      block_tokens,
                      block_stride,
                      token_stride,
                      head_stride,
                      elem_bytes,
                      0};
}

}  // namespace pf::shimtest
