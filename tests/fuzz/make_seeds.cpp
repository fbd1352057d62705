// fuzz_make_seeds DIR: writes the seed corpus of the fuzz targets with the real encoder
// (docs/fuzzing.md). Its outputs are committed under tests/fuzz/corpus/; rerun it after a
// message changes (scripts/fuzz.sh --seeds). Files it does not name (regression inputs,
// regress-*) are left alone.
//  DIR/fuzz_uds_frames/<op>          HELLO, then one request frame of the op (a session)
//  DIR/fuzz_uds_frames/<op>.reply    one ok reply frame of the op
//  DIR/fuzz_http_json/<op>           selector (message number) + a valid JSON body
//                                    (the shapes of docs/http.md)
//  DIR/fuzz_http_json/parse_id, query_source*   the path / query value parsers
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ipc/api_json.h"
#include "ipc/ops.h"
#include "ipc/payload.h"

namespace {

namespace fs = std::filesystem;
using namespace pf;
using ipc::Op;

const char* const kCid = "sha256:9f2c6c2d8e0a4e1b3c5d7f9a0b2c4d6e8f0a1b3c5d7e9f0a2b4c6d8e0f1a3b5c";

// Sample contents for messages with arrays or text; the rest keep their defaults.
template <typename M>
void fill(M&) {}
// The 3.1 namespace tail (docs/protocol.md "Optional tail fields") on the requests that
// take one; the fuzzer reaches the tail-less 3.0 form by truncation.
const wire::Namespace kNamespace{0xa1, 0xb2, 0xc3};

void fill(msg::BranchCreate& m) {
  m.tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  m.ns = kNamespace;
}
void fill(msg::Append& m) {
  m.head.branch = 7;
  m.tokens = {10, 11, 12};
}
void fill(msg::BranchTarget& m) {
  m.head.branch = 7;
}
void fill(msg::Truncate& m) {
  m.head.branch = 7;
  m.head.n_tokens = 4;
}
void fill(msg::ViewBranch& m) {
  m.head.branch = 7;
  m.head.with_tokens = 1;
}
void fill(msg::Snapshot& m) {
  m.head.branch = 7;
  m.name = "system-prompt";
}
void fill(msg::Fork& m) {
  m.head.n = 12;
  m.source = msg::Source::of_name(kCid);
}
void fill(msg::Named& m) {
  m.name = "main";
}
void fill(msg::Merge& m) {
  m.from = msg::Source::of_branch(21);
  m.into = msg::Source::of_name(kCid);
}
void fill(msg::Diff& m) {
  m.a = msg::Source::of_name("main");
  m.b = msg::Source::of_branch(3);
}
void fill(msg::RefEntry& m) {
  m.name = "main";
  m.cid = kCid;
}
void fill(msg::Gc& m) {
  m.drop_cache = 1;
}
void fill(msg::LookupKeys& m) {
  m.keys.assign(2, wire::Key{1, 2, 3});
  m.ns = kNamespace;
}
void fill(msg::AllocPages& m) {
  m.head.n_pages = 2;
}
void fill(msg::Publish& m) {
  m.head.has_parent = 1;
  m.keys.assign(2, wire::Key{4, 5, 6});
  m.pages = {3, 4};
  m.ns = kNamespace;
}
void fill(msg::ReleasePages& m) {
  m.pages = {3, 4};
}
void fill(msg::AttachAnswer& m) {
  m.serials = {1, 2};
}
void fill(msg::Appended& m) {
  m.runs.resize(2);
}
void fill(msg::BranchViewAnswer& m) {
  m.pages = {0, 1};
  m.head.with_tokens = 1;
  m.tokens = {1, 2, 3};
  m.head.n_tokens = 3;
}
void fill(msg::BranchInfo& m) {
  m.parents = {kCid};
}
void fill(msg::Branches& m) {
  m.branches.resize(2);
}
void fill(msg::SnapshotAnswer& m) {
  m.name = "system-prompt";
}
void fill(msg::Forked& m) {
  m.branches = {8, 9};
}
void fill(msg::Merged& m) {
  m.cid = kCid;
  m.recompute_tokens = {5, 6};
}
void fill(msg::Diffed& m) {
  m.shared_pages = {1};
  m.a_only_pages = {2};
}
void fill(msg::Log& m) {
  m.entries.resize(2);
  m.entries[0].cid = kCid;
  m.entries[0].parents = {kCid};
}
void fill(msg::Manifest& m) {
  m.canonical = "{\"format_version\":1}";
}
void fill(msg::Snapshots& m) {
  m.snapshots.resize(1);
}
void fill(msg::Refs& m) {
  m.refs.resize(1);
}
void fill(msg::PoolAnswer& m) {
  m.backend = m.device = "host";
}
void fill(msg::Health& m) {
  m.status = "ok";
}
void fill(msg::Pages& m) {
  m.pages = {3, 4};
}

void put_frame(wire::PayloadWriter& out, std::uint16_t type, std::uint16_t flags,
               const std::vector<std::byte>& payload) {
  wire::FrameHeader h;
  h.type = type;
  h.flags = flags;
  h.request_id = 1;
  h.payload_bytes = static_cast<std::uint32_t>(payload.size());
  out.put(h);
  out.put_array(std::span<const std::byte>(payload));
}

void write_file(const fs::path& path, std::span<const std::byte> bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "fuzz_make_seeds: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

void write_text(const fs::path& path, std::uint8_t selector, const std::string& text) {
  std::vector<std::byte> bytes{std::byte{selector}};
  for (char c : text) bytes.push_back(static_cast<std::byte>(c));
  write_file(path, bytes);
}

// A valid body per HTTP op (docs/http.md), with path and query values merged in as the
// server does; "" for ops whose routes take none.
std::string http_body(Op op) {
  switch (op) {
    case Op::kBranchCreate:
      return R"({"tokens":[1,2,3,4,5,6,7,8,9],"namespace":")" + std::string(64, 'a') + "\"}";
    case Op::kBranchFree:
    case Op::kBranchInfo:
      return R"({"branch":7})";
    case Op::kSnapshot:
      return R"({"branch":7,"name":"system-prompt"})";
    case Op::kFork:
      return std::string(R"({"cid":")") + kCid + R"(","n":12})";
    case Op::kCheckout:
    case Op::kLog:
    case Op::kManifest:
    case Op::kUnpin:
      return R"({"cid":"main"})";
    case Op::kMerge:
      return std::string(R"({"from":21,"into":")") + kCid + "\"}";
    case Op::kDiff:
      return R"({"a":"main","b":3})";
    case Op::kRefSet:
      return std::string(R"({"name":"main","cid":")") + kCid + "\"}";
    case Op::kRefGet:
    case Op::kRefDelete:
      return R"({"name":"main"})";
    case Op::kGc:
      return R"({"drop_cache":true})";
    default:
      return "";
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds DIR\n");
    return 2;
  }
  const fs::path uds = fs::path(argv[1]) / "fuzz_uds_frames";
  const fs::path http = fs::path(argv[1]) / "fuzz_http_json";
  fs::create_directories(uds);
  fs::create_directories(http);

  msg::Hello hello;
  const std::vector<std::byte> hello_payload = wire::encode(hello);
  ipc::for_each_op([&]<Op op>() {
    using Traits = ipc::OpTraits<op>;
    const std::string name(Traits::name);
    const auto type = static_cast<std::uint16_t>(Traits::message);
    ipc::RequestOf<op> request;
    fill(request);
    wire::PayloadWriter session;
    if (op != Op::kHello) put_frame(session, 1, 0, hello_payload);
    put_frame(session, type, 0, wire::encode(request));
    write_file(uds / name, session.bytes());

    ipc::ReplyOf<op> answer;
    fill(answer);
    wire::PayloadWriter body;
    body.put(wire::ReplyHeader{});
    wire::encode_into(body, answer);
    wire::PayloadWriter frame;
    put_frame(frame, type, wire::kFlagReply, body.take());
    write_file(uds / (name + ".reply"), frame.bytes());

    if constexpr (Traits::method != ipc::HttpMethod::kNONE) {
      write_text(http / name, static_cast<std::uint8_t>(type), http_body(op));
    }
  });
  write_text(http / "parse_id", 0xf0, "12");
  write_text(http / "query_source_id", 0xf1, "18446744073709551615");
  write_text(http / "query_source_name", 0xf1, kCid);
  std::printf("fuzz_make_seeds: wrote %s and %s\n", uds.c_str(), http.c_str());
  return 0;
}
