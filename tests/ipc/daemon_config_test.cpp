// Daemon configuration: parse_size, parse_serve_args (flags, environment, bad values), the
// HOST:PORT parser and the loopback rule; plus the JSON request parsers of the control API.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "ipc/api_json.h"
#include "ipc/daemon.h"
#include "ipc/http_server.h"

namespace pf::ipc {
namespace {

// Clears every PROCESSFORK_* variable for the test's duration.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : kVars) unsetenv(v);
  }
  void TearDown() override {
    for (const char* v : kVars) unsetenv(v);
  }
  static Result<DaemonConfig> parse(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    return parse_serve_args(static_cast<int>(argv.size()), argv.data());
  }
  static constexpr const char* kVars[] = {"PROCESSFORK_DEVICE",
                                          "PROCESSFORK_CAPACITY",
                                          "PROCESSFORK_CHUNK",
                                          "PROCESSFORK_GEOMETRY",
                                          "PROCESSFORK_SOCKET",
                                          "PROCESSFORK_HTTP",
                                          "PROCESSFORK_TOKEN",
                                          "PROCESSFORK_READY_FILE",
                                          "PROCESSFORK_MAX_CLIENTS",
                                          "PROCESSFORK_VERIFY",
                                          "XDG_RUNTIME_DIR",
                                          "PROCESSFORK_HTTP_AUTH",
                                          "PROCESSFORK_HTTP_REQUEST_TIMEOUT_MS",
                                          "PROCESSFORK_HTTP_MAX_CONNECTIONS",
                                          "PROCESSFORK_HTTP_MAX_CONNECTIONS_PER_PEER",
                                          "PROCESSFORK_FRAME_TIMEOUT_MS",
                                          "PROCESSFORK_SPIN_US"};
};

TEST_F(ConfigTest, ParseSizeUnits) {
  EXPECT_EQ(*parse_size("1048576"), 1048576u);
  EXPECT_EQ(*parse_size("0"), 0u);
  EXPECT_EQ(*parse_size("512B"), 512u);
  EXPECT_EQ(*parse_size("512KiB"), 512u << 10);
  EXPECT_EQ(*parse_size("64MiB"), 64u << 20);
  EXPECT_EQ(*parse_size("4GiB"), 4ull << 30);
  EXPECT_EQ(*parse_size("2TiB"), 2ull << 40);
  EXPECT_EQ(*parse_size("3K"), 3u << 10);
  EXPECT_EQ(*parse_size("3M"), 3u << 20);
  EXPECT_EQ(*parse_size("3G"), 3ull << 30);
  EXPECT_EQ(*parse_size("5Mi"), 5u << 20);
}

TEST_F(ConfigTest, ParseSizeRejectsGarbage) {
  for (const char* bad : {"", "GiB", "-1", "1.5GiB", "4GB", "4 GiB", "4gib", "12x", " 4",
                          "99999999999999999999", "17179869184GiB"}) {
    Result<std::size_t> r = parse_size(bad);
    ASSERT_FALSE(r.is_ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << bad;
  }
}

TEST_F(ConfigTest, DefaultsAndDefaultSocket) {
  Result<DaemonConfig> c = parse({});
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->device, "auto");
  EXPECT_EQ(c->capacity_bytes, 4ull << 30);
  EXPECT_EQ(c->chunk_bytes, 64ull << 20);
  EXPECT_EQ(c->geometry, "llama-3-8b");
  EXPECT_EQ(c->http, "127.0.0.1:8642");
  EXPECT_EQ(c->token, "");
  EXPECT_EQ(c->socket_path, "/tmp/processfork-" + std::to_string(getuid()) + ".sock");
  EXPECT_EQ(c->socket_path, default_socket_path());
  EXPECT_EQ(c->max_clients, 256u);
  EXPECT_FALSE(c->verify);
  setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
  EXPECT_EQ(default_socket_path(), "/run/user/4242/processfork.sock");
  EXPECT_EQ(parse({})->socket_path, "/run/user/4242/processfork.sock");
}

TEST_F(ConfigTest, EveryFlagBothSpellings) {
  Result<DaemonConfig> c =
      parse({"--device", "host", "--capacity=8GiB", "--chunk", "2MiB", "--geometry", "tiny",
             "--socket=/tmp/x.sock", "--http", "127.0.0.1:0", "--token", "s3cret", "--ready-file",
             "/tmp/r", "--max-clients=3", "--frame-timeout-ms", "500", "--spin-us=0", "--verify"});
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->device, "host");
  EXPECT_EQ(c->capacity_bytes, 8ull << 30);
  EXPECT_EQ(c->chunk_bytes, 2u << 20);
  EXPECT_EQ(c->geometry, "tiny");
  EXPECT_EQ(c->socket_path, "/tmp/x.sock");
  EXPECT_EQ(c->http, "127.0.0.1:0");
  EXPECT_EQ(c->token, "s3cret");
  EXPECT_EQ(c->ready_file, "/tmp/r");
  EXPECT_EQ(c->max_clients, 3u);
  EXPECT_EQ(c->frame_timeout_ms, 500u);
  EXPECT_TRUE(c->verify);
  EXPECT_EQ(parse({})->frame_timeout_ms, 10000u);
  EXPECT_EQ(c->spin_us, 0u);
  EXPECT_EQ(parse({})->spin_us, 50u);
  EXPECT_EQ(parse({"--spin-us", "10000"})->spin_us, 10000u);
  EXPECT_EQ(
      parse({"--geometry", "layers=4,kv_heads=2,head_dim=64,dtype=fp16,page_tokens=16"})->geometry,
      "layers=4,kv_heads=2,head_dim=64,dtype=fp16,page_tokens=16");
  EXPECT_EQ(parse({"--geometry", "llama-3-8b:128"})->geometry, "llama-3-8b:128");
  for (const char* bad : {"llama-3-8b:0", "llama-3-8b:x", "nope:128"}) {
    Result<DaemonConfig> r = parse({"--geometry", bad});
    ASSERT_FALSE(r.is_ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("--geometry"), std::string::npos) << r.status().message();
  }
  EXPECT_EQ(parse({"--http", "off"})->http, "off");
  EXPECT_EQ(parse({"--http", "[::1]:9000"})->http, "[::1]:9000");
}

TEST_F(ConfigTest, EnvironmentAndFlagsWin) {
  setenv("PROCESSFORK_DEVICE", "host", 1);
  setenv("PROCESSFORK_CAPACITY", "1GiB", 1);
  setenv("PROCESSFORK_CHUNK", "4MiB", 1);
  setenv("PROCESSFORK_GEOMETRY", "tiny", 1);
  setenv("PROCESSFORK_SOCKET", "/tmp/env.sock", 1);
  setenv("PROCESSFORK_HTTP", "off", 1);
  setenv("PROCESSFORK_TOKEN", "envtoken", 1);
  setenv("PROCESSFORK_READY_FILE", "/tmp/env.ready", 1);
  setenv("PROCESSFORK_MAX_CLIENTS", "9", 1);
  setenv("PROCESSFORK_VERIFY", "1", 1);
  setenv("PROCESSFORK_SPIN_US", "7", 1);
  Result<DaemonConfig> c = parse({});
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->device, "host");
  EXPECT_EQ(c->capacity_bytes, 1ull << 30);
  EXPECT_EQ(c->chunk_bytes, 4u << 20);
  EXPECT_EQ(c->geometry, "tiny");
  EXPECT_EQ(c->socket_path, "/tmp/env.sock");
  EXPECT_EQ(c->http, "off");
  EXPECT_EQ(c->token, "envtoken");
  EXPECT_EQ(c->ready_file, "/tmp/env.ready");
  EXPECT_EQ(c->max_clients, 9u);
  EXPECT_EQ(c->spin_us, 7u);
  EXPECT_TRUE(c->verify);
  // Flags override the environment.
  c = parse({"--capacity", "2GiB", "--socket", "/tmp/flag.sock", "--verify=0"});
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(c->capacity_bytes, 2ull << 30);
  EXPECT_EQ(c->socket_path, "/tmp/flag.sock");
  EXPECT_FALSE(c->verify);
}

TEST_F(ConfigTest, BadFlagsAndValues) {
  const std::vector<std::vector<std::string>> bad = {
      {"--capacity", "lots"},
      {"--capacity", "0"},
      {"--chunk", "1.5MiB"},
      {"--capacity", "1MiB", "--chunk", "2MiB"},
      {"--geometry", "llama-9000"},
      {"--geometry", "layers=2,kv_heads=2"},
      {"--http", "8642"},
      {"--http", "localhost:99999"},
      {"--http", "::1:80"},
      {"--http", ":80"},
      {"--socket", std::string(200, 'x')},
      {"--socket", ""},
      {"--device", ""},
      {"--token", "has space"},
      {"--max-clients", "0"},
      {"--max-clients", "many"},
      {"--max-clients", "65537"},
      {"--frame-timeout-ms", "5"},
      {"--frame-timeout-ms", "600001"},
      {"--frame-timeout-ms", "1s"},
      {"--spin-us", "10001"},
      {"--spin-us", "-1"},
      {"--spin-us", "50us"},
      {"--verify=maybe"},
      {"--frobnicate", "1"},
      {"serve"},
      {"--device"},
  };
  for (const auto& args : bad) {
    Result<DaemonConfig> c = parse(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    ASSERT_FALSE(c.is_ok()) << joined;
    EXPECT_EQ(c.status().code(), Code::kInvalidArgument) << joined;
  }
  // The message names the culprit.
  EXPECT_NE(parse({"--capacity", "lots"}).status().message().find("--capacity"), std::string::npos);
  setenv("PROCESSFORK_CHUNK", "big", 1);
  Result<DaemonConfig> c = parse({});
  ASSERT_FALSE(c.is_ok());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  EXPECT_NE(c.status().message().find("PROCESSFORK_CHUNK"), std::string::npos);
}

TEST_F(ConfigTest, NonLoopbackHttpNeedsToken) {
  for (const char* addr : {"0.0.0.0:8642", "192.168.1.10:80", "[::]:8642", "example.com:80"}) {
    Result<DaemonConfig> c = parse({"--http", addr});
    ASSERT_FALSE(c.is_ok()) << addr;
    EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
    EXPECT_NE(c.status().message().find("token"), std::string::npos);
    EXPECT_TRUE(parse({"--http", addr, "--token", "t"}).is_ok()) << addr;
  }
  setenv("PROCESSFORK_TOKEN", "t", 1);
  EXPECT_TRUE(parse({"--http", "0.0.0.0:0"}).is_ok());
  for (const char* addr : {"127.0.0.1:1", "127.8.9.10:0", "localhost:8642", "[::1]:0"}) {
    EXPECT_TRUE(parse({"--http", addr}).is_ok()) << addr;
  }
}

// The HTTP hardening flags: defaults, both spellings, the environment, bounds, and
// --http-auth=off only on loopback and never with --token.
TEST_F(ConfigTest, HttpGuardAndAuthFlags) {
  Result<DaemonConfig> c = parse({});
  ASSERT_TRUE(c.is_ok());
  EXPECT_TRUE(c->http_auth);
  EXPECT_EQ(c->http_request_timeout_ms, 10000u);
  EXPECT_EQ(c->http_max_connections, 256u);
  EXPECT_EQ(c->http_max_connections_per_peer, 64u);
  c = parse({"--http-auth=off", "--http-request-timeout-ms", "250", "--http-max-connections=9",
             "--http-max-connections-per-peer", "3"});
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_FALSE(c->http_auth);
  EXPECT_EQ(c->http_request_timeout_ms, 250u);
  EXPECT_EQ(c->http_max_connections, 9u);
  EXPECT_EQ(c->http_max_connections_per_peer, 3u);
  setenv("PROCESSFORK_HTTP_AUTH", "off", 1);
  setenv("PROCESSFORK_HTTP_REQUEST_TIMEOUT_MS", "777", 1);
  setenv("PROCESSFORK_HTTP_MAX_CONNECTIONS", "17", 1);
  setenv("PROCESSFORK_HTTP_MAX_CONNECTIONS_PER_PEER", "5", 1);
  c = parse({"--http-max-connections", "18"});
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_FALSE(c->http_auth);
  EXPECT_EQ(c->http_request_timeout_ms, 777u);
  EXPECT_EQ(c->http_max_connections, 18u);
  EXPECT_EQ(c->http_max_connections_per_peer, 5u);
  EXPECT_TRUE(parse({"--http-auth", "on"})->http_auth);
  unsetenv("PROCESSFORK_HTTP_AUTH");
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--http-auth", "maybe"},
           {"--http-auth="},
           {"--http-request-timeout-ms", "9"},
           {"--http-request-timeout-ms", "600001"},
           {"--http-max-connections", "0"},
           {"--http-max-connections", "4097"},
           {"--http-max-connections-per-peer", "0"},
           {"--http-max-connections-per-peer", "x"},
           {"--http-auth=off", "--http", "0.0.0.0:80", "--token", "t"},
           {"--http-auth=off", "--http", "[::]:80"},
           {"--http-auth=off", "--token", "t"}}) {
    Result<DaemonConfig> bad = parse(args);
    ASSERT_FALSE(bad.is_ok()) << args[0];
    EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  }
  EXPECT_NE(parse({"--http-auth=off", "--http", "[::]:80"}).status().message().find("loopback"),
            std::string::npos);
  EXPECT_TRUE(parse({"--http-auth=off", "--http", "[::1]:80"}).is_ok());
  EXPECT_TRUE(parse({"--http-auth=off", "--http", "off"}).is_ok());
}

TEST_F(ConfigTest, HostPortAndLoopback) {
  Result<HostPort> hp = parse_host_port("[::1]:8642");
  ASSERT_TRUE(hp.is_ok());
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 8642);
  EXPECT_EQ(format_host_port(*hp), "[::1]:8642");
  EXPECT_EQ(format_host_port(*parse_host_port("127.0.0.1:0")), "127.0.0.1:0");
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("127.255.0.1"));
  EXPECT_TRUE(is_loopback_host("::1"));
  EXPECT_TRUE(is_loopback_host("::ffff:127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("localhost"));
  EXPECT_FALSE(is_loopback_host("0.0.0.0"));
  EXPECT_FALSE(is_loopback_host("::"));
  EXPECT_FALSE(is_loopback_host("128.0.0.1"));
  EXPECT_FALSE(is_loopback_host("localhost.evil.com"));
}

TEST(ApiJsonTest, StrictRequestParsing) {
  using api::Json;
  EXPECT_TRUE(api::parse_body("").is_ok());
  EXPECT_TRUE(api::parse_body("  \n").is_ok());
  EXPECT_EQ(api::parse_body("{").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(api::parse_body("[1]").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(api::parse_body("\"x\"").status().code(), Code::kInvalidArgument);

  EXPECT_EQ(*api::get_u64(Json{{"branch", 7}}, "branch"), 7u);
  EXPECT_FALSE(api::get_u64(Json{{"branch", -7}}, "branch").is_ok());
  EXPECT_FALSE(api::get_u64(Json{{"branch", 7.5}}, "branch").is_ok());
  EXPECT_FALSE(api::get_u64(Json{{"branch", "7"}}, "branch").is_ok());
  EXPECT_FALSE(api::get_u64(Json::object(), "branch").is_ok());
  EXPECT_NE(api::get_u64(Json::object(), "branch").status().message().find("missing"),
            std::string::npos);

  EXPECT_EQ(api::get_opt_tokens(Json{{"tokens", {1, 2, 4294967295u}}}, "tokens")->size(), 3u);
  EXPECT_FALSE(api::get_opt_tokens(Json{{"tokens", {4294967296ull}}}, "tokens").is_ok());
  EXPECT_FALSE(api::get_opt_tokens(Json{{"tokens", {-1}}}, "tokens").is_ok());
  EXPECT_FALSE(api::get_opt_tokens(Json{{"tokens", "1,2"}}, "tokens").is_ok());
  EXPECT_FALSE(api::get_opt_tokens(Json{{"tokens", {1.5}}}, "tokens").is_ok());

  EXPECT_TRUE(api::get_fork_request(Json{{"cid", "x"}, {"n", 1}}).is_ok());
  EXPECT_TRUE(api::get_fork_request(Json{{"branch", 3}, {"n", 1024}}).is_ok());
  for (const Json& bad :
       {Json{{"cid", "x"}, {"n", 0}}, Json{{"cid", "x"}, {"n", 1025}},
        Json{{"cid", "x"}, {"n", -1}}, Json{{"cid", "x"}, {"n", "2"}},
        Json{{"cid", "x"}, {"n", 2.0}}, Json{{"cid", "x"}}, Json{{"n", 2}},
        Json{{"cid", "x"}, {"branch", 1}, {"n", 2}}, Json{{"cid", 5}, {"n", 2}}}) {
    Result<api::ForkRequest> r = api::get_fork_request(bad);
    ASSERT_FALSE(r.is_ok()) << bad.dump();
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  }
  const msg::Source branch = *api::get_source(Json{{"a", 3}}, "a");
  EXPECT_TRUE(branch.is_branch());
  EXPECT_EQ(branch.head.branch, 3u);
  const msg::Source named = *api::get_source(Json{{"a", "main"}}, "a");
  EXPECT_FALSE(named.is_branch());
  EXPECT_EQ(named.name, "main");
  EXPECT_FALSE(api::get_source(Json{{"a", true}}, "a").is_ok());
  EXPECT_EQ(api::error_body(Status(Code::kNotFound, "no such \"thing\"")),
            R"({"error":{"code":"not_found","message":"no such \"thing\""}})");
  EXPECT_EQ(api::http_status(Code::kInvalidArgument), 400);
  EXPECT_EQ(api::http_status(Code::kNotFound), 404);
  EXPECT_EQ(api::http_status(Code::kConflict), 409);
  EXPECT_EQ(api::http_status(Code::kOutOfMemory), 507);
  EXPECT_EQ(api::http_status(Code::kPermissionDenied), 401);
}

}  // namespace
}  // namespace pf::ipc
