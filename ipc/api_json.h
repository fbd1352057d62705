// The JSON edge of the control API (DESIGN §6): HTTP requests become request messages
// (ipc/messages.h) and reply messages become HTTP answers. JSON exists nowhere else: the
// Unix socket carries the same messages in binary. docs/http.md lists every shape.
//
// Contract: request parsers are strict about types (a string where an integer belongs, a
// float, a negative id, a token outside uint32 are kInvalidArgument naming the field) and
// ignore unknown fields. Renderers are pure functions of reply messages. Nothing here
// touches the runtime.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "ipc/ops.h"

namespace pf::ipc::api {

using Json = nlohmann::json;

// --- requests ---------------------------------------------------------------------------
// Bounds of a request body: its bytes (the HTTP port answers 413 past it before parsing) and
// how deep arrays and objects may nest in it.
inline constexpr std::size_t kMaxBodyBytes = 1u << 20;
inline constexpr std::size_t kMaxJsonDepth = 64;
// A request body: empty (or only whitespace) is {}; anything but a JSON object is
// kInvalidArgument ("malformed JSON ..." / "... must be a JSON object"), and so is a body
// over kMaxBodyBytes or nesting deeper than kMaxJsonDepth (refused before parsing).
Result<Json> parse_body(std::string_view text);

// Required / optional fields. kInvalidArgument for a missing required field or a wrong type.
Result<std::uint64_t> get_u64(const Json& body, const char* key);
Result<std::optional<std::uint64_t>> get_opt_u64(const Json& body, const char* key);
Result<std::string> get_string(const Json& body, const char* key);
Result<std::optional<std::string>> get_opt_string(const Json& body, const char* key);
Result<bool> get_opt_bool(const Json& body, const char* key, bool fallback);
// Token ids (unsigned integers < 2^32), at most wire::kMaxTokensPerRequest. Absent = [].
Result<std::vector<std::uint32_t>> get_opt_tokens(const Json& body, const char* key);
// A prefix-index namespace: 64 hex digits (either case). Absent or null = the default
// namespace (nullopt); anything else is kInvalidArgument.
Result<std::optional<wire::Namespace>> get_opt_namespace(const Json& body, const char* key);
// A source: an integer is a branch id, a string a CID or ref name.
Result<msg::Source> get_source(const Json& body, const char* key);
// fork's {cid | branch, n}: exactly one of cid/branch; n in 1..wire::kMaxForkChildren.
using ForkRequest = msg::Fork;
Result<ForkRequest> get_fork_request(const Json& body);
// Parses a decimal branch id from a URL path segment or query value ("12").
Result<std::uint64_t> parse_id(std::string_view text, const char* what);
// A query parameter naming a source (diff's ?a=&b=) as get_source reads it: all digits and
// within uint64 = a branch id, anything else a CID or ref name (a string).
Json query_source(std::string_view text);

// Each HTTP op's request (DESIGN §6) from its JSON object: the body, with path parameters
// ({branch}, {cid}, {name}) and query parameters already merged in by the HTTP server.
// Declared for every row of ipc/ops.def; defined for the rows with an HTTP route.
#define PF_OP(op, ...) \
  template <>          \
  Status from_json<Op::k##op>(const Json& body, RequestOf<Op::k##op>* out);
template <Op op>
Status from_json(const Json& body, RequestOf<op>* out);
#include "ipc/ops.def"
#undef PF_OP

// --- answers ----------------------------------------------------------------------------
// The body of each HTTP answer (DESIGN §6 shapes; docs/http.md), from the reply message.
// An empty string (msg::Empty) is answered as 204. The manifest is its canonical bytes.
std::string answer_body(const msg::Empty&);
std::string answer_body(const msg::NewBranch& m);
std::string answer_body(const msg::BranchInfo& m);
std::string answer_body(const msg::Branches& m);
std::string answer_body(const msg::SnapshotAnswer& m);
std::string answer_body(const msg::Forked& m);
std::string answer_body(const msg::CheckedOut& m);
std::string answer_body(const msg::Merged& m);
std::string answer_body(const msg::Diffed& m);
std::string answer_body(const msg::Log& m);
std::string answer_body(const msg::Manifest& m);
std::string answer_body(const msg::Snapshots& m);
std::string answer_body(const msg::RefEntry& m);
std::string answer_body(const msg::Refs& m);
std::string answer_body(const msg::PoolAnswer& m);
std::string answer_body(const msg::GcAnswer& m);
std::string answer_body(const msg::Health& m);

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
