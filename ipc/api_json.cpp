#include "ipc/api_json.h"

#include <cctype>
#include <charconv>
#include <limits>

#include "base/hex.h"
#include "ipc/wire.h"

namespace pf::ipc::api {
namespace {

Status bad(std::string message) {
  return Status(Code::kInvalidArgument, std::move(message));
}

std::string field(const char* key) {
  return std::string("field '") + key + "'";
}

// nlohmann distinguishes unsigned, signed and float numbers; only a non-negative integer
// (parsed as unsigned, or as a signed value >= 0) is accepted.
bool as_u64(const Json& v, std::uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<std::uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
    *out = static_cast<std::uint64_t>(v.get<std::int64_t>());
    return true;
  }
  return false;
}

// Whether `text` nests arrays/objects deeper than `limit`, counting brackets outside strings
// (without parsing, so a deep body never builds a deep tree). Unbalanced brackets are left to
// the parser to refuse.
bool nests_deeper_than(std::string_view text, std::size_t limit) {
  std::size_t depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

}  // namespace

Result<Json> parse_body(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  if (i == text.size()) return Json::object();
  if (text.size() > kMaxBodyBytes) {
    return bad("the request body is " + std::to_string(text.size()) + " bytes; the limit is " +
               std::to_string(kMaxBodyBytes));
  }
  if (nests_deeper_than(text, kMaxJsonDepth)) {
    return bad("the request body nests arrays/objects deeper than " +
               std::to_string(kMaxJsonDepth) + " levels");
  }
  Json body = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return bad("malformed JSON in the request body");
  if (!body.is_object()) return bad("the request body must be a JSON object");
  return body;
}

Result<std::optional<std::uint64_t>> get_opt_u64(const Json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::optional<std::uint64_t>();
  std::uint64_t v = 0;
  if (!as_u64(*it, &v)) return bad(field(key) + " must be a non-negative integer");
  return std::optional<std::uint64_t>(v);
}

Result<std::uint64_t> get_u64(const Json& body, const char* key) {
  PF_ASSIGN_OR_RETURN(std::optional<std::uint64_t> v, get_opt_u64(body, key));
  if (!v) return bad("missing " + field(key));
  return *v;
}

Result<std::optional<std::string>> get_opt_string(const Json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return bad(field(key) + " must be a string");
  return std::optional<std::string>(it->get<std::string>());
}

Result<std::string> get_string(const Json& body, const char* key) {
  PF_ASSIGN_OR_RETURN(std::optional<std::string> v, get_opt_string(body, key));
  if (!v) return bad("missing " + field(key));
  return std::move(*v);
}

Result<bool> get_opt_bool(const Json& body, const char* key, bool fallback) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return bad(field(key) + " must be true or false");
  return it->get<bool>();
}

Result<std::optional<wire::Namespace>> get_opt_namespace(const Json& body, const char* key) {
  PF_ASSIGN_OR_RETURN(std::optional<std::string> text, get_opt_string(body, key));
  if (!text) return std::optional<wire::Namespace>();
  wire::Namespace ns{};
  if (!parse_hex(*text, ns.data(), ns.size())) return bad(field(key) + " must be 64 hex digits");
  return std::optional<wire::Namespace>(ns);
}

Result<std::vector<std::uint32_t>> get_opt_tokens(const Json& body, const char* key) {
  std::vector<std::uint32_t> tokens;
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return tokens;
  if (!it->is_array()) return bad(field(key) + " must be an array of token ids");
  if (it->size() > wire::kMaxTokensPerRequest) {
    return bad(field(key) + " holds " + std::to_string(it->size()) + " tokens; the limit is " +
               std::to_string(wire::kMaxTokensPerRequest));
  }
  tokens.reserve(it->size());
  for (const Json& t : *it) {
    std::uint64_t v = 0;
    if (!as_u64(t, &v) || v > std::numeric_limits<std::uint32_t>::max()) {
      return bad(field(key) + " must hold integers in 0..4294967295");
    }
    tokens.push_back(static_cast<std::uint32_t>(v));
  }
  return tokens;
}

Result<msg::Source> get_source(const Json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return bad("missing " + field(key));
  std::uint64_t id = 0;
  if (as_u64(*it, &id)) return msg::Source::of_branch(id);
  if (it->is_string()) return msg::Source::of_name(it->get<std::string>());
  return bad(field(key) + " must be a branch id (integer) or a CID / ref name (string)");
}

Result<ForkRequest> get_fork_request(const Json& body) {
  ForkRequest req;
  PF_ASSIGN_OR_RETURN(std::optional<std::string> cid, get_opt_string(body, "cid"));
  PF_ASSIGN_OR_RETURN(std::optional<std::uint64_t> branch, get_opt_u64(body, "branch"));
  if (cid && branch) return bad("give either 'cid' or 'branch', not both");
  if (!cid && !branch) return bad("missing field 'cid' or 'branch'");
  req.source = cid ? msg::Source::of_name(std::move(*cid)) : msg::Source::of_branch(*branch);
  auto it = body.find("n");
  if (it == body.end() || it->is_null()) return bad("missing field 'n'");
  std::uint64_t n = 0;
  if (!it->is_number_integer()) return bad("field 'n' must be an integer");
  if (!as_u64(*it, &n) || n < 1 || n > wire::kMaxForkChildren) {
    return bad("field 'n' must be in 1.." + std::to_string(wire::kMaxForkChildren));
  }
  req.head.n = static_cast<std::uint32_t>(n);
  return req;
}

Result<std::uint64_t> parse_id(std::string_view text, const char* what) {
  std::uint64_t v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || ptr != end) {
    return bad(std::string(what) + " must be a decimal integer, got '" + std::string(text) + "'");
  }
  return v;
}

std::string dump(const Json& j) {
  // Replace invalid UTF-8 (e.g. in an error message quoting client bytes) instead of
  // throwing.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string error_body(std::string_view code, std::string_view message) {
  return dump(Json{{"error", Json{{"code", code}, {"message", message}}}});
}

std::string error_body(const Status& status) {
  return error_body(error_code_name(status.code()), status.message());
}

std::string error_code_name(Code code) {
  std::string out;
  for (char c : code_name(code)) {
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

int http_status(Code code) {
  switch (code) {
    case Code::kOk:
      return 200;
    case Code::kInvalidArgument:
    case Code::kProtocol:
    case Code::kUnsupported:
      return 400;
    case Code::kPermissionDenied:
      return 401;
    case Code::kNotFound:
      return 404;
    case Code::kAlreadyExists:
    case Code::kConflict:
    case Code::kStale:  // client side only; never a daemon's answer
      return 409;
    case Code::kOutOfMemory:
      return 507;
    case Code::kUnavailable:
      return 503;
    case Code::kSystem:
    case Code::kDriver:
    case Code::kInternal:
    case Code::kDataCorrupt:  // the daemon's own data is damaged: not the client's doing
      return 500;
  }
  return 500;
}

}  // namespace pf::ipc::api
