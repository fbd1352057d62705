// The `processfork` CLI as scripts use it: exit codes (0 ok, 1 failed, 2 usage,
// 3 unreachable), --json documents on stdout, human output, and a whole workflow.
#include "tests/shims/shims_harness.h"

namespace pf::shimtest {
namespace {

class ShimsCli : public ::testing::Test {
 protected:
  RunResult cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--socket", daemon_.socket()});
    return run(kCli, args, daemon_.dir());
  }
  json cli_json(std::vector<std::string> args) {
    args.push_back("--json");
    const RunResult r = cli(args);
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }

  Daemon daemon_;
};

TEST_F(ShimsCli, ExitCodes) {
  TempDir dir;
  // 2: usage.
  EXPECT_EQ(run(kCli, {}, dir).code, 2);
  EXPECT_EQ(run(kCli, {"frobnicate"}, dir).code, 2);
  EXPECT_EQ(run(kCli, {"--bogus", "status"}, dir).code, 2);
  EXPECT_EQ(cli({"fork", "sha256:abc"}).code, 2);                  // no -n
  EXPECT_EQ(cli({"fork", "sha256:abc", "-n", "twelve"}).code, 2);  // not a number
  EXPECT_EQ(cli({"branch", "show"}).code, 2);
  EXPECT_EQ(cli({"branch", "create", "1", "x"}).code, 2);
  EXPECT_EQ(cli({"status", "extra"}).code, 2);
  EXPECT_EQ(cli({"refs", "rename", "a", "b"}).code, 2);
  const RunResult help = run(kCli, {"--help"}, dir);
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("exit codes"), std::string::npos);
  // 3: nothing listens there.
  const RunResult gone = run(kCli, {"--socket", dir.file("none"), "status"}, dir);
  EXPECT_EQ(gone.code, 3);
  EXPECT_NE(gone.err.find("PF_UNAVAILABLE"), std::string::npos) << gone.err;
  const RunResult gone_json = run(kCli, {"--socket", dir.file("none"), "status", "--json"}, dir);
  EXPECT_EQ(gone_json.code, 3);
  EXPECT_EQ(json::parse(gone_json.out)["error"]["code"], "PF_UNAVAILABLE");
  // 1: the daemon refused, with the code's name.
  const std::string unknown = "sha256:" + std::string(64, 'f');
  const RunResult missing = cli({"checkout", unknown});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("PF_NOT_FOUND"), std::string::npos) << missing.err;
  const RunResult missing_json = cli({"checkout", unknown, "--json"});
  EXPECT_EQ(missing_json.code, 1);
  const json err = json::parse(missing_json.out, nullptr, false);
  EXPECT_EQ(err["error"]["code"], "PF_NOT_FOUND");
  EXPECT_FALSE(err["error"]["message"].get<std::string>().empty());
  EXPECT_EQ(cli({"fork", unknown, "-n", "2000"}).code, 1);  // n out of range: PF_INVALID_ARGUMENT
  EXPECT_EQ(cli({"branch", "delete", "424242"}).code, 1);
}

TEST_F(ShimsCli, Workflow) {
  // A detached branch survives the CLI process that made it.
  const json created = cli_json({"branch", "create"});
  const std::uint64_t id = created["branch"];
  EXPECT_EQ(created["detached"], true);
  const json list = cli_json({"branch", "list"});
  ASSERT_EQ(list["branches"].size(), 1u);
  EXPECT_EQ(list["branches"][0]["branch"], id);
  EXPECT_EQ(list["branches"][0]["owner"], 0);

  // Give it tokens through the library (the CLI never writes KV), then drive the rest
  // through the CLI.
  ClientPtr c(connect_or_fail(daemon_.socket(), PF_CONNECT_NO_ATTACH));
  std::vector<std::uint32_t> tokens = {10, 11, 12, 13, 14, 15, 16, 17, 18};
  std::vector<pf_write_run> runs(pf_append_max_runs(c.get(), tokens.size()));
  pf_append_result ar{};
  ASSERT_EQ(pf_append(c.get(), id, tokens.data(), tokens.size(), runs.data(), runs.size(), &ar),
            PF_OK);

  const json shown = cli_json({"branch", "show", std::to_string(id), "--tokens"});
  EXPECT_EQ(shown["n_tokens"], 9);
  EXPECT_EQ(shown["n_pages"], 3);
  EXPECT_EQ(shown["tokens"][8], 18);
  const RunResult human_show = cli({"branch", "show", std::to_string(id)});
  EXPECT_EQ(human_show.code, 0);
  EXPECT_NE(human_show.out.find("9 tokens in 3 pages"), std::string::npos) << human_show.out;

  const json snap = cli_json({"snapshot", std::to_string(id), "--name", "ctx"});
  const std::string cid = snap["cid"];
  EXPECT_EQ(cid.rfind("sha256:", 0), 0u);
  EXPECT_EQ(snap["n_tokens"], 9);
  EXPECT_EQ(snap["created"], true);
  // The README's next step: the name is a ref, so `fork ctx -n 12` forks the snapshot.
  const json by_name = cli_json({"fork", "ctx", "-n", "12"});
  ASSERT_EQ(by_name["branches"].size(), 12u);
  EXPECT_EQ(by_name["source"], cid);
  for (const json& b : by_name["branches"]) {
    EXPECT_EQ(cli({"branch", "delete", std::to_string(b.get<std::uint64_t>())}).code, 0);
  }
  const RunResult human_snap = cli({"snapshot", std::to_string(id)});
  EXPECT_EQ(human_snap.code, 0);
  EXPECT_EQ(human_snap.out.rfind("sha256:", 0), 0u);

  const json ref = cli_json({"refs", "set", "main", cid});
  EXPECT_EQ(ref["cid"], cid);
  EXPECT_EQ(cli_json({"refs", "get", "main"})["cid"], cid);
  EXPECT_EQ(cli_json({"refs"})["refs"].size(), 2u);  // ctx and main
  const RunResult human_get = cli({"refs", "get", "main"});
  EXPECT_EQ(human_get.out, cid + "\n");

  const json forked = cli_json({"fork", "ref:main", "-n", "3"});
  ASSERT_EQ(forked["branches"].size(), 3u);
  EXPECT_EQ(forked["source"], cid);
  const json from_branch = cli_json({"fork", std::to_string(id), "-n", "1"});
  EXPECT_TRUE(from_branch["source"].is_null());
  const json checked_out = cli_json({"checkout", "main"});
  EXPECT_EQ(checked_out["cid"], cid);
  // Forks and checkouts are detached too: still there after their CLI process ended.
  EXPECT_EQ(cli_json({"branch", "list"})["branches"].size(), 1u + 3u + 1u + 1u);

  const json log = cli_json({"log", cid});
  ASSERT_EQ(log["entries"].size(), 1u);
  EXPECT_EQ(log["entries"][0]["name"], "ctx");
  const json diff =
      cli_json({"diff", std::to_string(forked["branches"][0].get<std::uint64_t>()), cid});
  EXPECT_EQ(diff["common_tokens"], 9);
  EXPECT_EQ(diff["shared_pages"].size(), 3u);
  const json merged = cli_json({"merge", cid, "main"});
  EXPECT_EQ(merged["outcome"], "fast-forward");
  EXPECT_EQ(merged["cid"], cid);
  const RunResult human_merge = cli({"merge", cid, "main"});
  EXPECT_NE(human_merge.out.find("fast-forward"), std::string::npos) << human_merge.out;

  const json status = cli_json({"status"});
  EXPECT_EQ(status["health"]["status"], "ok");
  EXPECT_EQ(status["pool"]["page_bytes"], 512);
  const RunResult human_status = cli({"status"});
  EXPECT_NE(human_status.out.find("layers=2 kv_heads=2 head_dim=8"), std::string::npos)
      << human_status.out;
  EXPECT_GE(cli_json({"snapshots"})["snapshots"].size(), 1u);

  // Clean up through the CLI: delete every branch, drop the ref, unpin, gc.
  const json all = cli_json({"branch", "list"});
  ASSERT_EQ(all["branches"].size(), 8u);  // + the two merges' result branches
  for (const json& b : all["branches"]) {
    const RunResult del =
        cli({"branch", "delete", std::to_string(b["branch"].get<std::uint64_t>())});
    EXPECT_EQ(del.code, 0) << del.err;
  }
  EXPECT_EQ(cli_json({"branch", "list"})["branches"].size(), 0u);
  EXPECT_EQ(cli({"unpin", cid}).code, 1);  // the ref still names it: PF_CONFLICT
  EXPECT_EQ(cli_json({"refs", "delete", "main"})["deleted"], "main");
  EXPECT_EQ(cli({"unpin", cid}).code, 1);  // ctx, the snapshot's name, names it too
  EXPECT_EQ(cli_json({"refs", "delete", "ctx"})["deleted"], "ctx");
  EXPECT_EQ(cli({"unpin", cid}).code, 0);
  const json gc = cli_json({"gc", "--drop-cache"});
  EXPECT_TRUE(gc.contains("released_chunks"));
  EXPECT_EQ(pool_stats(c.get()).used_pages, 0u);
}

TEST_F(ShimsCli, BenchPrintsLatencies) {
  const json bench = cli_json({"bench", "--iterations", "20", "--tokens", "256", "-n", "4"});
  EXPECT_EQ(bench["iterations"], 20);
  EXPECT_GT(bench["fork"]["p50_us"].get<double>(), 0.0);
  EXPECT_GE(bench["fork"]["p99_us"].get<double>(), bench["fork"]["p50_us"].get<double>());
  EXPECT_GT(bench["checkout"]["p50_us"].get<double>(), 0.0);
  // It cleans up after itself.
  ClientPtr c(connect_or_fail(daemon_.socket(), PF_CONNECT_NO_ATTACH));
  EXPECT_EQ(pool_json(c.get()).value("branches", 99u), 0u);
  EXPECT_EQ(pool_json(c.get()).value("snapshots", 99u), 0u);
  const RunResult human = cli({"bench", "--iterations", "5", "--tokens", "64"});
  EXPECT_EQ(human.code, 0) << human.err;
  EXPECT_NE(human.out.find("checkout"), std::string::npos);
}

// `processfork serve` with bad flags is a usage error (the daemon's own exit code 2).
TEST(ShimsCliServe, BadServeFlagsAreUsageErrors) {
  TempDir dir;
  EXPECT_EQ(run(kCli, {"serve", "--capacity", "lots"}, dir).code, 2);
  EXPECT_EQ(run(kCli, {"serve", "--help"}, dir).code, 0);
}

}  // namespace
}  // namespace pf::shimtest
