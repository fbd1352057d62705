// Pool shrink through real processes: after the daemon trims (gc gives empty trailing
// chunks back), an attached client unmaps the released chunks on its next reply, even one
// the daemon refuses, so its mapping no longer pins their memory (docs/protocol.md "Pool
// shrink"). Checked in this process's /proc/self/maps, not only in the client's counters.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/shims/shims_harness.h"

namespace pf::shimtest {
namespace {

// Bytes of memfd chunk mappings ("/memfd:processfork-chunk", the host backend's chunks)
// inside [base, base + bytes) of this process.
std::size_t chunk_bytes_mapped(const void* base, std::size_t bytes) {
  const auto lo = reinterpret_cast<std::uintptr_t>(base);
  const std::uintptr_t hi = lo + bytes;
  std::ifstream maps("/proc/self/maps");
  std::size_t total = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/memfd:processfork-chunk") == std::string::npos) continue;
    unsigned long long start = 0;
    unsigned long long end = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx", &start, &end) != 2) continue;
    if (start >= lo && end <= hi) total += end - start;
  }
  return total;
}

pf_mapping_info mapping_of(pf_client* c) {
  pf_mapping_info m{};
  EXPECT_EQ(pf_mapping_info_get(c, &m), PF_OK);
  return m;
}

class PoolTrim : public ::testing::Test {
 protected:
  // A client process that writes 40000 tokens (10000 pages of the tiny geometry: 3 chunks
  // of 2 MiB) and holds its session open until its stdin closes; `ready` once written.
  std::unique_ptr<Child> writer(const char* seed, const char* first_token, bool snapshot) {
    std::vector<std::string> args{"prefill", daemon_.socket(), seed, "40000", first_token};
    if (snapshot) args.emplace_back("snapshot");
    args.emplace_back("hold");
    const std::string err = daemon_.dir().file(std::string("writer") + seed + ".err");
    auto child = std::make_unique<Child>(kTestClient, args, err);
    EXPECT_TRUE(child->wait_line("ready")) << read_file(err);
    return child;
  }

  Daemon daemon_;
};

TEST_F(PoolTrim, ReleasedChunksLeaveAnAttachedClientOnItsNextReplyEvenARefusal) {
  // `ops` manages snapshots and runs gc without mapping anything; `engine` maps the pool.
  ClientPtr ops(connect_or_fail(daemon_.socket(), PF_CONNECT_NO_ATTACH));
  ClientPtr engine(connect_or_fail(daemon_.socket()));
  std::unique_ptr<Child> first = writer("43", "20000", /*snapshot=*/true);
  const std::string cid = first->field("cid");
  ASSERT_EQ(pf_attach(engine.get()), PF_OK) << pf_last_error_message(engine.get());

  const pf_pool_info info = pool_info(engine.get());
  const pf_mapping_info grown = mapping_of(engine.get());
  ASSERT_GE(grown.mapped_chunks, 3u);
  // Chunks of the pool this process maps, by the bytes /proc/self/maps shows (exact).
  auto chunks_in_maps = [&] {
    const std::size_t bytes = chunk_bytes_mapped(grown.base, info.capacity_bytes);
    EXPECT_EQ(bytes % info.chunk_bytes, 0u) << "a chunk is partly mapped";
    return bytes / info.chunk_bytes;
  };
  EXPECT_EQ(chunks_in_maps(), grown.mapped_chunks);

  // Every holder goes; gc trims the trailing chunks.
  first->close_stdin();
  EXPECT_EQ(first->wait(), 0);
  ASSERT_EQ(pf_ref_delete(ops.get(), "prefill"), PF_OK) << pf_last_error_message(ops.get());
  ASSERT_EQ(pf_unpin(ops.get(), cid.c_str()), PF_OK) << pf_last_error_message(ops.get());
  pf_gc_result gc{};
  ASSERT_EQ(pf_gc(ops.get(), PF_GC_DROP_CACHE, &gc), PF_OK) << pf_last_error_message(ops.get());
  ASSERT_GE(gc.released_chunks, 1u);
  const std::uint32_t chunks_now = pool_json(ops.get()).value("chunks", 999u);
  ASSERT_LT(chunks_now, grown.mapped_chunks);
  // The engine has not talked to the daemon since: it still maps the released chunks.
  EXPECT_EQ(chunks_in_maps(), grown.mapped_chunks);

  // Its next call is refused (a branch this daemon never made), and still drops them.
  const pf_branch_id unknown = (pf_branch_id{info.boot_epoch} << 32) | 0xfffffu;
  EXPECT_EQ(pf_branch_free(engine.get(), unknown), PF_NOT_FOUND)
      << pf_last_error_message(engine.get());
  EXPECT_EQ(mapping_of(engine.get()).mapped_chunks, chunks_now);
  EXPECT_EQ(chunks_in_maps(), chunks_now)
      << "the released chunks' memory is still mapped in this process";

  // The pool grows again: new chunks at the released indices are mapped afresh.
  std::unique_ptr<Child> second = writer("44", "60000", /*snapshot=*/false);
  ASSERT_EQ(pf_attach(engine.get()), PF_OK) << pf_last_error_message(engine.get());
  const std::uint32_t regrown = mapping_of(engine.get()).mapped_chunks;
  EXPECT_GE(regrown, 3u);
  EXPECT_EQ(chunks_in_maps(), regrown);
  second->close_stdin();
  EXPECT_EQ(second->wait(), 0);
}

}  // namespace
}  // namespace pf::shimtest
