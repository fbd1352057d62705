// The JSON shapes of the control API (DESIGN §6), shared by both front ends: the HTTP
// control port renders its answers with these functions and the Unix socket's JSON ops
// (ipc/wire.h kMerge..kBranchInfo) return the very same bytes. docs/http.md lists every
// shape with an example.
//
// Contract: request parsers are strict about types (a string where an integer belongs, a
// float, a negative id, a token outside uint32 are kInvalidArgument naming the field) and
// ignore unknown fields. Renderers are pure functions of runtime results. Nothing here
// touches the runtime.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/runtime.h"
#include "vmm/status.h"

namespace pf::ipc::api {

using Json = nlohmann::json;

// --- requests ---------------------------------------------------------------------------
// A request body: empty (or only whitespace) is {}; anything but a JSON object is
// kInvalidArgument ("malformed JSON ..." / "... must be a JSON object").
Result<Json> parse_body(std::string_view text);

// Required / optional fields. kInvalidArgument for a missing required field or a wrong type.
Result<std::uint64_t> get_u64(const Json& body, const char* key);
Result<std::optional<std::uint64_t>> get_opt_u64(const Json& body, const char* key);
Result<std::string> get_string(const Json& body, const char* key);
Result<std::optional<std::string>> get_opt_string(const Json& body, const char* key);
Result<bool> get_opt_bool(const Json& body, const char* key, bool fallback);
// Token ids (unsigned integers < 2^32), at most wire::kMaxTokensPerRequest. Absent = [].
Result<std::vector<rt::Token>> get_opt_tokens(const Json& body, const char* key);
// A source: an integer is a branch id, a string a CID or ref name.
Result<rt::Source> get_source(const Json& body, const char* key);
// fork's {cid | branch, n}: exactly one of cid/branch; n in 1..rt::kMaxForkChildren.
struct ForkRequest {
  rt::Source source;
  std::size_t n = 0;
};
Result<ForkRequest> get_fork_request(const Json& body);
// Parses a decimal branch id from a URL path segment or query value ("12").
Result<std::uint64_t> parse_id(std::string_view text, const char* what);

// --- answers ----------------------------------------------------------------------------
struct PoolIdentity {
  std::string backend;
  std::string device;
  std::string version;
};

Json health_json(const PoolIdentity& id);
Json geometry_json(const rt::Geometry& g);
Json pool_json(const PoolIdentity& id, const rt::Geometry& g, const rt::PoolStats& s,
               std::uint64_t epoch);
Json new_branch_json(const rt::NewBranch& b);
Json branch_json(const rt::BranchInfo& info);
Json snapshot_json(const rt::SnapshotInfo& s);        // POST snapshot's answer
Json snapshot_entry_json(const rt::SnapshotInfo& s);  // one entry of GET /v1/snapshots
Json fork_json(const rt::ForkResult& f);
Json checkout_json(rt::BranchId branch, std::string_view cid);
Json merge_json(const rt::MergeResult& m);
Json diff_json(const rt::DiffResult& d);
Json log_json(const std::vector<rt::LogEntry>& entries);
Json ref_json(std::string_view name, std::string_view cid);
Json gc_json(const rt::GcResult& g);

// Compact serialization (sorted keys, no whitespace): the bytes both front ends send.
std::string dump(const Json& j);

// --- errors -----------------------------------------------------------------------------
// {"error":{"code":"<code>","message":"<message>"}}; code is error_code_name(code).
std::string error_body(std::string_view code, std::string_view message);
std::string error_body(const Status& status);
// "invalid_argument", "not_found", ... (pf::Code in snake case).
std::string error_code_name(Code code);
// 400, 401, 404, 409, 413 (never from a Code), 500, 503, 507: see docs/http.md.
int http_status(Code code);

}  // namespace pf::ipc::api
