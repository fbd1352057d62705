// The HTTP control port (DESIGN §6) through real requests against a running daemon: every
// route (both spellings of processfork/*), the error model with GET /v1/pool unchanged
// after each bad request, bearer tokens, /metrics, and the Unix socket's binary replies,
// rendered by the HTTP edge's renderer, matching the very bytes HTTP answers. Tokens are written
// through the socket with raw frames.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/manifest.h"
#include "tests/ipc/daemon_harness.h"

namespace pf::testing {
namespace {

using wire::MsgType;

struct Resp {
  int status = 0;
  std::string body;
  json j;  // parsed body (null when empty or not JSON)
};

Resp request(httplib::Client& cli, const std::string& method, const std::string& path,
             const std::string& body = "") {
  httplib::Result r = method == "GET"      ? cli.Get(path.c_str())
                      : method == "DELETE" ? cli.Delete(path.c_str())
                      : method == "PUT"    ? cli.Put(path.c_str(), body, "application/json")
                                           : cli.Post(path.c_str(), body, "application/json");
  Resp out;
  if (!r) {
    ADD_FAILURE() << method << " " << path << ": no response (" << httplib::to_string(r.error())
                  << ")";
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  if (!r->body.empty()) out.j = json::parse(r->body, nullptr, false);
  if (out.status >= 400) {
    // Every error has the documented shape.
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json") << path;
    EXPECT_TRUE(out.j.is_object() && out.j.contains("error") &&
                out.j["error"]["code"].is_string() && out.j["error"]["message"].is_string())
        << method << " " << path << " -> " << out.body;
  }
  return out;
}

// A detached branch holding `tokens`, written (and committed) through the socket.
std::uint64_t uds_branch(RawClient& c, const std::vector<std::uint32_t>& tokens, bool commit = true,
                         bool detach = true) {
  const std::uint64_t b = c.create_branch({});
  c.append(b, tokens);
  if (commit) {
    EXPECT_TRUE(c.branch_op(MsgType::kCommit, b)->ok());
  }
  if (detach) {
    EXPECT_TRUE(c.branch_op(MsgType::kDetach, b)->ok());
  }
  return b;
}

class HttpTest : public ::testing::Test {
 protected:
  Daemon d;
  httplib::Client cli = d.http();
};

TEST_F(HttpTest, HealthAndPool) {
  Resp h = request(cli, "GET", "/v1/health");
  ASSERT_EQ(h.status, 200);
  EXPECT_EQ(h.j["status"], "ok");
  EXPECT_EQ(h.j["backend"], "host");
  EXPECT_EQ(h.j["device"], "host");
  EXPECT_TRUE(h.j["version"].is_string());
  EXPECT_EQ(h.j["protocol"], "3.4");

  Resp p = request(cli, "GET", "/v1/pool");
  ASSERT_EQ(p.status, 200);
  for (const char* k :
       {"backend", "device", "geometry", "page_bytes", "chunk_bytes", "capacity_pages",
        "used_pages", "shared_pages", "cached_pages", "free_pages"}) {
    EXPECT_TRUE(p.j.contains(k)) << k;
  }
  EXPECT_EQ(p.j["page_bytes"], 512);  // tiny: 2 layers * 2 * 4 tokens * 2 heads * 8 * 2 bytes
  EXPECT_EQ(p.j["chunk_bytes"], 2 << 20);
  EXPECT_EQ(p.j["capacity_pages"], (64 << 20) / 512);
  EXPECT_EQ(p.j["used_pages"], 0);
  EXPECT_EQ(p.j["free_pages"], p.j["capacity_pages"]);
  EXPECT_EQ(
      p.j["geometry"],
      json::parse(R"({"layers":2,"kv_heads":2,"head_dim":8,"dtype":"bf16","page_tokens":4})"));
}

TEST_F(HttpTest, BranchesCreateGetListDelete) {
  Resp c = request(cli, "POST", "/v1/branches", "");
  ASSERT_EQ(c.status, 201) << c.body;
  EXPECT_EQ(c.j["n_tokens"], 0);
  EXPECT_EQ(c.j["reused_tokens"], 0);
  const std::uint64_t b = c.j["branch"];
  Resp c2 = request(cli, "POST", "/v1/branches", R"({"tokens":[1,2,3,4,5]})");
  ASSERT_EQ(c2.status, 201);
  EXPECT_EQ(c2.j["n_tokens"], 0);  // nothing cached: HTTP holds only the reused prefix
  EXPECT_EQ(c2.j["reused_tokens"], 0);

  Resp g = request(cli, "GET", "/v1/branches/" + std::to_string(b));
  ASSERT_EQ(g.status, 200);
  EXPECT_EQ(g.j["branch"], b);
  EXPECT_EQ(g.j["n_tokens"], 0);
  EXPECT_EQ(g.j["n_pages"], 0);
  EXPECT_TRUE(g.j["base"].is_null());
  EXPECT_EQ(g.j["owner"], 0);

  Resp list = request(cli, "GET", "/v1/branches");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.j["branches"].size(), 2u);

  Resp del = request(cli, "DELETE", "/v1/branches/" + std::to_string(b));
  EXPECT_EQ(del.status, 204);
  EXPECT_TRUE(del.body.empty());
  EXPECT_EQ(request(cli, "GET", "/v1/branches/" + std::to_string(b)).status, 404);
  EXPECT_EQ(request(cli, "DELETE", "/v1/branches/" + std::to_string(b)).status, 404);
  EXPECT_EQ(request(cli, "GET", "/v1/branches").j["branches"].size(), 1u);
}

// The whole history API over HTTP on tokens an engine wrote through the socket.
TEST_F(HttpTest, SnapshotForkCheckoutRefsMergeLogDiffBothSpellings) {
  RawClient uds(d.socket());
  ASSERT_TRUE(uds.connected());
  uds.hello();
  const std::vector<std::uint32_t> ctx = iota_tokens(100, 10);  // 2 full pages + 2 tokens
  const std::uint64_t x = uds_branch(uds, ctx);

  for (const std::string prefix : {"/v1/processfork", "/processfork"}) {
    SCOPED_TRACE(prefix);
    Resp s =
        request(cli, "POST", prefix + "/snapshot", json{{"branch", x}, {"name", "ctx"}}.dump());
    ASSERT_EQ(s.status, 201) << s.body;
    EXPECT_EQ(s.j["n_tokens"], 10);
    EXPECT_EQ(s.j["n_pages"], 3);
    const std::string cid = s.j["cid"];
    EXPECT_EQ(cid.rfind("sha256:", 0), 0u);
    // The name is a ref (docs/http.md): fork takes it, as the README's `fork ctx` does.
    EXPECT_EQ(request(cli, "GET", "/v1/refs/ctx").j["cid"], cid);

    Resp f = request(cli, "POST", prefix + "/fork", json{{"cid", "ctx"}, {"n", 3}}.dump());
    ASSERT_EQ(f.status, 201) << f.body;
    EXPECT_EQ(f.j["branches"].size(), 3u);
    EXPECT_EQ(f.j["source"], cid);
    for (const json& child : f.j["branches"]) {
      Resp g = request(cli, "GET", "/v1/branches/" + std::to_string(child.get<std::uint64_t>()));
      EXPECT_EQ(g.j["n_tokens"], 10);
      EXPECT_EQ(g.j["base"], cid);
    }
    Resp fb = request(cli, "POST", prefix + "/fork", json{{"branch", x}, {"n", 2}}.dump());
    ASSERT_EQ(fb.status, 201) << fb.body;
    EXPECT_EQ(fb.j["branches"].size(), 2u);
    EXPECT_TRUE(fb.j["source"].is_null());

    Resp co = request(cli, "POST", prefix + "/checkout", json{{"cid", cid}}.dump());
    ASSERT_EQ(co.status, 201) << co.body;
    EXPECT_EQ(co.j["cid"], cid);
    EXPECT_EQ(
        request(cli, "GET", "/v1/branches/" + std::to_string(co.j["branch"].get<std::uint64_t>()))
            .j["n_tokens"],
        10);

    Resp lg = request(cli, "GET", prefix + "/log/" + cid);
    ASSERT_EQ(lg.status, 200) << lg.body;
    ASSERT_EQ(lg.j["entries"].size(), 1u);
    EXPECT_EQ(lg.j["entries"][0]["cid"], cid);
    EXPECT_EQ(lg.j["entries"][0]["name"], "ctx");
    EXPECT_EQ(lg.j["entries"][0]["n_tokens"], 10);
    EXPECT_TRUE(lg.j["entries"][0]["parents"].empty());

    Resp df = request(cli, "GET", prefix + "/diff?a=" + std::to_string(x) + "&b=" + cid);
    ASSERT_EQ(df.status, 200) << df.body;
    EXPECT_EQ(df.j["common_tokens"], 10);
    EXPECT_EQ(df.j["shared_pages"].size(), 3u);
    EXPECT_TRUE(df.j["a_only_pages"].empty());
    EXPECT_TRUE(df.j["b_only_pages"].empty());
  }

  // Prefix reuse over HTTP: the two committed full pages of ctx are cached.
  std::vector<std::uint32_t> longer = ctx;
  longer.push_back(7);
  Resp reuse = request(cli, "POST", "/v1/branches", json{{"tokens", longer}}.dump());
  ASSERT_EQ(reuse.status, 201);
  EXPECT_EQ(reuse.j["reused_tokens"], 8);
  EXPECT_EQ(reuse.j["n_tokens"], 8);

  const std::string cid =
      request(cli, "POST", "/v1/processfork/snapshot", json{{"branch", x}}.dump()).j["cid"];
  // Refs.
  Resp put = request(cli, "PUT", "/v1/refs/team/main", json{{"cid", cid}}.dump());
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(put.j, (json{{"name", "team/main"}, {"cid", cid}}));
  EXPECT_EQ(request(cli, "GET", "/v1/refs/team/main").j["cid"], cid);
  EXPECT_EQ(request(cli, "GET", "/v1/refs").j["refs"].size(), 2u);  // and ctx, the same CID
  Resp by_ref = request(cli, "POST", "/processfork/checkout", json{{"cid", "team/main"}}.dump());
  ASSERT_EQ(by_ref.status, 201);
  EXPECT_EQ(by_ref.j["cid"], cid);
  Resp fork_ref =
      request(cli, "POST", "/v1/processfork/fork", json{{"cid", "team/main"}, {"n", 1}}.dump());
  ASSERT_EQ(fork_ref.status, 201);
  EXPECT_EQ(fork_ref.j["source"], cid);

  // Snapshots: list, manifest (its bytes hash to the CID), unpin refused while a ref names it.
  Resp snaps = request(cli, "GET", "/v1/snapshots");
  ASSERT_EQ(snaps.status, 200);
  bool listed = false;
  for (const json& s : snaps.j["snapshots"]) listed |= s["cid"] == cid;
  EXPECT_TRUE(listed);
  Resp man = request(cli, "GET", "/v1/snapshots/" + cid);
  ASSERT_EQ(man.status, 200);
  EXPECT_EQ(rt::cid_of(man.body), cid);
  EXPECT_EQ(man.j["layout"], "paged-batchinvariant-v1");
  EXPECT_EQ(man.j["tokens"], ctx);
  EXPECT_EQ(man.j["pages"].size(), 3u);
  EXPECT_EQ(man.j["n_layers"], 2);

  // Merge, fast-forward: y extends the snapshot.
  std::vector<std::uint32_t> ext = ctx;
  for (std::uint32_t t : {200u, 201u, 202u, 203u}) ext.push_back(t);
  const std::uint64_t y = uds_branch(uds, ext, /*commit=*/false);
  Resp ff = request(cli, "POST", "/v1/processfork/merge", json{{"from", y}, {"into", cid}}.dump());
  ASSERT_EQ(ff.status, 201) << ff.body;
  EXPECT_EQ(ff.j["outcome"], "fast-forward");
  EXPECT_TRUE(ff.j["recompute_tokens"].empty());
  EXPECT_TRUE(ff.j["branch"].is_number_unsigned());
  EXPECT_EQ(
      request(cli, "GET", "/v1/branches/" + std::to_string(ff.j["branch"].get<std::uint64_t>()))
          .j["n_tokens"],
      14);

  // Merge, three-way: z = checkout of the snapshot, truncated to 5 tokens, then diverges.
  const std::uint64_t z =
      request(cli, "POST", "/v1/processfork/checkout", json{{"cid", cid}}.dump()).j["branch"];
  wire::TruncateRequest tr;
  tr.branch = z;
  tr.n_tokens = 5;
  wire::PayloadWriter tw;
  tw.put(tr);
  ASSERT_TRUE(uds.call(MsgType::kTruncate, tw)->ok());
  uds.append(z, {77, 78, 79});
  Resp tw3 = request(cli, "POST", "/processfork/merge", json{{"from", z}, {"into", cid}}.dump());
  ASSERT_EQ(tw3.status, 201) << tw3.body;
  EXPECT_EQ(tw3.j["outcome"], "three-way");
  EXPECT_EQ(tw3.j["recompute_tokens"], (std::vector<std::uint32_t>{77, 78, 79}));
  EXPECT_EQ(tw3.j["common_tokens"], 5);
  EXPECT_EQ(tw3.j["base"], cid);
  const std::string merge_cid = tw3.j["cid"];
  Resp mlog = request(cli, "GET", "/v1/processfork/log/" + merge_cid);
  ASSERT_EQ(mlog.status, 200);
  ASSERT_GE(mlog.j["entries"].size(), 3u);  // the merge, into (= cid), z's snapshot
  EXPECT_EQ(mlog.j["entries"][0]["cid"], merge_cid);
  EXPECT_EQ(mlog.j["entries"][0]["parents"].size(), 2u);
  EXPECT_EQ(mlog.j["entries"][0]["parents"][0], cid);

  // Unpin: 409 while the ref names it, 204 after, then 404.
  EXPECT_EQ(request(cli, "DELETE", "/v1/snapshots/" + merge_cid).status, 204);
  EXPECT_EQ(request(cli, "GET", "/v1/snapshots/" + merge_cid).status, 404);
  Resp held = request(cli, "DELETE", "/v1/snapshots/" + cid);
  EXPECT_EQ(held.status, 409);
  EXPECT_EQ(held.j["error"]["code"], "conflict");
  EXPECT_EQ(request(cli, "DELETE", "/v1/refs/team/main").status, 204);
  EXPECT_EQ(request(cli, "GET", "/v1/refs/team/main").status, 404);
  EXPECT_EQ(request(cli, "DELETE", "/v1/snapshots/" + cid).status, 409);  // ctx names it too
  EXPECT_EQ(request(cli, "DELETE", "/v1/refs/ctx").status, 204);
  EXPECT_EQ(request(cli, "DELETE", "/v1/snapshots/" + cid).status, 204);
}

// Every bad input of DESIGN §6 gets its status and JSON error, and changes nothing.
TEST_F(HttpTest, BadRequestsAnswerTheDocumentedErrorAndChangeNothing) {
  RawClient uds(d.socket());
  ASSERT_TRUE(uds.connected());
  uds.hello();
  const std::uint64_t x = uds_branch(uds, iota_tokens(1, 9));
  const std::string cid =
      request(cli, "POST", "/v1/processfork/snapshot", json{{"branch", x}}.dump()).j["cid"];
  const std::uint64_t owned = uds_branch(uds, iota_tokens(50, 6), true, /*detach=*/false);
  const std::string unknown_cid = "sha256:" + std::string(64, '0');
  const std::string xs = std::to_string(x);
  const std::string os = std::to_string(owned);

  struct Case {
    std::string method, path, body;
    int status;
    std::string code;
  };
  const std::vector<Case> cases = {
      // malformed JSON, wrong types, missing fields
      {"POST", "/v1/branches", "{", 400, "invalid_argument"},
      {"POST", "/v1/branches", "[1,2]", 400, "invalid_argument"},
      {"POST", "/v1/branches", R"({"tokens":"1,2"})", 400, "invalid_argument"},
      {"POST", "/v1/branches", R"({"tokens":[1,-2]})", 400, "invalid_argument"},
      {"POST", "/v1/branches", R"({"tokens":[4294967296]})", 400, "invalid_argument"},
      {"POST", "/v1/processfork/snapshot", "{}", 400, "invalid_argument"},
      {"POST", "/v1/processfork/snapshot", R"({"branch":")" + xs + R"("})", 400,
       "invalid_argument"},
      {"POST", "/v1/processfork/snapshot", R"({"branch":)" + xs + R"(,"name":7})", 400,
       "invalid_argument"},
      {"POST", "/v1/processfork/snapshot", R"({"branch":)" + xs + R"(,"name":"not a ref"})", 400,
       "invalid_argument"},
      {"POST", "/processfork/snapshot", "{\"branch\":", 400, "invalid_argument"},
      {"POST", "/v1/processfork/fork", R"({"cid":")" + cid + R"("})", 400, "invalid_argument"},
      {"POST", "/v1/processfork/fork", R"({"n":2})", 400, "invalid_argument"},
      {"POST", "/v1/processfork/fork", R"({"cid":")" + cid + R"(","n":"2"})", 400,
       "invalid_argument"},
      {"POST", "/v1/processfork/fork", R"({"cid":")" + cid + R"(","n":2.5})", 400,
       "invalid_argument"},
      {"POST", "/v1/processfork/fork", R"({"cid":")" + cid + R"(","branch":)" + xs + R"(,"n":2})",
       400, "invalid_argument"},
      // n outside 1..1024
      {"POST", "/v1/processfork/fork", R"({"cid":")" + cid + R"(","n":0})", 400,
       "invalid_argument"},
      {"POST", "/processfork/fork", R"({"cid":")" + cid + R"(","n":1025})", 400,
       "invalid_argument"},
      {"POST", "/v1/processfork/fork", R"({"branch":)" + xs + R"(,"n":-1})", 400,
       "invalid_argument"},
      {"POST", "/v1/processfork/checkout", "{}", 400, "invalid_argument"},
      {"POST", "/v1/processfork/checkout", R"({"cid":5})", 400, "invalid_argument"},
      {"POST", "/v1/processfork/merge", R"({"from":)" + xs + "}", 400, "invalid_argument"},
      {"POST", "/v1/processfork/merge", R"({"from":true,"into":)" + xs + "}", 400,
       "invalid_argument"},
      {"GET", "/v1/branches/abc", "", 400, "invalid_argument"},
      {"GET", "/v1/processfork/diff?a=" + xs, "", 400, "invalid_argument"},
      {"PUT", "/v1/refs/main", "{}", 400, "invalid_argument"},
      {"PUT", "/v1/refs/main", R"({"cid":[1]})", 400, "invalid_argument"},
      {"PUT", "/v1/refs/.hidden", R"({"cid":")" + cid + R"("})", 400, "invalid_argument"},
      {"POST", "/v1/gc", R"({"drop_cache":"yes"})", 400, "invalid_argument"},
      // unknown ids
      {"GET", "/v1/branches/987654", "", 404, "not_found"},
      {"DELETE", "/v1/branches/987654", "", 404, "not_found"},
      {"POST", "/v1/processfork/snapshot", R"({"branch":987654})", 404, "not_found"},
      {"POST", "/v1/processfork/fork", R"({"cid":")" + unknown_cid + R"(","n":2})", 404,
       "not_found"},
      {"POST", "/v1/processfork/fork", R"({"branch":987654,"n":2})", 404, "not_found"},
      {"POST", "/v1/processfork/checkout", R"({"cid":")" + unknown_cid + R"("})", 404, "not_found"},
      {"POST", "/processfork/checkout", R"({"cid":"no-such-ref"})", 404, "not_found"},
      {"POST", "/v1/processfork/merge", R"({"from":987654,"into":")" + cid + R"("})", 404,
       "not_found"},
      {"GET", "/v1/processfork/log/" + unknown_cid, "", 404, "not_found"},
      {"GET", "/processfork/log/no-such-ref", "", 404, "not_found"},
      {"GET", "/v1/processfork/diff?a=987654&b=" + cid, "", 404, "not_found"},
      {"GET", "/v1/snapshots/" + unknown_cid, "", 404, "not_found"},
      {"DELETE", "/v1/snapshots/" + unknown_cid, "", 404, "not_found"},
      {"GET", "/v1/refs/nope", "", 404, "not_found"},
      {"DELETE", "/v1/refs/nope", "", 404, "not_found"},
      {"PUT", "/v1/refs/main", R"({"cid":")" + unknown_cid + R"("})", 404, "not_found"},
      {"GET", "/v1/no-such-route", "", 404, "not_found"},
      {"POST", "/v1/health", "{}", 404, "not_found"},
      // a branch held by a socket lease
      {"DELETE", "/v1/branches/" + os, "", 409, "conflict"},
      {"POST", "/v1/processfork/snapshot", R"({"branch":)" + os + "}", 409, "conflict"},
      {"POST", "/processfork/fork", R"({"branch":)" + os + R"(,"n":2})", 409, "conflict"},
      {"POST", "/v1/processfork/merge", R"({"from":)" + os + R"(,"into":")" + cid + R"("})", 409,
       "conflict"},
      {"POST", "/v1/processfork/merge", R"({"from":")" + cid + R"(","into":)" + os + "}", 409,
       "conflict"},
      // too large
      {"POST", "/v1/branches", std::string(2u << 20, ' '), 413, "payload_too_large"},
      {"POST", "/v1/processfork/fork", "{\"n\":1,\"cid\":\"" + std::string(1100000, 'a') + "\"}",
       413, "payload_too_large"},
  };
  const std::string before = d.pool();
  ASSERT_FALSE(before.empty());
  const std::string branches_before = request(cli, "GET", "/v1/branches").body;
  const std::string snaps_before = request(cli, "GET", "/v1/snapshots").body;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method + " " + c.path.substr(0, 120));
    Resp r = request(cli, c.method, c.path, c.body);
    EXPECT_EQ(r.status, c.status) << r.body.substr(0, 300);
    if (r.j.is_object() && r.j.contains("error")) {
      EXPECT_EQ(r.j["error"]["code"], c.code);
    }
    EXPECT_EQ(d.pool(), before);
  }
  EXPECT_EQ(request(cli, "GET", "/v1/branches").body, branches_before);
  EXPECT_EQ(request(cli, "GET", "/v1/snapshots").body, snaps_before);
  // The owner still holds its branch, intact.
  EXPECT_TRUE(uds.append_raw(owned, {1})->ok());
}

TEST(HttpTokenTest, BearerTokenRequiredEverywhere) {
  Daemon d({"--token", "s3cret-token"});
  httplib::Client anon = d.anon();
  httplib::Client wrong = d.http("s3cret-tokem");
  httplib::Client good = d.http("s3cret-token");
  const std::string before = d.pool("s3cret-token");
  ASSERT_FALSE(before.empty());
  for (const std::string path : {"/v1/health", "/v1/pool", "/metrics", "/v1/snapshots"}) {
    Resp a = request(anon, "GET", path);
    EXPECT_EQ(a.status, 401) << path;
    EXPECT_EQ(a.j["error"]["code"], "unauthorized");
    EXPECT_NE(a.j["error"]["message"].get<std::string>().find("missing"), std::string::npos);
    Resp w = request(wrong, "GET", path);
    EXPECT_EQ(w.status, 401) << path;
    EXPECT_NE(w.j["error"]["message"].get<std::string>().find("wrong"), std::string::npos);
    EXPECT_EQ(request(good, "GET", path).status, 200) << path;
  }
  // Mutations without the token change nothing.
  EXPECT_EQ(request(anon, "POST", "/v1/branches", "{}").status, 401);
  EXPECT_EQ(request(wrong, "POST", "/processfork/fork", R"({"branch":1,"n":1})").status, 401);
  httplib::Client basic = d.anon();
  basic.set_basic_auth("user", "s3cret-token");
  EXPECT_EQ(request(basic, "GET", "/v1/pool").status, 401);
  EXPECT_EQ(d.pool("s3cret-token"), before);
  EXPECT_EQ(request(good, "POST", "/v1/branches", "{}").status, 201);
}

TEST_F(HttpTest, MetricsInPrometheusFormat) {
  RawClient uds(d.socket());
  ASSERT_TRUE(uds.connected());
  uds.hello();
  // A fork of a branch with a partial last page, then an append to a child: one CoW copy.
  const std::uint64_t b = uds_branch(uds, iota_tokens(1, 6), false, true);
  Resp f = request(cli, "POST", "/v1/processfork/fork", json{{"branch", b}, {"n", 2}}.dump());
  ASSERT_EQ(f.status, 201);
  uds.append(f.j["branches"][0], {9});
  request(cli, "GET", "/v1/branches/999999");  // an error

  Resp m = request(cli, "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  const std::string& t = m.body;
  auto has = [&](const std::string& s) { return t.find(s) != std::string::npos; };
  EXPECT_TRUE(has("# HELP processfork_pages "));
  EXPECT_TRUE(has("# TYPE processfork_pages gauge"));
  for (const char* state : {"free", "exclusive", "sealed", "shared", "cached"}) {
    EXPECT_TRUE(has(std::string("processfork_pages{state=\"") + state + "\"} ")) << state;
  }
  EXPECT_TRUE(has("# TYPE processfork_ops_total counter"));
  EXPECT_TRUE(has("processfork_ops_total{op=\"fork\",result=\"ok\"} 1\n"));
  EXPECT_TRUE(has("processfork_ops_total{op=\"append\",result=\"ok\"} 2\n"));
  EXPECT_TRUE(has("processfork_ops_total{op=\"branch_info\",result=\"error\"} 1\n"));
  EXPECT_TRUE(has("processfork_ops_total{op=\"hello\",result=\"ok\"} 1\n"));
  EXPECT_TRUE(has("# TYPE processfork_op_duration_seconds histogram"));
  EXPECT_TRUE(has("processfork_op_duration_seconds_bucket{op=\"fork\",le=\"+Inf\"} 1\n"));
  EXPECT_TRUE(has("processfork_op_duration_seconds_count{op=\"append\"} 2\n"));
  EXPECT_TRUE(has("processfork_op_duration_seconds_sum{op=\"fork\"} "));
  EXPECT_TRUE(has("processfork_cow_copied_pages_total 1\n"));
  EXPECT_TRUE(has("processfork_cow_copied_bytes_total 512\n"));
  EXPECT_TRUE(has("processfork_clients_connected 1\n"));
  EXPECT_TRUE(has("processfork_leases_active 1\n"));
  EXPECT_TRUE(has("# TYPE processfork_http_requests_total counter"));
  // Every sample line is "name{labels} value" or "name value".
  std::size_t samples = 0;
  for (std::size_t pos = 0; pos < t.size();) {
    const std::size_t end = t.find('\n', pos);
    ASSERT_NE(end, std::string::npos) << "text must end with a newline";
    const std::string line = t.substr(pos, end - pos);
    pos = end + 1;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    ASSERT_EQ(line.rfind("processfork_", 0), 0u) << line;
    const std::size_t space = line.rfind(' ');
    ASSERT_NE(space, std::string::npos) << line;
    std::size_t used = 0;
    std::stod(line.substr(space + 1), &used);
    EXPECT_EQ(used, line.size() - space - 1) << line;
    ++samples;
  }
  EXPECT_GT(samples, 100u);

  uds.close();
  // The lease ends and the connection count drops in two steps of the daemon's cleanup:
  // wait for both rather than assume their order.
  EXPECT_TRUE(wait_until([&] {
    const std::string body = request(cli, "GET", "/metrics").body;
    return body.find("processfork_leases_active 0\n") != std::string::npos &&
           body.find("processfork_clients_connected 0\n") != std::string::npos;
  }));
}

// The socket's binary replies, rendered by the HTTP edge's renderer, are byte for byte what
// HTTP answers: both front ends run the same op on the same service.
TEST_F(HttpTest, SocketRepliesMatchHttpBytes) {
  using ipc::Op;
  RawClient uds(d.socket());
  ASSERT_TRUE(uds.connected());
  uds.hello();
  const std::uint64_t x = uds_branch(uds, iota_tokens(1, 9));
  const std::string cid =
      request(cli, "POST", "/v1/processfork/snapshot", json{{"branch", x}, {"name", "n"}}.dump())
          .j["cid"];
  ASSERT_EQ(request(cli, "PUT", "/v1/refs/main", json{{"cid", cid}}.dump()).status, 200);
  const std::string xs = std::to_string(x);

  EXPECT_EQ(uds.rendered<Op::kHealth>({}), request(cli, "GET", "/v1/health").body);
  EXPECT_EQ(uds.rendered<Op::kPool>({}), request(cli, "GET", "/v1/pool").body);
  EXPECT_EQ(uds.rendered<Op::kLog>(named(cid)),
            request(cli, "GET", "/v1/processfork/log/" + cid).body);
  EXPECT_EQ(uds.rendered<Op::kDiff>({source(x), source("main")}),
            request(cli, "GET", "/processfork/diff?a=" + xs + "&b=main").body);
  EXPECT_EQ(uds.rendered<Op::kManifest>(named("main")),
            request(cli, "GET", "/v1/snapshots/" + cid).body);
  EXPECT_EQ(uds.rendered<Op::kSnapshots>({}), request(cli, "GET", "/v1/snapshots").body);
  EXPECT_EQ(uds.rendered<Op::kRefs>({}), request(cli, "GET", "/v1/refs").body);
  EXPECT_EQ(uds.rendered<Op::kRefGet>(named("main")), request(cli, "GET", "/v1/refs/main").body);
  EXPECT_EQ(uds.rendered<Op::kBranches>({}), request(cli, "GET", "/v1/branches").body);
  EXPECT_EQ(uds.rendered<Op::kBranchInfo>(target(x)),
            request(cli, "GET", "/v1/branches/" + xs).body);
  EXPECT_EQ(uds.rendered<Op::kRefSet>({"other", cid}),
            (json{{"cid", cid}, {"name", "other"}}.dump()));
  EXPECT_EQ(uds.rendered<Op::kRefDelete>(named("other")), "");
  EXPECT_EQ(uds.rendered<Op::kGc>({}), request(cli, "POST", "/v1/gc", "{}").body);
  // Merge over the socket: the new branch belongs to the socket's lease, and the reply
  // carries its length.
  Result<msg::Merged> m = uds.op_call<Op::kMerge>({source(x), source("main")});
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->fast_forward, 1u);
  EXPECT_EQ(m->n_tokens, 9u);
  EXPECT_EQ(m->cid, cid);
  const json mj = json::parse(ipc::api::answer_body(*m), nullptr, false);
  ASSERT_TRUE(mj.is_object());
  EXPECT_EQ(mj["outcome"], "fast-forward");
  for (const char* k : {"outcome", "branch", "cid", "base", "recompute_tokens"}) {
    EXPECT_TRUE(mj.contains(k)) << k;
  }
  EXPECT_NE(request(cli, "GET", "/v1/branches/" + std::to_string(m->branch)).j["owner"], 0);
  // Errors over the socket carry the same message, with the pf::Code number.
  EXPECT_EQ(uds.rendered<Op::kLog>(named("nope")).rfind("ERROR 2: ", 0), 0u);
  const std::string truncated = "\x05\x00";  // a Named head cut short
  Result<WireReply> bad = uds.call(wire::MsgType::kUnpin, std::as_bytes(std::span(truncated)));
  ASSERT_TRUE(bad.is_ok());
  EXPECT_EQ(bad->code(), Code::kProtocol) << bad->text();
  EXPECT_EQ(uds.rendered<Op::kRefDelete>(named("main")), "");
  EXPECT_EQ(uds.rendered<Op::kRefDelete>(named("n")), "");  // the snapshot's name
  EXPECT_EQ(uds.rendered<Op::kUnpin>(named(cid)), "");
  EXPECT_EQ(request(cli, "GET", "/v1/snapshots/" + cid).status, 404);
}

TEST(HttpStoreTest, SyncWaitsForDurabilityAndMetricsShowTheStore) {
  // A daemon with a durable store (docs/store.md): POST /v1/processfork/sync (both spellings)
  // answers 204 once the snapshot is durable, 404 for an unknown one, and /metrics shows it.
  TempDir dir("pfhs");
  Daemon d({"--store", dir.file("store")});
  httplib::Client cli = d.http();
  RawClient uds(d.socket());
  ASSERT_TRUE(uds.connected());
  uds.hello();
  const std::uint64_t x = uds_branch(uds, iota_tokens(300, 9));
  Resp s = request(cli, "POST", "/v1/processfork/snapshot", json{{"branch", x}}.dump());
  ASSERT_EQ(s.status, 201) << s.body;
  const std::string cid = s.j["cid"];
  for (const std::string prefix : {"/v1/processfork", "/processfork"}) {
    Resp y = request(cli, "POST", prefix + "/sync", json{{"cid", cid}}.dump());
    EXPECT_EQ(y.status, 204) << y.body;
  }
  EXPECT_EQ(request(cli, "POST", "/v1/processfork/sync", json{{"cid", "nope"}}.dump()).status, 404);
  EXPECT_EQ(request(cli, "POST", "/v1/processfork/sync", json{{"cid", 7}}.dump()).status, 400);
  Resp m = request(cli, "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("processfork_store_snapshots{state=\"durable\"} 1"), std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find("processfork_store_blobs "), std::string::npos);
}

TEST_F(HttpTest, SyncWithoutAStoreIs503) {
  RawClient uds(d.socket());
  ASSERT_TRUE(uds.connected());
  uds.hello();
  const std::uint64_t x = uds_branch(uds, iota_tokens(400, 5));
  Resp s = request(cli, "POST", "/v1/processfork/snapshot", json{{"branch", x}}.dump());
  ASSERT_EQ(s.status, 201) << s.body;
  Resp y = request(cli, "POST", "/v1/processfork/sync", json{{"cid", s.j["cid"]}}.dump());
  EXPECT_EQ(y.status, 503) << y.body;
  EXPECT_EQ(y.j["error"]["code"], "unavailable");
  EXPECT_EQ(request(cli, "GET", "/metrics").body.find("processfork_store_"), std::string::npos);
}

}  // namespace
}  // namespace pf::testing
