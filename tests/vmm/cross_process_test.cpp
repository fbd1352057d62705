// Two real processes share pool memory: this test creates chunks and writes a pattern,
// hands the chunk fds over a Unix socket to an exec'd vmm_peer, which maps them into its
// own reservation, verifies the pattern and writes back; then this process sees the write.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "ipc/fd_passing.h"
#include "tests/support/daemon_process.h"
#include "tests/support/pattern.h"
#include "tests/vmm/handoff_wire.h"
#include "vmm/mapped_range.h"
#include "vmm/registry.h"

namespace pf::vmm {
namespace {

using testing::HandoffReply;
using testing::HandoffRequest;

// vmm_peer with `child_end` as its fd 3.
testing::ChildSpec peer(int child_end, const std::string& device) {
  testing::ChildSpec spec(PF_VMM_PEER_PATH, {"--socket-fd", "3", "--device", device}, "",
                          testing::ChildSpec::Stdout::kInherit);
  spec.fds = {{child_end, 3}};
  return spec;
}

class CrossProcess : public ::testing::TestWithParam<const char*> {};

TEST_P(CrossProcess, PeerMapsVerifiesAndWritesBack) {
  auto choice = open_backend(GetParam());
  if (!choice.is_ok())
    GTEST_SKIP() << GetParam() << " unavailable: " << choice.status().to_string();
  Backend& backend = *choice.value().backend;
  const std::size_t chunk = backend.granularity();
  constexpr std::size_t kChunks = 3;
  const std::size_t total = kChunks * chunk;

  auto range = MappedRange::create(backend, total);
  ASSERT_TRUE(range.is_ok()) << range.status().to_string();
  for (std::size_t i = 0; i < kChunks; ++i) ASSERT_TRUE(range.value()->grow(chunk).is_ok());
  const std::uint64_t seed = 0xC0FFEE;
  const auto mine = testing::pattern(total, seed);
  ASSERT_TRUE(backend.copy_to_mapped(range.value()->base(), mine.data(), total).is_ok());

  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd parent_end(pair[0]), child_end(pair[1]);
  testing::Child child(peer(child_end.get(), GetParam()));
  ASSERT_GT(child.pid(), 0) << "could not exec " << PF_VMM_PEER_PATH;
  child_end.reset();

  std::vector<UniqueFd> exported;
  std::vector<int> raw;
  for (std::size_t i = 0; i < kChunks; ++i) {
    auto fd = range.value()->export_chunk(i);
    ASSERT_TRUE(fd.is_ok());
    raw.push_back(fd.value().get());
    exported.push_back(std::move(fd.value()));
  }
  HandoffRequest req;
  req.n_chunks = kChunks;
  req.chunk_bytes = chunk;
  req.seed = seed;
  ASSERT_TRUE(ipc::send_with_fds(parent_end.get(), std::as_bytes(std::span(&req, 1)), raw).is_ok());
  exported.clear();  // the kernel holds its own references while the message is in flight

  HandoffReply reply;
  std::vector<UniqueFd> none;
  const Status got =
      ipc::recv_with_fds(parent_end.get(), std::as_writable_bytes(std::span(&reply, 1)), 0, &none);
  const int peer_exit = child.wait();
  ASSERT_NE(peer_exit, testing::kNoChild);
  ASSERT_TRUE(got.is_ok()) << got.to_string();
  ASSERT_EQ(reply.code, 0) << "peer: " << reply.message;
  EXPECT_EQ(peer_exit, 0);
  EXPECT_EQ(reply.verified_bytes, total);

  // The peer's write into its own mapping is visible here; the first half is untouched.
  std::vector<std::uint8_t> now(total);
  ASSERT_TRUE(backend.copy_from_mapped(now.data(), range.value()->base(), total).is_ok());
  const std::size_t half = total / 2;
  const auto theirs = testing::pattern(total - half, reply.written_seed);
  EXPECT_TRUE(std::equal(now.begin(), now.begin() + half, mine.begin()));
  EXPECT_TRUE(std::equal(now.begin() + half, now.end(), theirs.begin()));
}

INSTANTIATE_TEST_SUITE_P(EveryBackend, CrossProcess, ::testing::Values("host", "cuda:0"),
                         [](const auto& info) {
                           std::string n = info.param;
                           return n == "host" ? std::string("host") : std::string("cuda_0");
                         });

}  // namespace
}  // namespace pf::vmm
