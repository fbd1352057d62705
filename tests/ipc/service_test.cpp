// The op table, the message codec and Service::call, in process over a real host-memory
// runtime (the daemon tests cover the same code through real sockets and HTTP).
#include "ipc/service.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "ipc/messages.h"
#include "ipc/ops.h"
#include "runtime/runtime.h"
#include "vmm/fault_backend.h"
#include "vmm/host_backend.h"

namespace pf::ipc {
namespace {

TEST(OpTable, EveryRowHasItsOwnNameAndMessageAndMapsBack) {
  std::set<std::string_view> names;
  std::set<std::uint16_t> messages;
  for_each_op([&]<Op op>() {
    const auto msg = static_cast<std::uint16_t>(OpTraits<op>::message);
    EXPECT_TRUE(names.insert(op_name(op)).second) << op_name(op);
    EXPECT_TRUE(messages.insert(msg).second) << op_name(op);
    EXPECT_EQ(op_name(op), OpTraits<op>::name);
    EXPECT_EQ(op_mutates(op), OpTraits<op>::mutates);
    ASSERT_TRUE(op_of_message(msg).has_value()) << op_name(op);
    EXPECT_EQ(*op_of_message(msg), op);
    // A routed op answers with a success status of its method.
    if constexpr (OpTraits<op>::method != HttpMethod::kNONE) {
      EXPECT_TRUE(OpTraits<op>::route.starts_with("/v1/")) << op_name(op);
      EXPECT_TRUE(OpTraits<op>::ok_status == 200 || OpTraits<op>::ok_status == 201 ||
                  OpTraits<op>::ok_status == 204)
          << op_name(op);
    }
  });
  EXPECT_EQ(names.size(), kOpCount);
  EXPECT_EQ(kOpCount, wire::kOpsByMinor[wire::kVersionMinor]);
  EXPECT_EQ(static_cast<std::uint16_t>(wire::MsgType::kHello), 1);  // never renumbered
  EXPECT_FALSE(op_of_message(0).has_value());
  EXPECT_FALSE(op_of_message(39).has_value());
  EXPECT_EQ(op_name(Op::kBranchCreate), "branch_create");
  EXPECT_TRUE(op_mutates(Op::kFork));
  EXPECT_FALSE(op_mutates(Op::kDiff));
}

// A request with something in every variable part, so every prefix of it is short.
template <Op op>
RequestOf<op> sample_request() {
  RequestOf<op> m{};
  if constexpr (requires { m.tokens; }) m.tokens = {1, 2, 3};
  if constexpr (requires { m.name; }) m.name = "main";
  if constexpr (requires { m.source; }) m.source = msg::Source::of_name("ref");
  if constexpr (requires { m.from; }) m.from = msg::Source::of_name("from");
  if constexpr (requires { m.into; }) m.into = msg::Source::of_branch(7);
  if constexpr (requires { m.a; }) m.a = msg::Source::of_name("a");
  if constexpr (requires { m.b; }) m.b = msg::Source::of_name("b");
  if constexpr (requires { m.cid; }) m.cid = "sha256:00";
  if constexpr (requires { m.pages; }) m.pages = {4, 5};
  if constexpr (requires { m.keys; }) m.keys.resize(2);
  if constexpr (requires {
                  m.keys;
                  m.pages;
                })
    m.pages.resize(m.keys.size());
  return m;
}

// Every request message round-trips through the codec; every strict prefix and one byte
// more are refused (kProtocol), never read past.
TEST(Codec, EveryRequestRoundTripsAndRefusesShortOrLongPayloads) {
  for_each_op([&]<Op op>() {
    RequestOf<op> m = sample_request<op>();
    const std::vector<std::byte> bytes = wire::encode(m);
    RequestOf<op> back{};
    ASSERT_TRUE(wire::decode(bytes, &back, "request").is_ok()) << op_name(op);
    EXPECT_EQ(wire::encode(back), bytes) << op_name(op);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      RequestOf<op> cut{};
      const Status s = wire::decode(std::span(bytes.data(), n), &cut, "request");
      EXPECT_EQ(s.code(), Code::kProtocol) << op_name(op) << " prefix " << n;
    }
    std::vector<std::byte> longer = bytes;
    longer.push_back(std::byte{0});
    RequestOf<op> extra{};
    EXPECT_EQ(wire::decode(longer, &extra, "request").code(), Code::kProtocol) << op_name(op);
  });
}

TEST(Codec, CountsOverTheirLimitAreInvalidArgumentBeforeAllocating) {
  msg::Append a;
  a.head.n_tokens = wire::kMaxTokensPerRequest + 1;  // announced, not sent
  wire::PayloadWriter w;
  w.put(a.head);
  msg::Append back;
  EXPECT_EQ(wire::decode(w.bytes(), &back, "append").code(), Code::kInvalidArgument);
  EXPECT_TRUE(back.tokens.empty());
  // A list claiming more entries than bytes left is short, whatever the limit says.
  wire::PayloadWriter lw;
  lw.put(std::uint32_t{1000});
  msg::Refs refs;
  EXPECT_EQ(wire::decode(lw.bytes(), &refs, "refs").code(), Code::kProtocol);
  EXPECT_TRUE(refs.refs.empty());
}

TEST(Codec, NestedRepliesRoundTrip) {
  msg::Log log;
  log.entries.resize(2);
  log.entries[0].cid = "sha256:aa";
  log.entries[0].parents = {"sha256:bb", "sha256:cc"};
  log.entries[0].n_tokens = 9;
  log.entries[1].cid = "sha256:bb";
  log.entries[1].known = 0;
  msg::Log back;
  ASSERT_TRUE(wire::decode(wire::encode(log), &back, "log").is_ok());
  ASSERT_EQ(back.entries.size(), 2u);
  EXPECT_EQ(back.entries[0].parents, log.entries[0].parents);
  EXPECT_EQ(back.entries[0].n_tokens, 9u);
  EXPECT_EQ(back.entries[1].known, 0u);
  msg::Forked f;
  f.branches = {3, 4, 5};
  f.head.n_tokens = 12;
  msg::set_cstr(f.head.source, "sha256:ff");
  msg::Forked fb;
  ASSERT_TRUE(wire::decode(wire::encode(f), &fb, "fork").is_ok());
  EXPECT_EQ(fb.head.n, 3u);  // the count field follows the array
  EXPECT_EQ(fb.branches, f.branches);
  EXPECT_EQ(msg::cstr(fb.head.source), "sha256:ff");
}

// Captures what the process writes to stderr while alive (the daemon's log).
class StderrCapture {
 public:
  StderrCapture() {
    EXPECT_EQ(pipe2(pipe_, O_CLOEXEC | O_NONBLOCK), 0);
    saved_ = dup(STDERR_FILENO);
    dup2(pipe_[1], STDERR_FILENO);
  }
  ~StderrCapture() { restore(); }
  std::string take() {
    restore();
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = read(pipe_[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    dup2(saved_, STDERR_FILENO);
    close(saved_);
    close(pipe_[1]);
    saved_ = -1;
  }
  int pipe_[2] = {-1, -1};
  int saved_ = -1;
};

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fault = std::make_unique<vmm::FaultBackend>(vmm::make_host_backend());
    faults_ = fault.get();
    backend_ = std::move(fault);
    rt::RuntimeOptions o;
    o.geometry = *rt::geometry_preset("tiny");
    o.pool.capacity_bytes = 1 << 20;
    auto runtime = rt::Runtime::create(*backend_, o);
    ASSERT_TRUE(runtime.is_ok()) << runtime.status().to_string();
    runtime_ = std::move(*runtime);
    service_ =
        std::make_unique<Service>(*runtime_, PoolIdentity{"host", "host", "test", 0, "", ""});
  }

  std::unique_ptr<vmm::Backend> backend_;
  vmm::FaultBackend* faults_ = nullptr;
  std::unique_ptr<rt::Runtime> runtime_;
  std::unique_ptr<Service> service_;
};

// kInternal / kDriver / kSystem failures reach the operator's log with their file:line
// trail; a client's mistake does not.
TEST_F(ServiceTest, OurFailuresAreLoggedWithTheirTrailClientMistakesAreNot) {
  // A page in the pool, so that attach has a chunk to export.
  Result<msg::NewBranch> branch = service_->call<Op::kBranchCreate>(kHttpLease, {});
  ASSERT_TRUE(branch.is_ok());
  msg::Append append;
  append.head.branch = branch->head.branch;
  append.tokens = {1, 2, 3, 4, 5};
  ASSERT_TRUE(service_->call<Op::kAppend>(kHttpLease, append).is_ok());

  StderrCapture capture;
  EXPECT_EQ(service_->call<Op::kLog>(kHttpLease, msg::Named{{}, "no-such-ref"}).status().code(),
            Code::kNotFound);
  vmm::FaultRule rule;
  rule.fail_after = 0;
  rule.code = Code::kDriver;
  faults_->set_rule(vmm::FaultOp::kExportChunk, rule);
  Result<msg::AttachAnswer> attach = service_->call<Op::kAttach>(kHttpLease, msg::Attach{});
  faults_->clear_rules();
  const std::string log = capture.take();

  ASSERT_FALSE(attach.is_ok());
  EXPECT_EQ(attach.status().code(), Code::kDriver);
  EXPECT_EQ(log.find("no-such-ref"), std::string::npos) << log;
  EXPECT_NE(log.find("processfork: attach failed: "), std::string::npos) << log;
  EXPECT_NE(log.find("DRIVER"), std::string::npos) << log;
  // The message, and the trail of where the error passed on its way up.
  EXPECT_NE(log.find("injected fault in export_chunk"), std::string::npos) << log;
  EXPECT_NE(log.find("[at "), std::string::npos) << log;
  EXPECT_NE(log.find("ipc/service_session.cpp:"), std::string::npos) << log;
}

TEST_F(ServiceTest, FailedCallsAreCountedUnderTheirOp) {
  service_->call<Op::kLog>(kHttpLease, msg::Named{{}, "nope"}).status().ignore();
  service_->count_failed(Op::kDiff);
  const std::string text = service_->metrics_text();
  EXPECT_NE(text.find("processfork_ops_total{op=\"log\",result=\"error\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("processfork_ops_total{op=\"diff\",result=\"error\"} 1\n"),
            std::string::npos);
}

}  // namespace
}  // namespace pf::ipc
