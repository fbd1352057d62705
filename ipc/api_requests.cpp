// HTTP requests (DESIGN §6) as request messages: one from_json per op with a route, and the
// query values they read (query_source).
#include <algorithm>
#include <cctype>

#include "ipc/api_json.h"

namespace pf::ipc::api {
namespace {

Status named(const Json& body, const char* key, msg::Named* out) {
  PF_ASSIGN_OR_RETURN(out->name, get_string(body, key));
  return Status::ok();
}

Status branch_target(const Json& body, msg::BranchTarget* out) {
  PF_ASSIGN_OR_RETURN(out->head.branch, get_u64(body, "branch"));
  return Status::ok();
}

}  // namespace

Json query_source(std::string_view text) {
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
  if (digits) {
    if (Result<std::uint64_t> id = parse_id(text, "branch id"); id.is_ok()) return *id;
  }
  return Json(text);
}

template <>
Status from_json<Op::kBranchCreate>(const Json& body, msg::BranchCreate* out) {
  PF_ASSIGN_OR_RETURN(out->tokens, get_opt_tokens(body, "tokens"));
  PF_ASSIGN_OR_RETURN(out->ns, get_opt_namespace(body, "namespace"));
  return Status::ok();
}

template <>
Status from_json<Op::kBranchFree>(const Json& body, msg::BranchTarget* out) {
  return branch_target(body, out);
}

template <>
Status from_json<Op::kBranchInfo>(const Json& body, msg::BranchTarget* out) {
  return branch_target(body, out);
}

template <>
Status from_json<Op::kBranches>(const Json&, msg::Empty*) {
  return Status::ok();
}

template <>
Status from_json<Op::kSnapshot>(const Json& body, msg::Snapshot* out) {
  PF_ASSIGN_OR_RETURN(out->head.branch, get_u64(body, "branch"));
  PF_ASSIGN_OR_RETURN(std::optional<std::string> name, get_opt_string(body, "name"));
  out->name = name.value_or(std::string());
  return Status::ok();
}

template <>
Status from_json<Op::kFork>(const Json& body, msg::Fork* out) {
  PF_ASSIGN_OR_RETURN(*out, get_fork_request(body));
  return Status::ok();
}

template <>
Status from_json<Op::kCheckout>(const Json& body, msg::Named* out) {
  return named(body, "cid", out);
}

template <>
Status from_json<Op::kMerge>(const Json& body, msg::Merge* out) {
  PF_ASSIGN_OR_RETURN(out->from, get_source(body, "from"));
  PF_ASSIGN_OR_RETURN(out->into, get_source(body, "into"));
  return Status::ok();
}

template <>
Status from_json<Op::kDiff>(const Json& body, msg::Diff* out) {
  PF_ASSIGN_OR_RETURN(out->a, get_source(body, "a"));
  PF_ASSIGN_OR_RETURN(out->b, get_source(body, "b"));
  return Status::ok();
}

template <>
Status from_json<Op::kLog>(const Json& body, msg::Named* out) {
  return named(body, "cid", out);
}

template <>
Status from_json<Op::kManifest>(const Json& body, msg::Named* out) {
  return named(body, "cid", out);
}

template <>
Status from_json<Op::kSnapshots>(const Json&, msg::Empty*) {
  return Status::ok();
}

template <>
Status from_json<Op::kUnpin>(const Json& body, msg::Named* out) {
  return named(body, "cid", out);
}

template <>
Status from_json<Op::kSync>(const Json& body, msg::Named* out) {
  return named(body, "cid", out);
}

template <>
Status from_json<Op::kRefSet>(const Json& body, msg::RefSet* out) {
  PF_ASSIGN_OR_RETURN(out->name, get_string(body, "name"));
  PF_ASSIGN_OR_RETURN(out->cid, get_string(body, "cid"));
  return Status::ok();
}

template <>
Status from_json<Op::kRefGet>(const Json& body, msg::Named* out) {
  return named(body, "name", out);
}

template <>
Status from_json<Op::kRefDelete>(const Json& body, msg::Named* out) {
  return named(body, "name", out);
}

template <>
Status from_json<Op::kRefs>(const Json&, msg::Empty*) {
  return Status::ok();
}

template <>
Status from_json<Op::kPool>(const Json&, msg::Empty*) {
  return Status::ok();
}

template <>
Status from_json<Op::kGc>(const Json& body, msg::Gc* out) {
  PF_ASSIGN_OR_RETURN(bool drop_cache, get_opt_bool(body, "drop_cache", false));
  out->drop_cache = drop_cache ? 1 : 0;
  return Status::ok();
}

template <>
Status from_json<Op::kHealth>(const Json&, msg::Empty*) {
  return Status::ok();
}

}  // namespace pf::ipc::api
