// Prefix-index namespaces through a running daemon (docs/protocol.md "Optional tail fields",
// docs/http.md POST /v1/branches): raw 3.0 frames (no namespace) keep their meaning, a
// namespace tail scopes branch create (and the branch's commits), keyed lookups and
// publishes, a malformed tail is refused and changes nothing, and the HTTP port parses and
// shows namespaces.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/hex.h"
#include "tests/ipc/daemon_harness.h"

namespace pf::testing {
namespace {

using wire::MsgType;

wire::Namespace ns_of(std::uint8_t tag) {
  wire::Namespace ns{};
  ns.fill(tag);
  return ns;
}

// A branch-create payload: the 3.0 bytes, then `tail` (a namespace, or any bytes).
wire::PayloadWriter create_payload(const std::vector<std::uint32_t>& tokens,
                                   std::span<const std::uint8_t> tail) {
  wire::BranchCreateRequest req;
  req.n_tokens = static_cast<std::uint32_t>(tokens.size());
  wire::PayloadWriter w;
  w.put(req).put_array(std::span<const std::uint32_t>(tokens));
  w.put_array(tail);
  return w;
}

// Creates a branch in `ns` (raw frame); returns (branch, reused tokens).
std::pair<std::uint64_t, std::uint64_t> create_in(RawClient& c,
                                                  const std::vector<std::uint32_t>& tokens,
                                                  const wire::Namespace& ns) {
  Result<WireReply> r = c.call(MsgType::kBranchCreate, create_payload(tokens, ns));
  EXPECT_TRUE(r.is_ok() && r->ok()) << (r.is_ok() ? r->text() : r.status().to_string());
  if (!r.is_ok() || !r->ok()) return {0, 0};
  auto out = r->as<wire::BranchCreateReply>();
  return {out.branch, out.reused_tokens};
}

class NamespaceTest : public ::testing::Test {
 protected:
  Daemon d;
};

TEST_F(NamespaceTest, BranchCreateTailScopesLookupAndCommit) {
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());
  const wire::HelloReply hello = c.hello();
  EXPECT_EQ(hello.minor, wire::kVersionMinor);
  EXPECT_GE(wire::kVersionMinor, wire::kNamespaceMinor);
  const auto tokens = iota_tokens(100, 8);
  const wire::Namespace a = ns_of(0xa1);
  auto [b, reused] = create_in(c, {}, a);
  ASSERT_NE(b, 0u);
  c.append(b, tokens);
  ASSERT_TRUE(c.branch_op(MsgType::kCommit, b)->ok());

  EXPECT_EQ(create_in(c, tokens, a).second, 8u);
  EXPECT_EQ(create_in(c, tokens, ns_of(0xb2)).second, 0u);
  // A 3.0 frame (no tail) and an all-zero tail both mean the default namespace.
  std::uint64_t old_reused = 99;
  c.create_branch(tokens, &old_reused);
  EXPECT_EQ(old_reused, 0u);
  EXPECT_EQ(create_in(c, tokens, wire::Namespace{}).second, 0u);
}

TEST_F(NamespaceTest, OldClientsWithoutNamespacesKeepWorking) {
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());
  wire::HelloRequest req;  // a 3.0 client
  req.minor = 0;
  req.client_pid = static_cast<std::uint32_t>(getpid());
  wire::PayloadWriter w;
  w.put(req);
  Result<WireReply> h = c.call(MsgType::kHello, w);
  ASSERT_TRUE(h.is_ok() && h->ok());
  const std::uint64_t b = c.create_branch({});
  c.append(b, iota_tokens(0, 8));
  ASSERT_TRUE(c.branch_op(MsgType::kCommit, b)->ok());
  std::uint64_t reused = 0;
  c.create_branch(iota_tokens(0, 9), &reused);
  EXPECT_EQ(reused, 8u);
}

TEST_F(NamespaceTest, MalformedTailIsRefusedAndChangesNothing) {
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());
  c.hello();
  const std::string before = d.pool();
  const std::vector<std::uint8_t> short_tail(16, 0x7f);
  const std::vector<std::uint8_t> long_tail(33, 0x7f);
  for (const auto* tail : {&short_tail, &long_tail}) {
    Result<WireReply> r = c.call(MsgType::kBranchCreate, create_payload(iota_tokens(0, 4), *tail));
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->code(), Code::kProtocol) << r->text();
  }
  wire::PagesLookupKeysRequest lk;
  lk.n_keys = 1;
  wire::PayloadWriter w;
  w.put(lk).put(wire::Key{}).put_array(std::span<const std::uint8_t>(short_tail));
  Result<WireReply> r = c.call(MsgType::kPagesLookupKeys, w);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->code(), Code::kProtocol) << r->text();
  EXPECT_EQ(d.pool(), before);
  // The connection is still usable.
  EXPECT_NE(c.create_branch({}), 0u);
}

TEST_F(NamespaceTest, KeyedPagesStayInTheirNamespace) {
  RawClient c(d.socket());
  ASSERT_TRUE(c.connected());
  c.hello();
  msg::AllocPages alloc;
  alloc.head.n_pages = 1;
  Result<msg::Pages> pages = c.op_call<ipc::Op::kPagesAlloc>(alloc);
  ASSERT_TRUE(pages.is_ok()) << pages.status().to_string();
  const wire::Key key = ns_of(0x33);  // any 32 bytes
  msg::Publish pub;
  pub.keys = {key};
  pub.pages = pages->pages;
  pub.ns = ns_of(0xa1);
  Result<msg::Published> added = c.op_call<ipc::Op::kPagesPublish>(pub);
  ASSERT_TRUE(added.is_ok()) << added.status().to_string();
  EXPECT_EQ(added->head.new_keys, 1u);

  auto lookup = [&](std::optional<wire::Namespace> ns) {
    msg::LookupKeys lk;
    lk.head.hold = 0;
    lk.keys = {key};
    lk.ns = ns;
    Result<msg::Pages> found = c.op_call<ipc::Op::kPagesLookupKeys>(lk);
    EXPECT_TRUE(found.is_ok()) << found.status().to_string();
    return found.is_ok() ? found->pages.size() : 99u;
  };
  EXPECT_EQ(lookup(ns_of(0xa1)), 1u);
  EXPECT_EQ(lookup(ns_of(0xb2)), 0u);
  EXPECT_EQ(lookup(std::nullopt), 0u);
}

TEST_F(NamespaceTest, HttpBranchCreateParsesAndShowsTheNamespace) {
  httplib::Client http = d.http();
  const std::string hex = hex_string(ns_of(0xa1).data(), 32);
  const std::vector<std::string> bads = {R"({"namespace":"abc"})", R"({"namespace":7})",
                                         R"({"namespace":")" + std::string(64, 'g') + "\"}"};
  for (const std::string& bad : bads) {
    auto r = http.Post("/v1/branches", bad, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << bad << " -> " << r->body;
  }
  EXPECT_EQ(nlohmann::json::parse(http.Get("/v1/branches")->body)["branches"].size(), 0u);

  auto r = http.Post("/v1/branches", R"({"tokens":[1,2,3],"namespace":")" + hex + "\"}",
                     "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  const auto id = nlohmann::json::parse(r->body)["branch"].get<std::uint64_t>();
  auto info = http.Get(("/v1/branches/" + std::to_string(id)).c_str());
  ASSERT_TRUE(info);
  EXPECT_EQ(nlohmann::json::parse(info->body)["namespace"], hex);
  auto plain = http.Post("/v1/branches", "{}", "application/json");
  ASSERT_TRUE(plain && plain->status == 201);
  const auto plain_id = nlohmann::json::parse(plain->body)["branch"].get<std::uint64_t>();
  auto plain_info = http.Get(("/v1/branches/" + std::to_string(plain_id)).c_str());
  EXPECT_FALSE(nlohmann::json::parse(plain_info->body).contains("namespace"));
}

}  // namespace
}  // namespace pf::testing
