// The fan-out demo's bit-exact check at a small size, end to end against a real daemon
// (`processfork serve` started by the demo): worker processes must reproduce the
// uninterrupted reference bit for bit, the negative control must be detected, a wrong
// child must fail the run, and nothing may be left behind either way.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/daemon_process.h"

namespace {

struct DemoRun {
  int exit_code = -1;
  std::string output;
  nlohmann::json summary;
  std::string workdir;
  std::unique_ptr<pf::testing::TempDir> root;  // holds workdir; removed with the run
};

// Runs fanout_demo with `extra` flags at a small size; its stdout+stderr go to a file.
DemoRun run_demo(const std::vector<std::string>& extra) {
  DemoRun r;
  const char* t = std::getenv("TMPDIR");
  r.root = std::make_unique<pf::testing::TempDir>("pf-demo-test",
                                                  t != nullptr && *t != '\0' ? t : "/tmp");
  r.workdir = r.root->file("work");
  const std::string json = r.root->file("summary.json");
  const std::string log = r.root->file("out.log");
  std::vector<std::string> args = {"--model",     "tiny",    "--context",     "150",
                                   "--children",  "3",       "--suffix",      "5",
                                   "--steps",     "6",       "--page-tokens", "8",
                                   "--fork-reps", "10",      "--processfork", PF_CLI_PATH,
                                   "--workdir",   r.workdir, "--json",        json};
  args.insert(args.end(), extra.begin(), extra.end());
  const pf::testing::RunResult run = pf::testing::run(
      pf::testing::ChildSpec(PF_FANOUT_DEMO_PATH, args, log, pf::testing::ChildSpec::Stdout::kLog),
      std::chrono::seconds(240));
  r.exit_code = run.code;
  r.output = run.err;  // stdout and stderr
  std::ifstream jin(json);
  if (jin) r.summary = nlohmann::json::parse(jin, nullptr, false);
  rmdir(r.workdir.c_str());  // only succeeds if the demo left it empty (it should be gone)
  return r;
}

bool exists(const std::string& path) {
  struct stat sb;
  return stat(path.c_str(), &sb) == 0;
}

// Nothing left behind: the work directory (socket, ready file, reports) is gone and the
// daemon process no longer exists.
void expect_clean(const DemoRun& r) {
  EXPECT_FALSE(exists(r.workdir)) << r.output;
  ASSERT_TRUE(r.summary.contains("daemon")) << r.output;
  const int pid = r.summary["daemon"]["pid"].get<int>();
  ASSERT_GT(pid, 0);
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
  for (const auto& c : r.summary["checks"]) {
    const std::string name = c["name"].get<std::string>();
    if (name.find("daemon stopped") != std::string::npos ||
        name.find("work directory") != std::string::npos) {
      EXPECT_TRUE(c["ok"].get<bool>()) << name << ": " << c["detail"];
    }
  }
}

TEST(FanoutDemo, ChildrenReproduceTheReferenceBitForBitAndTheControlIsDetected) {
  // --verify: the daemon re-checks every invariant, sealed pages' digests included, after
  // every operation — a child writing into a shared page would fail the run.
  const DemoRun r = run_demo({"--verify"});
  ASSERT_FALSE(r.summary.is_discarded()) << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(r.summary["ok"].get<bool>()) << r.output;
  EXPECT_EQ(r.summary["matched"].get<int>(), 3) << r.output;
  // The negative control: an exact private copy of the shared pages reproduces the
  // reference, and the same copy with one byte of one page altered does not.
  EXPECT_TRUE(r.summary["control_clean_ok"].get<bool>()) << r.output;
  EXPECT_TRUE(r.summary["control_detected"].get<bool>()) << r.output;
  for (const auto& c : r.summary["checks"]) {
    EXPECT_TRUE(c["ok"].get<bool>()) << c["name"] << ": " << c["detail"];
  }
  // Sharing: the fork added no pages, and each child appended its own (one of them a
  // copy-on-write of the half-filled last page: 150 tokens in pages of 8).
  const auto& pages = r.summary["pages"];
  EXPECT_EQ(pages["after_fork"], pages["after_prefill"]);
  EXPECT_EQ(pages["after_prefill"].get<int>(), 19);
  EXPECT_EQ(pages["shared_after_fork"].get<int>(), 19);
  EXPECT_EQ(pages["cow_copies"].get<int>(), 3);
  EXPECT_EQ(pages["after_children"].get<int>() - pages["after_prefill"].get<int>(),
            pages["children_appended"].get<int>());
  ASSERT_EQ(r.summary["children"].size(), 3u);
  // Different seeds, different continuations.
  EXPECT_NE(r.summary["children"][0]["tokens"], r.summary["children"][1]["tokens"]);
  expect_clean(r);
}

TEST(FanoutDemo, AChildThatDivergesFailsTheRun) {
  // Worker 0 samples with the wrong seed: its tokens differ from the reference, which the
  // demo must report as a mismatch and exit non-zero.
  const DemoRun r = run_demo({"--inject-fault", "child-seed"});
  ASSERT_FALSE(r.summary.is_discarded()) << r.output;
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_FALSE(r.summary["ok"].get<bool>());
  EXPECT_EQ(r.summary["matched"].get<int>(), 2) << r.output;
  EXPECT_FALSE(r.summary["children"][0]["match"].get<bool>());
  EXPECT_TRUE(r.summary["children"][1]["match"].get<bool>());
  EXPECT_NE(r.output.find("MISMATCH"), std::string::npos) << r.output;
  expect_clean(r);
}

TEST(FanoutDemo, Bf16PagesAndNoControl) {
  const DemoRun r = run_demo({"--dtype", "bf16", "--no-control"});
  ASSERT_FALSE(r.summary.is_discarded()) << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.summary["matched"].get<int>(), 3) << r.output;
  EXPECT_EQ(r.summary["config"]["page_bytes"].get<int>(), 2 * 2 * 2 * 16 * 8 * 2);
  expect_clean(r);
}

TEST(FanoutDemo, ADaemonThatCannotStartFailsCleanly) {
  const DemoRun r = run_demo({"--device", "cuda:7"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("FAILED"), std::string::npos) << r.output;
  EXPECT_FALSE(exists(r.workdir)) << r.output;
}

}  // namespace
