// Keyed pages over the real socket (protocol 1.2, docs/protocol.md): alloc, publish, lookup
// by key with and without holds, release; reuse of published pages by a token branch;
// hostile payloads (short, over-long, bogus ids, bad flags, more keys than pages, other
// leases' pages) get an error reply and change nothing; a SIGKILLed client's holds end
// with its lease. The daemon runs with --verify: it re-checks every invariant (refcounts
// recounted from branches, snapshots, the index and lease holds) after every operation.
#include <gtest/gtest.h>

#include <array>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/prefix_index.h"
#include "tests/ipc/daemon_harness.h"

namespace pf::testing {
namespace {

using Key = std::array<std::uint8_t, wire::kKeyBytes>;
using wire::MsgType;

Key key_n(std::uint8_t n) {
  Key k{};
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(n * 7 + i);
  return k;
}

std::vector<std::uint32_t> pages_of(const WireReply& r) {
  const auto head = r.as<wire::PagesReply>();
  std::vector<std::uint32_t> pages(head.n_pages);
  EXPECT_EQ(r.body.size(), sizeof head + pages.size() * 4);
  if (r.body.size() == sizeof head + pages.size() * 4 && !pages.empty()) {
    std::memcpy(pages.data(), r.body.data() + sizeof head, pages.size() * 4);
  }
  return pages;
}

class KeyedClient : public RawClient {
 public:
  using RawClient::RawClient;

  Result<WireReply> alloc_raw(std::uint32_t n) {
    wire::PagesAllocRequest req;
    req.n_pages = n;
    wire::PayloadWriter w;
    w.put(req);
    return call(MsgType::kPagesAlloc, w);
  }
  std::vector<std::uint32_t> alloc(std::uint32_t n) {
    auto r = alloc_raw(n);
    EXPECT_TRUE(r.is_ok() && r->ok()) << (r.is_ok() ? r->text() : r.status().to_string());
    return r.is_ok() && r->ok() ? pages_of(*r) : std::vector<std::uint32_t>{};
  }
  Result<WireReply> publish_raw(const std::vector<Key>& keys,
                                const std::vector<std::uint32_t>& pages,
                                const Key* parent = nullptr) {
    wire::PagesPublishRequest req;
    req.n = static_cast<std::uint32_t>(keys.size());
    if (parent != nullptr) {
      req.has_parent = 1;
      std::memcpy(req.parent_key, parent->data(), parent->size());
    }
    wire::PayloadWriter w;
    w.put(req)
        .put_array(std::span<const Key>(keys))
        .put_array(std::span<const std::uint32_t>(pages));
    return call(MsgType::kPagesPublish, w);
  }
  Result<WireReply> lookup_raw(const std::vector<Key>& keys, std::uint8_t hold) {
    wire::PagesLookupKeysRequest req;
    req.n_keys = static_cast<std::uint32_t>(keys.size());
    req.hold = hold;
    wire::PayloadWriter w;
    w.put(req).put_array(std::span<const Key>(keys));
    return call(MsgType::kPagesLookupKeys, w);
  }
  std::vector<std::uint32_t> lookup(const std::vector<Key>& keys, bool hold) {
    auto r = lookup_raw(keys, hold ? 1 : 0);
    EXPECT_TRUE(r.is_ok() && r->ok()) << (r.is_ok() ? r->text() : r.status().to_string());
    return r.is_ok() && r->ok() ? pages_of(*r) : std::vector<std::uint32_t>{};
  }
  Result<WireReply> release_raw(const std::vector<std::uint32_t>& pages) {
    wire::PagesReleaseRequest req;
    req.n_pages = static_cast<std::uint32_t>(pages.size());
    wire::PayloadWriter w;
    w.put(req).put_array(std::span<const std::uint32_t>(pages));
    return call(MsgType::kPagesRelease, w);
  }
};

class KeyedPagesDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(a.connected());
    ASSERT_TRUE(b.connected());
    hello = a.hello();
    b.hello();
  }
  // The pool counters a failed request must leave alone.
  std::string books() {
    json p = d.pool_json();
    return p["used_pages"].dump() + "/" + p["cached_pages"].dump() + "/" + p["shared_pages"].dump();
  }
  void expect_clean_log() {
    EXPECT_EQ(d.log().find("invariant"), std::string::npos) << d.log();
    EXPECT_EQ(d.log().find("INTERNAL"), std::string::npos) << d.log();
  }

  Daemon d;
  KeyedClient a{d.socket()};
  KeyedClient b{d.socket()};
  wire::HelloReply hello;
};

// Keyed pages came with 1.2; the binary protocols (2.0, 3.0) keep them.
TEST_F(KeyedPagesDaemon, HelloSpeaksTheCurrentProtocol) {
  EXPECT_EQ(hello.major, wire::kVersionMajor);
  EXPECT_EQ(hello.minor, wire::kVersionMinor);
}

TEST_F(KeyedPagesDaemon, AllocPublishLookupRelease) {
  const auto pages = a.alloc(3);
  ASSERT_EQ(pages.size(), 3u);
  EXPECT_EQ(d.pool_json()["used_pages"], 3);
  const std::vector<Key> keys = {key_n(1), key_n(2), key_n(3)};
  auto pub = a.publish_raw(keys, pages);
  ASSERT_TRUE(pub.is_ok() && pub->ok()) << pub->text();
  EXPECT_EQ(pub->as<wire::PagesPublishReply>().new_keys, 3u);
  EXPECT_EQ(pub->body.size(), sizeof(wire::PagesPublishReply));
  EXPECT_EQ(d.pool_json()["cached_pages"], 3);  // only the index holds them now

  // Another client finds them by key, holds them, and they cannot be evicted meanwhile.
  EXPECT_EQ(b.lookup(keys, true), pages);
  EXPECT_EQ(d.pool_json()["cached_pages"], 0);
  httplib::Client h = d.http();
  auto gc = h.Post("/v1/gc", R"({"drop_cache":true})", "application/json");
  ASSERT_TRUE(gc);
  EXPECT_EQ(json::parse(gc->body)["evicted_pages"], 0);
  EXPECT_EQ(b.lookup({key_n(1), key_n(9), key_n(3)}, false),
            (std::vector<std::uint32_t>{pages[0]}));  // leading run only

  // Publishing a key again keeps the first page; the new page is freed.
  const auto again = a.alloc(1);
  auto dup = a.publish_raw({key_n(1)}, again);
  ASSERT_TRUE(dup.is_ok() && dup->ok());
  EXPECT_EQ(dup->as<wire::PagesPublishReply>().new_keys, 0u);
  EXPECT_EQ(d.pool_json()["used_pages"], 3);

  auto rel = b.release_raw(pages);
  ASSERT_TRUE(rel.is_ok() && rel->ok()) << rel->text();
  EXPECT_TRUE(rel->body.empty());
  EXPECT_EQ(d.pool_json()["cached_pages"], 3);
  gc = h.Post("/v1/gc", R"({"drop_cache":true})", "application/json");
  EXPECT_EQ(json::parse(gc->body)["evicted_pages"], 3);
  EXPECT_EQ(d.pool_json()["used_pages"], 0);

  auto m = h.Get("/metrics");
  ASSERT_TRUE(m);
  for (const char* op : {"pages_lookup_keys", "pages_alloc", "pages_publish", "pages_release"}) {
    EXPECT_NE(m->body.find(std::string("op=\"") + op + "\""), std::string::npos) << op;
  }
  expect_clean_log();
}

TEST_F(KeyedPagesDaemon, TokenBranchReusesPagesPublishedUnderTheirPrefixKeys) {
  // Two pages published under the DESIGN §4 keys of 8 tokens (tiny: 4 tokens per page),
  // chained in two requests through parent_key; another client's branch of those tokens
  // reuses both pages.
  const auto tokens = iota_tokens(40, 9);
  const rt::Sha256 k0 = rt::prefix_page_key(nullptr, std::span(tokens).first(4));
  const rt::Sha256 k1 = rt::prefix_page_key(&k0, std::span(tokens).subspan(4, 4));
  const auto pages = a.alloc(2);
  ASSERT_TRUE(a.publish_raw({k0}, {pages[0]})->ok());
  ASSERT_TRUE(a.publish_raw({k1}, {pages[1]}, &k0)->ok());
  std::uint64_t reused = 0;
  const std::uint64_t br = b.create_branch(tokens, &reused);
  EXPECT_EQ(reused, 8u);
  wire::BranchViewRequest req;
  req.branch = br;
  req.with_tokens = 1;
  wire::PayloadWriter w;
  w.put(req);
  auto view = b.call(MsgType::kBranchView, w);
  ASSERT_TRUE(view.is_ok() && view->ok());
  const auto head = view->as<wire::BranchViewReply>();
  ASSERT_EQ(head.n_pages, 2u);
  EXPECT_EQ(view->as<std::uint32_t>(sizeof head), pages[0]);
  EXPECT_EQ(view->as<std::uint32_t>(sizeof head + 4), pages[1]);
  // A snapshot of the branch names exactly those tokens.
  const std::string cid = b.snapshot(br);
  const json manifest = json::parse(b.rendered<ipc::Op::kManifest>(named(cid)));
  EXPECT_EQ(manifest["tokens"],
            json(std::vector<std::uint32_t>(tokens.begin(), tokens.begin() + 8)));
  // Unrelated tokens find nothing.
  b.create_branch(iota_tokens(1, 8), &reused);
  EXPECT_EQ(reused, 0u);
  expect_clean_log();
}

TEST_F(KeyedPagesDaemon, HostilePayloadsChangeNothing) {
  const auto pages = a.alloc(2);
  const auto foreign = b.alloc(1);
  ASSERT_TRUE(a.publish_raw({key_n(5)}, {pages[0]})->ok());
  const std::string before = books();

  struct Case {
    const char* what;
    std::function<Result<WireReply>()> send;
    Code code;
  };
  const std::vector<Case> cases = {
      {"publish of another lease's page", [&] { return a.publish_raw({key_n(6)}, foreign); },
       Code::kInvalidArgument},
      {"publish of a bogus page id", [&] { return a.publish_raw({key_n(6)}, {4000000000u}); },
       Code::kInvalidArgument},
      {"publish of a published page", [&] { return a.publish_raw({key_n(6)}, {pages[0]}); },
       Code::kInvalidArgument},
      {"publish of a key twice",
       [&] {
         return a.publish_raw({key_n(6), key_n(6)}, {pages[1], pages[1]});
       },
       Code::kInvalidArgument},
      {"publish with more keys than pages",
       [&] {
         wire::PagesPublishRequest req;
         req.n = 2;
         wire::PayloadWriter w;
         const std::vector<Key> keys = {key_n(6), key_n(7)};
         w.put(req).put_array(std::span<const Key>(keys)).put(pages[1]);
         return a.call(MsgType::kPagesPublish, w);
       },
       Code::kProtocol},
      {"publish with trailing bytes",
       [&] {
         wire::PagesPublishRequest req;
         req.n = 1;
         wire::PayloadWriter w;
         const Key k = key_n(6);
         w.put(req).put_array(std::span<const std::uint8_t>(k)).put(pages[1]).put(pages[1]);
         return a.call(MsgType::kPagesPublish, w);
       },
       Code::kProtocol},
      {"publish with has_parent 2",
       [&] {
         wire::PagesPublishRequest req;
         req.n = 1;
         req.has_parent = 2;
         wire::PayloadWriter w;
         const Key k = key_n(6);
         w.put(req).put_array(std::span<const std::uint8_t>(k)).put(pages[1]);
         return a.call(MsgType::kPagesPublish, w);
       },
       Code::kInvalidArgument},
      {"publish announcing 2^32-1 keys",
       [&] {
         wire::PagesPublishRequest req;
         req.n = 0xffffffffu;
         wire::PayloadWriter w;
         w.put(req);
         return a.call(MsgType::kPagesPublish, w);
       },
       Code::kInvalidArgument},
      {"publish shorter than its header",
       [&] {
         const std::uint8_t three[3] = {1, 0, 0};
         return a.call(MsgType::kPagesPublish, std::as_bytes(std::span(three)));
       },
       Code::kProtocol},
      {"lookup with hold 7", [&] { return a.lookup_raw({key_n(5)}, 7); }, Code::kInvalidArgument},
      {"lookup with a truncated key",
       [&] {
         wire::PagesLookupKeysRequest req;
         req.n_keys = 1;
         wire::PayloadWriter w;
         w.put(req).put(std::uint64_t{42});
         return a.call(MsgType::kPagesLookupKeys, w);
       },
       Code::kProtocol},
      {"lookup of more keys than the limit",
       [&] {
         wire::PagesLookupKeysRequest req;
         req.n_keys = wire::kMaxKeysPerRequest + 1;
         wire::PayloadWriter w;
         w.put(req);
         return a.call(MsgType::kPagesLookupKeys, w);
       },
       Code::kInvalidArgument},
      {"alloc of more pages than the limit",
       [&] { return a.alloc_raw(wire::kMaxKeysPerRequest + 1); }, Code::kInvalidArgument},
      {"release of a page not held", [&] { return a.release_raw({pages[0]}); },
       Code::kInvalidArgument},
      {"release of another lease's page", [&] { return a.release_raw(foreign); },
       Code::kInvalidArgument},
      {"release of a held page twice",
       [&] {
         return a.release_raw({pages[1], pages[1]});
       },
       Code::kInvalidArgument},
      {"release with a missing id",
       [&] {
         wire::PagesReleaseRequest req;
         req.n_pages = 2;
         wire::PayloadWriter w;
         w.put(req).put(pages[1]);
         return a.call(MsgType::kPagesRelease, w);
       },
       Code::kProtocol},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Result<WireReply> r = c.send();
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();  // answered, not dropped
    EXPECT_EQ(r->code(), c.code) << r->text();
    EXPECT_EQ(books(), before);
  }
  // The session is still usable and the state intact.
  EXPECT_EQ(a.lookup({key_n(5)}, false), (std::vector<std::uint32_t>{pages[0]}));
  auto ok = a.publish_raw({key_n(6)}, {pages[1]});
  ASSERT_TRUE(ok.is_ok() && ok->ok()) << ok->text();
  expect_clean_log();
}

// pf_lease_client in "keyed" mode, then SIGKILL.
TEST_F(KeyedPagesDaemon, KilledClientsHoldsEndWithItsLease) {
  const json baseline = d.pool_json();
  LeaseClient client(d.socket(), {"keyed", "4"});
  ASSERT_EQ(client.ready().size(), 4u);
  // 3 allocated (exclusive) pages and 1 published page it holds again through a lookup.
  json held = d.pool_json();
  EXPECT_EQ(held["used_pages"], 4);
  EXPECT_EQ(held["cached_pages"], 0);
  httplib::Client h = d.http();
  EXPECT_EQ(
      json::parse(
          h.Post("/v1/gc", R"({"drop_cache":true})", "application/json")->body)["evicted_pages"],
      0);
  ASSERT_TRUE(client.kill9());
  // The published page stays as evictable cache; everything else is free again.
  EXPECT_TRUE(wait_until([&] {
    json now = d.pool_json();
    return now["used_pages"] == 1 && now["cached_pages"] == 1;
  })) << d.pool();
  EXPECT_EQ(a.lookup({Key{1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                          17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}},
                     false)
                .size(),
            1u);
  EXPECT_EQ(
      json::parse(
          h.Post("/v1/gc", R"({"drop_cache":true})", "application/json")->body)["evicted_pages"],
      1);
  EXPECT_EQ(d.pool_json()["used_pages"], baseline["used_pages"]);
  auto m = h.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("processfork_lease_page_holds_released_total 4\n"), std::string::npos)
      << m->body;
  expect_clean_log();
}

}  // namespace
}  // namespace pf::testing
