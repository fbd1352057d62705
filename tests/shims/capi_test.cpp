// The C ABI's contract: result codes and messages for bad input (NULL pointers, bad sizes,
// too-small buffers, unknown ids), size-tagged structs, ownership between clients, merge /
// diff / log / refs shapes, threads sharing a client, and a daemon that goes away — never
// a crash, and a failed call changes nothing.
#include <dlfcn.h>

#include <atomic>
#include <csignal>
#include <cstddef>

#include "tests/shims/kv_pattern.h"
#include "tests/shims/shims_harness.h"

namespace pf::shimtest {
namespace {

class ShimsCApi : public ::testing::Test {
 protected:
  void SetUp() override { c_.reset(connect_or_fail(daemon_.socket())); }

  pf_branch_id branch_of(const std::vector<std::uint32_t>& tokens) {
    pf_new_branch nb{};
    EXPECT_EQ(pf_branch_create(c_.get(), nullptr, 0, &nb), PF_OK);
    std::vector<pf_write_run> runs(pf_append_max_runs(c_.get(), tokens.size()));
    pf_append_result res{};
    EXPECT_EQ(pf_append(c_.get(), nb.branch, tokens.data(), tokens.size(), runs.data(), runs.size(),
                        &res),
              PF_OK)
        << pf_last_error_message(nullptr);
    return nb.branch;
  }
  pf_branch_id new_branch(std::size_t n_tokens = 0, std::uint32_t base = 1) {
    pf_new_branch nb{};
    EXPECT_EQ(pf_branch_create(c_.get(), nullptr, 0, &nb), PF_OK);
    if (n_tokens > 0) {
      std::vector<std::uint32_t> t(n_tokens);
      for (std::size_t i = 0; i < n_tokens; ++i) t[i] = base + static_cast<std::uint32_t>(i);
      std::vector<pf_write_run> runs(pf_append_max_runs(c_.get(), n_tokens));
      pf_append_result res{};
      EXPECT_EQ(pf_append(c_.get(), nb.branch, t.data(), t.size(), runs.data(), runs.size(), &res),
                PF_OK)
          << pf_last_error_message(nullptr);
    }
    return nb.branch;
  }
  std::string snapshot(pf_branch_id b, const char* name = nullptr) {
    pf_snapshot_result s{};
    EXPECT_EQ(pf_snapshot(c_.get(), b, name, &s), PF_OK) << pf_last_error_message(nullptr);
    return s.cid;
  }
  std::uint64_t length(pf_branch_id b) {
    pf_branch_info info{};
    EXPECT_EQ(pf_branch_view(c_.get(), b, &info, nullptr, 0, nullptr, 0), PF_OK);
    return info.n_tokens;
  }
  std::string json_of(pf_result (*f)(pf_client*, char*, size_t, size_t*)) {
    std::size_t need = 0;
    EXPECT_EQ(f(c_.get(), nullptr, 0, &need), PF_OK);
    std::string s(need, '\0');
    EXPECT_EQ(f(c_.get(), s.data(), s.size(), &need), PF_OK);
    s.resize(need - 1);
    return s;
  }

  Daemon daemon_;
  ClientPtr c_;
};

TEST(ShimsCApiStatic, ResultStringsAndVersions) {
  EXPECT_STREQ(pf_result_string(PF_OK), "PF_OK");
  EXPECT_STREQ(pf_result_string(PF_NOT_FOUND), "PF_NOT_FOUND");
  EXPECT_STREQ(pf_result_string(PF_INTERNAL), "PF_INTERNAL");
  EXPECT_STREQ(pf_result_string(PF_DATA_CORRUPT), "PF_DATA_CORRUPT");
  EXPECT_STREQ(pf_result_string(static_cast<pf_result>(99)), "PF_UNKNOWN_RESULT");
  EXPECT_EQ(pf_abi_version() >> 16, static_cast<std::uint32_t>(PF_ABI_VERSION_MAJOR));
  EXPECT_EQ(pf_abi_version() & 0xffffu, static_cast<std::uint32_t>(PF_ABI_VERSION_MINOR));
  EXPECT_GE(PF_ABI_VERSION_MINOR, 6);  // pf_branch_view_ready, pf_branch_info.ready_pages
  EXPECT_STRNE(pf_version_string(), "");
  EXPECT_NE(pf_last_error_message(nullptr), nullptr);
  EXPECT_NE(pf_last_error_trail(nullptr), nullptr);
}

// One dtype table (base/dtype.h) behind enum pf_dtype.
TEST(ShimsCApiStatic, DtypeTable) {
  EXPECT_STREQ(pf_dtype_name(PF_DTYPE_BF16), "bf16");
  EXPECT_STREQ(pf_dtype_name(PF_DTYPE_FP8_E5M2), "fp8_e5m2");
  EXPECT_EQ(pf_dtype_bytes(PF_DTYPE_FP32), 4u);
  EXPECT_EQ(pf_dtype_bytes(PF_DTYPE_FP16), 2u);
  EXPECT_EQ(pf_dtype_bytes(PF_DTYPE_FP8_E4M3), 1u);
  EXPECT_EQ(pf_dtype_name(5), nullptr);
  EXPECT_EQ(pf_dtype_bytes(5), 0u);
}

// A failure carries the file:line trail it took inside the library, and every failure
// replaces the trail of the one before.
TEST(ShimsCApiStatic, LastErrorTrail) {
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = "/nonexistent/processfork.sock";
  pf_client* c = nullptr;
  ASSERT_EQ(pf_connect(&cfg, &c), PF_UNAVAILABLE);
  const std::string trail = pf_last_error_trail(nullptr);
  EXPECT_NE(trail.find("shims/client/connection.cpp:"), std::string::npos) << trail;
  EXPECT_EQ(pf_connect(&cfg, nullptr), PF_INVALID_ARGUMENT);
  const std::string bad_arg = pf_last_error_trail(nullptr);
  EXPECT_NE(bad_arg.find("shims/lib/processfork.cpp:"), std::string::npos) << bad_arg;
  EXPECT_EQ(bad_arg.find("connection.cpp"), std::string::npos) << bad_arg;
}

TEST(ShimsCApiStatic, OnlyPfSymbolsAreExported) {
  void* lib = dlopen(PF_LIBPROCESSFORK_PATH, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(lib, nullptr) << dlerror();
  EXPECT_NE(dlsym(lib, "pf_connect"), nullptr);
  EXPECT_NE(dlsym(lib, "pf_fork"), nullptr);
  // Internal C++ symbols stay hidden (version script + -fvisibility=hidden).
  EXPECT_EQ(dlsym(lib, "_ZN2pf6client10Connection7connectERKNS0_14ConnectOptionsE"), nullptr);
  EXPECT_EQ(dlsym(lib, "_ZN2pf3vmm12open_backendESt17basic_string_viewIcSt11char_traitsIcEE"),
            nullptr);
  dlclose(lib);
}

TEST(ShimsCApiStatic, ConnectWithoutDaemonIsUnavailable) {
  TempDir dir;
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  const std::string path = dir.file("nobody");
  cfg.socket_path = path.c_str();
  pf_client* c = reinterpret_cast<pf_client*>(0x1);
  EXPECT_EQ(pf_connect(&cfg, &c), PF_UNAVAILABLE);
  EXPECT_EQ(c, nullptr);
  EXPECT_NE(std::string(pf_last_error_message(nullptr)).find(path), std::string::npos);
  // A socket path too long for sockaddr_un.
  const std::string long_path(200, 'x');
  cfg.socket_path = long_path.c_str();
  EXPECT_EQ(pf_connect(&cfg, &c), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_connect(&cfg, nullptr), PF_INVALID_ARGUMENT);
}

TEST_F(ShimsCApi, NullPointersAreInvalidArguments) {
  pf_client* c = c_.get();
  pf_new_branch nb{};
  pf_append_result ar{};
  pf_branch_info bi{};
  pf_snapshot_result sr{};
  pf_merge_result mr{};
  pf_mapping_info mi{};
  pf_pool_info pi{};
  pi.struct_size = sizeof pi;
  pf_pool_stats ps{};
  ps.struct_size = sizeof ps;
  pf_branch_id id = 0;
  void* p = nullptr;
  char buf[PF_CID_BYTES];
  std::uint32_t tok = 1;
  const pf_source src = pf_source_branch(1);
  const pf_source null_name_src = pf_source_named("");

  EXPECT_EQ(pf_pool_info_get(nullptr, &pi), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pool_info_get(c, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_mapping_info_get(nullptr, &mi), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_mapping_info_get(c, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_attach(nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_page_ptr(nullptr, 0, &p), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_page_ptr(c, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_create(nullptr, nullptr, 0, &nb), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_create(c, nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_create(c, nullptr, 5, &nb), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_append_max_runs(nullptr, 10), 0u);
  EXPECT_EQ(pf_append(nullptr, 1, &tok, 1, nullptr, 0, &ar), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_append(c, 1, nullptr, 1, nullptr, 0, &ar), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_commit(nullptr, 1), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_truncate(nullptr, 1, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_free(nullptr, 1), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_detach(nullptr, 1), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_view(nullptr, 1, &bi, nullptr, 0, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_view(c, 1, nullptr, nullptr, 0, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_view(c, 1, &bi, nullptr, 4, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_snapshot(nullptr, 1, nullptr, &sr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_snapshot(c, 1, nullptr, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_fork(nullptr, &src, 1, &id, 1, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_fork(c, nullptr, 1, &id, 1, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_fork(c, &null_name_src, 1, &id, 1, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_fork(c, &src, 1, nullptr, 1, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_checkout(nullptr, "x", &id, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_checkout(c, nullptr, &id, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_checkout(c, "x", nullptr, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_merge(nullptr, &src, &src, &mr, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_merge(c, nullptr, &src, &mr, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_merge(c, &src, nullptr, &mr, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_merge(c, &src, &src, nullptr, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_diff(nullptr, &src, &src, nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_diff(c, nullptr, &src, nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_diff(c, &src, &src, nullptr, 16, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_log(c, nullptr, nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_manifest(c, nullptr, nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_snapshots(nullptr, nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_refs_list(nullptr, nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_health(nullptr, nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pool_json(nullptr, nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branches(nullptr, nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_ref_set(c, nullptr, "x"), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_ref_set(c, "x", nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_ref_set(c, "", "x"), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_ref_get(c, "x", nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_ref_get(c, nullptr, buf, sizeof buf), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_ref_delete(c, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_unpin(c, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pool_stats_get(nullptr, &ps), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_pool_stats_get(c, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_gc(nullptr, 0, nullptr), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_gc(c, 0x80, nullptr), PF_INVALID_ARGUMENT);
  pf_disconnect(nullptr);  // a no-op
  EXPECT_STREQ(pf_last_error_message(c), "flags has unknown bits 128");
  // None of that reached the daemon or broke the session.
  EXPECT_EQ(pool_stats(c).used_pages, 0u);
}

TEST_F(ShimsCApi, SizeTaggedStructs) {
  pf_client* out = nullptr;
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = daemon_.socket().c_str();
  cfg.struct_size = 0;
  EXPECT_EQ(pf_connect(&cfg, &out), PF_INVALID_ARGUMENT);
  EXPECT_NE(std::string(pf_last_error_message(nullptr)).find("struct_size"), std::string::npos);
  cfg.struct_size = offsetof(pf_connect_config, socket_path);  // cuts socket_path in half
  EXPECT_EQ(pf_connect(&cfg, &out), PF_INVALID_ARGUMENT);
  cfg.struct_size = sizeof cfg + 8;  // a newer header than this library
  EXPECT_EQ(pf_connect(&cfg, &out), PF_UNSUPPORTED);
  EXPECT_EQ(out, nullptr);
  // An older, smaller config (no flags field): accepted with defaults (attach).
  cfg.struct_size = offsetof(pf_connect_config, flags);
  cfg.flags = PF_CONNECT_NO_ATTACH;  // beyond struct_size: must be ignored
  ASSERT_EQ(pf_connect(&cfg, &out), PF_OK) << pf_last_error_message(nullptr);
  ClientPtr old_client(out);
  pf_mapping_info mi{};
  ASSERT_EQ(pf_mapping_info_get(out, &mi), PF_OK);
  EXPECT_EQ(mi.attached, 1u);
  cfg.struct_size = sizeof cfg;
  cfg.flags = 0x100;
  EXPECT_EQ(pf_connect(&cfg, &out), PF_INVALID_ARGUMENT);
  cfg.flags = 0;
  cfg.spin_us = 2000000;
  EXPECT_EQ(pf_connect(&cfg, &out), PF_INVALID_ARGUMENT);
  // A client that busy-waits for replies behaves like any other.
  cfg.spin_us = 50;
  ASSERT_EQ(pf_connect(&cfg, &out), PF_OK);
  ClientPtr spinning(out);
  std::size_t need = 0;
  EXPECT_EQ(pf_health(out, nullptr, 0, &need), PF_OK);
  pf_new_branch nb{};
  EXPECT_EQ(pf_branch_create(out, nullptr, 0, &nb), PF_OK);
  EXPECT_EQ(pf_branch_free(out, nb.branch), PF_OK);

  // Output structs: struct_size bounds what is written.
  pf_pool_info info{};
  info.struct_size = sizeof info + 4;
  EXPECT_EQ(pf_pool_info_get(c_.get(), &info), PF_UNSUPPORTED);
  info.struct_size = 4;
  EXPECT_EQ(pf_pool_info_get(c_.get(), &info), PF_INVALID_ARGUMENT);
  std::memset(&info, 0xAB, sizeof info);
  info.struct_size = offsetof(pf_pool_info, lease);
  ASSERT_EQ(pf_pool_info_get(c_.get(), &info), PF_OK);
  EXPECT_EQ(info.page_tokens, 4u);  // tiny
  EXPECT_EQ(info.page_bytes, 512u);
  EXPECT_EQ(info.lease, 0xABABABABABABABABull) << "wrote past struct_size";
  info.struct_size = sizeof info;
  ASSERT_EQ(pf_pool_info_get(c_.get(), &info), PF_OK);
  EXPECT_STREQ(info.backend, "host");
  EXPECT_STREQ(info.device, "host");
  EXPECT_EQ(info.device_memory, 0u);
  EXPECT_EQ(info.layers, 2u);
  EXPECT_EQ(info.dtype, static_cast<std::uint32_t>(PF_DTYPE_BF16));
  EXPECT_EQ(info.protocol_major, 3u);
  EXPECT_EQ(info.daemon_pid, static_cast<std::uint32_t>(daemon_.pid()));
  EXPECT_NE(info.lease, 0u);

  pf_pool_stats stats{};
  stats.struct_size = sizeof stats * 2;
  EXPECT_EQ(pf_pool_stats_get(c_.get(), &stats), PF_UNSUPPORTED);
  std::memset(&stats, 0xCD, sizeof stats);
  stats.struct_size = offsetof(pf_pool_stats, free_pages);
  ASSERT_EQ(pf_pool_stats_get(c_.get(), &stats), PF_OK);
  EXPECT_EQ(stats.capacity_pages, 131072u);
  EXPECT_EQ(stats.free_pages, 0xCDCDCDCDCDCDCDCDull);
}

TEST_F(ShimsCApi, TooSmallBuffersReportTheSizeNeededAndChangeNothing) {
  const pf_branch_id b = new_branch(10);
  const std::size_t bound = pf_append_max_runs(c_.get(), 9);
  EXPECT_EQ(bound, 9u / 4 + 2);
  EXPECT_EQ(pf_append_max_runs(c_.get(), 0), 0u);

  // append: runs capacity below the bound is refused before anything is sent.
  std::vector<std::uint32_t> tokens(9, 5);
  std::vector<pf_write_run> runs(bound);
  pf_append_result ar{};
  EXPECT_EQ(pf_append(c_.get(), b, tokens.data(), tokens.size(), runs.data(), bound - 1, &ar),
            PF_INVALID_ARGUMENT);
  EXPECT_EQ(ar.n_runs, bound);
  EXPECT_EQ(length(b), 10u);
  ASSERT_EQ(pf_append(c_.get(), b, tokens.data(), tokens.size(), runs.data(), bound, &ar), PF_OK);
  EXPECT_EQ(length(b), 19u);
  EXPECT_EQ(ar.first_token, 10u);
  std::uint64_t covered = 0;
  for (std::size_t i = 0; i < ar.n_runs; ++i) {
    EXPECT_EQ(runs[i].first_token, 10u + covered);
    covered += runs[i].count;
  }
  EXPECT_EQ(covered, 9u);

  // branch view: info tells what is needed.
  pf_branch_info info{};
  std::uint32_t pages[2];
  EXPECT_EQ(pf_branch_view(c_.get(), b, &info, pages, 2, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(info.n_pages, 5u);
  EXPECT_EQ(info.n_tokens, 19u);
  EXPECT_EQ(info.fill_in_last_page, 3u);
  std::vector<std::uint32_t> all_tokens(18);
  std::vector<std::uint32_t> all_pages(5);
  EXPECT_EQ(pf_branch_view(c_.get(), b, &info, all_pages.data(), 5, all_tokens.data(), 18),
            PF_INVALID_ARGUMENT);
  all_tokens.resize(19);
  ASSERT_EQ(pf_branch_view(c_.get(), b, &info, all_pages.data(), 5, all_tokens.data(), 19), PF_OK);
  EXPECT_EQ(all_tokens[0], 1u);
  EXPECT_EQ(all_tokens[10], 5u);

  // fork: capacity below n is refused before sending; no branch is made.
  const std::string cid = snapshot(b);
  const std::uint64_t branches = pool_json(c_.get()).value("branches", 0u);
  const pf_source src = pf_source_named(cid.c_str());
  pf_branch_id kids[4];
  EXPECT_EQ(pf_fork(c_.get(), &src, 4, kids, 3, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_fork(c_.get(), &src, 0, kids, 4, nullptr, 0), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_fork(c_.get(), &src, PF_MAX_FORK + 1, kids, 4, nullptr, 0), PF_INVALID_ARGUMENT);
  char small[16];
  EXPECT_EQ(pf_fork(c_.get(), &src, 4, kids, 4, small, sizeof small), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_checkout(c_.get(), cid.c_str(), kids, small, sizeof small), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_ref_get(c_.get(), "x", small, sizeof small), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pool_json(c_.get()).value("branches", 0u), branches);
  char source_cid[PF_CID_BYTES];
  ASSERT_EQ(pf_fork(c_.get(), &src, 4, kids, 4, source_cid, sizeof source_cid), PF_OK);
  EXPECT_EQ(cid, source_cid);
  EXPECT_EQ(pool_json(c_.get()).value("branches", 0u), branches + 4);

  // The 1.1 forms answer the new branches' length in the same round trip.
  pf_branch_id more[2];
  pf_fork_result fr{};
  EXPECT_EQ(pf_fork_branches(c_.get(), &src, 2, more, 2, nullptr), PF_INVALID_ARGUMENT);
  ASSERT_EQ(pf_fork_branches(c_.get(), &src, 2, more, 2, &fr), PF_OK);
  EXPECT_EQ(fr.n, 2u);
  EXPECT_EQ(fr.n_tokens, info.n_tokens);
  EXPECT_EQ(cid, fr.source);
  pf_checkout_result co{};
  EXPECT_EQ(pf_checkout_branch(c_.get(), cid.c_str(), nullptr), PF_INVALID_ARGUMENT);
  ASSERT_EQ(pf_checkout_branch(c_.get(), cid.c_str(), &co), PF_OK);
  EXPECT_EQ(co.n_tokens, info.n_tokens);
  EXPECT_EQ(cid, co.cid);
  pf_branch_info mine{};
  ASSERT_EQ(pf_branch_view(c_.get(), co.branch, &mine, nullptr, 0, nullptr, 0), PF_OK);
  EXPECT_EQ(mine.n_tokens, co.n_tokens);
  EXPECT_EQ(pool_json(c_.get()).value("branches", 0u), branches + 7);

  // JSON answers: size query, too small, exact.
  const pf_source a = pf_source_branch(b);
  std::size_t need = 0;
  ASSERT_EQ(pf_diff(c_.get(), &a, &src, nullptr, 0, &need), PF_OK);
  ASSERT_GT(need, 10u);
  std::string text(need - 1, '\0');
  std::size_t need2 = 0;
  EXPECT_EQ(pf_diff(c_.get(), &a, &src, text.data(), need - 1, &need2), PF_INVALID_ARGUMENT);
  EXPECT_EQ(need2, need);
  text.resize(need);
  ASSERT_EQ(pf_diff(c_.get(), &a, &src, text.data(), need, &need2), PF_OK);
  EXPECT_EQ(text.back(), '\0');
  const json diff = json::parse(text.c_str());
  EXPECT_EQ(diff.value("common_tokens", 0u), 19u);
  EXPECT_EQ(diff["shared_pages"].size(), 5u);

  // merge: the recompute tokens do not fit -> the result branch is freed again, and a
  // retry with room gives the same CIDs.
  const pf_branch_id into = branch_of({1, 2, 3, 4, 50, 51});  // diverges from b after 4
  const pf_source from_src = pf_source_branch(b);
  const pf_source into_src = pf_source_branch(into);
  pf_merge_result mr{};
  const std::uint64_t before_merge = pool_json(c_.get()).value("branches", 0u);
  std::uint32_t one[1];
  EXPECT_EQ(pf_merge(c_.get(), &from_src, &into_src, &mr, one, 1), PF_INVALID_ARGUMENT);
  EXPECT_EQ(mr.n_recompute_tokens, 15u);  // b: tokens 1..10 then nine 5s; common prefix 4
  EXPECT_EQ(mr.branch, 0u);
  EXPECT_EQ(mr.outcome, static_cast<std::uint32_t>(PF_MERGE_THREE_WAY));
  EXPECT_EQ(pool_json(c_.get()).value("branches", 0u), before_merge);
  const std::string first_cid = mr.cid;
  std::vector<std::uint32_t> recompute(mr.n_recompute_tokens);
  ASSERT_EQ(pf_merge(c_.get(), &from_src, &into_src, &mr, recompute.data(), recompute.size()),
            PF_OK)
      << pf_last_error_message(nullptr);
  EXPECT_EQ(mr.cid, first_cid);  // content-addressed: the retry made the same snapshot
  EXPECT_NE(mr.branch, 0u);
  EXPECT_EQ(recompute[0], 5u);
  EXPECT_EQ(recompute[14], 5u);
  EXPECT_EQ(pool_json(c_.get()).value("branches", 0u), before_merge + 1);
}

// ABI 1.6: pf_branch_view_ready answers once the first wait_pages pages are readable and
// says how many leading pages are (info.ready_pages). Pages of appended branches and of
// checkouts of resident snapshots are all readable at once: every wait answers the same
// page ids as pf_branch_view, with ready_pages == n_pages. Buffers keep pf_branch_view's
// contract.
TEST_F(ShimsCApi, BranchViewReadyAnswersThePagesAndHowManyAreReady) {
  pf_pool_info pool{};
  pool.struct_size = sizeof pool;
  ASSERT_EQ(pf_pool_info_get(c_.get(), &pool), PF_OK);
  ASSERT_GE(pool.protocol_minor, 4u) << "a 3.4 daemon reports ready_pages itself";
  const pf_branch_id b = new_branch(10, 50);  // 3 pages of 4 tokens
  pf_branch_info all{};
  std::vector<std::uint32_t> all_pages(3), all_tokens(10);
  ASSERT_EQ(pf_branch_view(c_.get(), b, &all, all_pages.data(), 3, all_tokens.data(), 10), PF_OK)
      << pf_last_error_message(nullptr);
  ASSERT_EQ(all.n_pages, 3u);
  EXPECT_EQ(all.ready_pages, 3u);  // pf_branch_view waits for every page
  EXPECT_EQ(all_tokens[0], 50u);
  EXPECT_EQ(all_tokens[9], 59u);

  const std::string cid = snapshot(b);
  pf_checkout_result co{};
  ASSERT_EQ(pf_checkout_branch(c_.get(), cid.c_str(), &co), PF_OK);
  for (const pf_branch_id branch : {b, co.branch}) {
    for (const std::uint64_t wait :
         {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{3}, std::uint64_t{4},
          std::uint64_t{0xffffffffu}, std::uint64_t{1} << 40, UINT64_MAX}) {
      SCOPED_TRACE("branch " + std::to_string(branch) + " wait_pages " + std::to_string(wait));
      pf_branch_info info{};
      // The size query (no arrays) answers the sizes and readiness too.
      ASSERT_EQ(pf_branch_view_ready(c_.get(), branch, wait, &info, nullptr, 0, nullptr, 0), PF_OK)
          << pf_last_error_message(nullptr);
      EXPECT_EQ(info.n_pages, 3u);
      EXPECT_EQ(info.ready_pages, 3u);
      std::vector<std::uint32_t> pages(3, 0xdeadu), tokens(10, 0xdeadu);
      info = pf_branch_info{};
      ASSERT_EQ(pf_branch_view_ready(c_.get(), branch, wait, &info, pages.data(), pages.size(),
                                     tokens.data(), tokens.size()),
                PF_OK)
          << pf_last_error_message(nullptr);
      EXPECT_EQ(info.branch, branch);
      EXPECT_EQ(info.n_tokens, 10u);
      EXPECT_EQ(info.n_pages, 3u);
      EXPECT_EQ(info.fill_in_last_page, 2u);
      EXPECT_EQ(info.ready_pages, 3u);
      EXPECT_EQ(pages, all_pages);  // the checkout shares the snapshot's pages
      EXPECT_EQ(tokens, all_tokens);
    }
  }

  // A too-small page buffer: PF_INVALID_ARGUMENT with info (ready_pages too) telling what
  // is needed, and the buffer untouched; the same for tokens.
  for (const std::uint64_t wait : {std::uint64_t{0}, UINT64_MAX}) {
    pf_branch_info info{};
    std::uint32_t pages[2] = {0xdeadu, 0xdeadu};
    EXPECT_EQ(pf_branch_view_ready(c_.get(), b, wait, &info, pages, 2, nullptr, 0),
              PF_INVALID_ARGUMENT);
    EXPECT_NE(std::string(pf_last_error_message(nullptr)).find("pages array holds 2"),
              std::string::npos)
        << pf_last_error_message(nullptr);
    EXPECT_EQ(info.n_pages, 3u);
    EXPECT_EQ(info.n_tokens, 10u);
    EXPECT_EQ(info.ready_pages, 3u);
    EXPECT_EQ(pages[0], 0xdeadu);
    EXPECT_EQ(pages[1], 0xdeadu);
    std::vector<std::uint32_t> three(3), nine(9, 0xdeadu);
    info = pf_branch_info{};
    EXPECT_EQ(pf_branch_view_ready(c_.get(), b, wait, &info, three.data(), 3, nine.data(), 9),
              PF_INVALID_ARGUMENT);
    EXPECT_EQ(info.n_tokens, 10u);
    EXPECT_EQ(nine, std::vector<std::uint32_t>(9, 0xdeadu));
  }
  // Bad arguments and unknown branches, as for pf_branch_view.
  pf_branch_info info{};
  EXPECT_EQ(pf_branch_view_ready(nullptr, b, 0, &info, nullptr, 0, nullptr, 0),
            PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_view_ready(c_.get(), b, 0, nullptr, nullptr, 0, nullptr, 0),
            PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_view_ready(c_.get(), b, 0, &info, nullptr, 4, nullptr, 0),
            PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_view_ready(c_.get(), b, 0, &info, nullptr, 0, nullptr, 4),
            PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_branch_view_ready(c_.get(), 0xdeadbeefull, 0, &info, nullptr, 0, nullptr, 0),
            PF_NOT_FOUND);
  // The client is fine after all of it.
  EXPECT_EQ(length(b), 10u);
}

TEST_F(ShimsCApi, UnknownIdsAreNotFoundWithAMessage) {
  const pf_branch_id ghost = 987654321;
  std::uint32_t tok = 1;
  pf_write_run runs[3];
  pf_append_result ar{};
  pf_branch_info info{};
  pf_snapshot_result sr{};
  pf_branch_id id = 0;
  char cid[PF_CID_BYTES];
  std::size_t need = 0;
  EXPECT_EQ(pf_append(c_.get(), ghost, &tok, 1, runs, 3, &ar), PF_NOT_FOUND);
  EXPECT_NE(std::string(pf_last_error_message(c_.get())), "");
  EXPECT_EQ(pf_commit(c_.get(), ghost), PF_NOT_FOUND);
  EXPECT_EQ(pf_truncate(c_.get(), ghost, 0), PF_NOT_FOUND);
  EXPECT_EQ(pf_branch_free(c_.get(), ghost), PF_NOT_FOUND);
  EXPECT_EQ(pf_detach(c_.get(), ghost), PF_NOT_FOUND);
  EXPECT_EQ(pf_branch_view(c_.get(), ghost, &info, nullptr, 0, nullptr, 0), PF_NOT_FOUND);
  EXPECT_EQ(pf_snapshot(c_.get(), ghost, nullptr, &sr), PF_NOT_FOUND);
  const pf_source gsrc = pf_source_branch(ghost);
  EXPECT_EQ(pf_fork(c_.get(), &gsrc, 2, &id, 2, nullptr, 0), PF_NOT_FOUND);
  const std::string unknown_cid = "sha256:" + std::string(64, '0');
  EXPECT_EQ(pf_checkout(c_.get(), unknown_cid.c_str(), &id, nullptr, 0), PF_NOT_FOUND);
  EXPECT_NE(std::string(pf_last_error_message(nullptr)).find("sha256:000"), std::string::npos)
      << pf_last_error_message(nullptr);
  EXPECT_EQ(pf_checkout(c_.get(), "no-such-ref", &id, nullptr, 0), PF_NOT_FOUND);
  EXPECT_EQ(pf_log(c_.get(), unknown_cid.c_str(), nullptr, 0, &need), PF_NOT_FOUND);
  EXPECT_EQ(pf_manifest(c_.get(), "no-such-ref", nullptr, 0, &need), PF_NOT_FOUND);
  EXPECT_EQ(pf_ref_get(c_.get(), "no-such-ref", cid, sizeof cid), PF_NOT_FOUND);
  EXPECT_EQ(pf_ref_delete(c_.get(), "no-such-ref"), PF_NOT_FOUND);
  EXPECT_EQ(pf_ref_set(c_.get(), "r", unknown_cid.c_str()), PF_NOT_FOUND);
  EXPECT_EQ(pf_unpin(c_.get(), unknown_cid.c_str()), PF_NOT_FOUND);
  const pf_source csrc = pf_source_named(unknown_cid.c_str());
  EXPECT_EQ(pf_diff(c_.get(), &gsrc, &csrc, nullptr, 0, &need), PF_NOT_FOUND);
  pf_merge_result mr{};
  EXPECT_EQ(pf_merge(c_.get(), &csrc, &gsrc, &mr, nullptr, 0), PF_NOT_FOUND);
  // Bad values the daemon rejects.
  EXPECT_EQ(pf_ref_set(c_.get(), "-bad name", unknown_cid.c_str()), PF_INVALID_ARGUMENT);
  const pf_branch_id b = new_branch(3);
  EXPECT_EQ(pf_truncate(c_.get(), b, 4), PF_INVALID_ARGUMENT);
  EXPECT_EQ(length(b), 3u);
  void* p = nullptr;
  EXPECT_EQ(pf_page_ptr(c_.get(), 0xFFFFFFFFu, &p), PF_INVALID_ARGUMENT);
  EXPECT_EQ(pf_page_ptr(c_.get(), 131071, &p), PF_NOT_FOUND);  // inside capacity, never mapped
  // The session is still fine after all of that.
  EXPECT_EQ(pool_stats(c_.get()).used_pages, 1u);
}

TEST_F(ShimsCApi, BranchesBelongToTheirLeaseUntilDetached) {
  ClientPtr other(connect_or_fail(daemon_.socket()));
  const pf_branch_id mine = new_branch(5);
  std::uint32_t tok = 9;
  pf_write_run runs[3];
  pf_append_result ar{};
  EXPECT_EQ(pf_append(other.get(), mine, &tok, 1, runs, 3, &ar), PF_CONFLICT);
  EXPECT_EQ(pf_branch_free(other.get(), mine), PF_CONFLICT);
  pf_snapshot_result sr{};
  EXPECT_EQ(pf_snapshot(other.get(), mine, nullptr, &sr), PF_CONFLICT);
  // Reading is allowed.
  pf_branch_info info{};
  EXPECT_EQ(pf_branch_view(other.get(), mine, &info, nullptr, 0, nullptr, 0), PF_OK);
  EXPECT_EQ(info.owner, pool_info(c_.get()).lease);
  // Detached: anyone may use it, and it survives its creator's disconnect.
  ASSERT_EQ(pf_detach(c_.get(), mine), PF_OK);
  c_.reset();
  ASSERT_EQ(pf_branch_view(other.get(), mine, &info, nullptr, 0, nullptr, 0), PF_OK);
  EXPECT_EQ(info.owner, 0u);
  EXPECT_EQ(pf_append(other.get(), mine, &tok, 1, runs, 3, &ar), PF_OK);
  EXPECT_EQ(pf_branch_free(other.get(), mine), PF_OK);
  // Undetached branches die with their client's session.
  ClientPtr third(connect_or_fail(daemon_.socket()));
  pf_new_branch nb{};
  ASSERT_EQ(pf_branch_create(third.get(), nullptr, 0, &nb), PF_OK);
  third.reset();
  EXPECT_TRUE(wait_until([&] {
    return pf_branch_view(other.get(), nb.branch, &info, nullptr, 0, nullptr, 0) == PF_NOT_FOUND;
  }));
}

TEST_F(ShimsCApi, MergeDiffLogRefs) {
  // into = tokens 1..8, from = tokens 1..12: into is a prefix -> fast-forward.
  const pf_branch_id into = new_branch(8);
  const std::string into_cid = snapshot(into, "base");
  // from = a fork of into's snapshot plus tokens 9..12: shares into's two pages.
  const pf_source i = pf_source_named(into_cid.c_str());
  pf_branch_id from = 0;
  ASSERT_EQ(pf_fork(c_.get(), &i, 1, &from, 1, nullptr, 0), PF_OK);
  {
    const std::vector<std::uint32_t> more = {9, 10, 11, 12};
    pf_write_run runs[4];
    pf_append_result ar{};
    ASSERT_EQ(pf_append(c_.get(), from, more.data(), more.size(), runs, 4, &ar), PF_OK);
    EXPECT_EQ(ar.copied_page, 0u);
  }
  const pf_source f = pf_source_branch(from);
  pf_merge_result mr{};
  ASSERT_EQ(pf_merge(c_.get(), &f, &i, &mr, nullptr, 0), PF_OK) << pf_last_error_message(nullptr);
  EXPECT_EQ(mr.outcome, static_cast<std::uint32_t>(PF_MERGE_FAST_FORWARD));
  EXPECT_EQ(mr.n_recompute_tokens, 0u);
  EXPECT_EQ(length(mr.branch), 12u);
  const std::string from_cid = mr.cid;

  // Three-way: into = 1..4 then 100..103; from = 1..12. Common prefix 4.
  pf_new_branch nb{};
  ASSERT_EQ(pf_branch_create(c_.get(), nullptr, 0, &nb), PF_OK);
  std::vector<std::uint32_t> t = {1, 2, 3, 4, 100, 101, 102, 103};
  pf_write_run runs[8];
  pf_append_result ar{};
  ASSERT_EQ(pf_append(c_.get(), nb.branch, t.data(), t.size(), runs, 8, &ar), PF_OK);
  const pf_source other = pf_source_branch(nb.branch);
  std::vector<std::uint32_t> recompute(64);
  ASSERT_EQ(pf_merge(c_.get(), &f, &other, &mr, recompute.data(), recompute.size()), PF_OK)
      << pf_last_error_message(nullptr);
  EXPECT_EQ(mr.outcome, static_cast<std::uint32_t>(PF_MERGE_THREE_WAY));
  EXPECT_EQ(mr.common_tokens, 4u);
  ASSERT_EQ(mr.n_recompute_tokens, 8u);
  for (std::uint32_t k = 0; k < 8; ++k) EXPECT_EQ(recompute[k], 5 + k);
  EXPECT_EQ(length(mr.branch), 8u);  // the result is at into

  // diff of the two snapshots.
  std::size_t need = 0;
  const pf_source a = pf_source_named(from_cid.c_str());
  ASSERT_EQ(pf_diff(c_.get(), &a, &i, nullptr, 0, &need), PF_OK);
  std::string text(need, '\0');
  ASSERT_EQ(pf_diff(c_.get(), &a, &i, text.data(), text.size(), &need), PF_OK);
  json d = json::parse(text.c_str());
  EXPECT_EQ(d.value("common_tokens", 0u), 8u);
  EXPECT_EQ(d["shared_pages"].size(), 2u);
  EXPECT_EQ(d["a_only_pages"].size(), 1u);
  EXPECT_EQ(d["b_only_pages"].size(), 0u);

  // log of the three-way merge names both parents.
  ASSERT_EQ(pf_log(c_.get(), mr.cid, nullptr, 0, &need), PF_OK);
  text.assign(need, '\0');
  ASSERT_EQ(pf_log(c_.get(), mr.cid, text.data(), text.size(), &need), PF_OK);
  json log = json::parse(text.c_str());
  ASSERT_GE(log["entries"].size(), 3u);
  EXPECT_EQ(log["entries"][0]["cid"], mr.cid);
  EXPECT_EQ(log["entries"][0]["parents"].size(), 2u);

  // refs
  ASSERT_EQ(pf_ref_set(c_.get(), "main", from_cid.c_str()), PF_OK);
  ASSERT_EQ(pf_ref_set(c_.get(), "alias", "main"), PF_OK);
  char cid[PF_CID_BYTES];
  ASSERT_EQ(pf_ref_get(c_.get(), "alias", cid, sizeof cid), PF_OK);
  EXPECT_EQ(from_cid, cid);
  const json refs = json::parse(json_of(pf_refs_list));
  EXPECT_EQ(refs["refs"].size(), 3u);  // and "base", the name of into's snapshot
  pf_branch_id at_ref = 0;
  ASSERT_EQ(pf_checkout(c_.get(), "main", &at_ref, cid, sizeof cid), PF_OK);
  EXPECT_EQ(from_cid, cid);
  EXPECT_EQ(pf_unpin(c_.get(), from_cid.c_str()), PF_CONFLICT);  // a ref names it
  ASSERT_EQ(pf_ref_delete(c_.get(), "main"), PF_OK);
  ASSERT_EQ(pf_ref_delete(c_.get(), "alias"), PF_OK);
  EXPECT_EQ(json::parse(json_of(pf_refs_list))["refs"].size(), 1u);
  ASSERT_EQ(pf_ref_get(c_.get(), "base", cid, sizeof cid), PF_OK);
  EXPECT_EQ(into_cid, cid);

  // snapshots, manifest, health, branches
  const json snaps = json::parse(json_of(pf_snapshots));
  EXPECT_GE(snaps["snapshots"].size(), 3u);
  ASSERT_EQ(pf_manifest(c_.get(), into_cid.c_str(), nullptr, 0, &need), PF_OK);
  text.assign(need, '\0');
  ASSERT_EQ(pf_manifest(c_.get(), into_cid.c_str(), text.data(), text.size(), &need), PF_OK);
  const json manifest = json::parse(text.c_str());
  EXPECT_EQ(manifest.value("name", ""), "base");
  EXPECT_EQ(manifest["tokens"].size(), 8u);
  const json health = json::parse(json_of(pf_health));
  EXPECT_EQ(health.value("status", ""), "ok");
  const json branches = json::parse(json_of(pf_branches));
  EXPECT_EQ(branches["branches"].size(), pool_json(c_.get()).value("branches", 0u));
}

TEST_F(ShimsCApi, ThreadsShareOneClient) {
  const pf_branch_id b = new_branch(16);
  const std::string cid = snapshot(b);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      const pf_source src = pf_source_named(cid.c_str());
      for (int i = 0; i < 100; ++i) {
        pf_branch_id kids[3];
        if (pf_fork(c_.get(), &src, 3, kids, 3, nullptr, 0) != PF_OK) ++failures;
        pf_branch_info info{};
        for (pf_branch_id k : kids) {
          if (pf_branch_view(c_.get(), k, &info, nullptr, 0, nullptr, 0) != PF_OK ||
              info.n_tokens != 16) {
            ++failures;
          }
          if (pf_branch_free(c_.get(), k) != PF_OK) ++failures;
        }
        void* p = nullptr;
        if (pf_page_ptr(c_.get(), 0, &p) != PF_OK) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(pool_json(c_.get()).value("branches", 0u), 1u);
}

// The daemon goes away under a connected client: every later call is PF_UNAVAILABLE with a
// message, the host process gets no SIGPIPE, and reconnecting reports no daemon.
TEST_F(ShimsCApi, DaemonGoneIsUnavailableNeverACrash) {
  struct sigaction old {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGPIPE, &dfl, &old);  // a SIGPIPE would kill this test process

  const pf_branch_id b = new_branch(4);
  void* page = nullptr;
  ASSERT_EQ(pf_page_ptr(c_.get(), 0, &page), PF_OK);
  daemon_.kill_hard();

  std::uint32_t tok = 1;
  pf_write_run runs[3];
  pf_append_result ar{};
  EXPECT_EQ(pf_append(c_.get(), b, &tok, 1, runs, 3, &ar), PF_UNAVAILABLE);
  EXPECT_NE(std::string(pf_last_error_message(c_.get())), "");
  EXPECT_EQ(pf_commit(c_.get(), b), PF_UNAVAILABLE);
  pf_branch_id id = 0;
  EXPECT_EQ(pf_checkout(c_.get(), "x", &id, nullptr, 0), PF_UNAVAILABLE);
  EXPECT_EQ(pf_attach(c_.get()), PF_UNAVAILABLE);
  std::size_t need = 0;
  EXPECT_EQ(pf_health(c_.get(), nullptr, 0, &need), PF_UNAVAILABLE);
  pf_pool_stats s{};
  s.struct_size = sizeof s;
  EXPECT_EQ(pf_pool_stats_get(c_.get(), &s), PF_UNAVAILABLE);
  // Mapped pages stay readable until disconnect (the memory is this process's mapping).
  EXPECT_EQ(pf_page_ptr(c_.get(), 0, &page), PF_OK);
  volatile std::uint8_t first = *static_cast<std::uint8_t*>(page);
  (void)first;
  pf_client* again = nullptr;
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = daemon_.socket().c_str();
  EXPECT_EQ(pf_connect(&cfg, &again), PF_UNAVAILABLE);
  c_.reset();  // disconnect after the daemon died: no crash
  sigaction(SIGPIPE, &old, nullptr);
}

}  // namespace
}  // namespace pf::shimtest
