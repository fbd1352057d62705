// libprocessfork C ABI (processfork.h): the JSON answers (diff, log, manifest, snapshots,
// refs, health, branches, pool), refs and unpin. The daemon answers in binary; the JSON is
// rendered here by the HTTP port's own renderer (ipc/api_json.h), so both show one shape.
#include <string>

#include "ipc/api_json.h"
#include "shims/lib/abi_support.h"

// The boundary vocabulary (abi_support.h): Status, Result, Code, Op, the checks.
using namespace pf::abi;  // NOLINT(google-build-using-namespace)

namespace {

pf::msg::Named named(std::string_view name) {
  pf::msg::Named request;
  request.name = name;
  return request;
}

// Runs op and renders its reply as the HTTP port would.
template <Op op>
Result<std::string> answer(pf_client* client, pf::ipc::RequestOf<op> request) {
  PF_ASSIGN_OR_RETURN(auto reply, client->conn->request<op>(std::move(request)));
  return pf::ipc::api::answer_body(reply);
}

}  // namespace

extern "C" {

pf_result pf_diff(pf_client* client, const pf_source* a, const pf_source* b, char* json,
                  size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    pf::msg::Diff request;
    PF_ASSIGN_OR_RETURN(request.a, source_arg(a, "a"));
    PF_ASSIGN_OR_RETURN(request.b, source_arg(b, "b"));
    return deliver_json(answer<Op::kDiff>(client, std::move(request)), json, capacity, needed);
  });
}

pf_result pf_log(pf_client* client, const char* cid_or_ref, char* json, size_t capacity,
                 size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    PF_ASSIGN_OR_RETURN(std::string_view name, text_arg(cid_or_ref, "cid_or_ref"));
    return deliver_json(answer<Op::kLog>(client, named(name)), json, capacity, needed);
  });
}

pf_result pf_manifest(pf_client* client, const char* cid_or_ref, char* json, size_t capacity,
                      size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    PF_ASSIGN_OR_RETURN(std::string_view name, text_arg(cid_or_ref, "cid_or_ref"));
    return deliver_json(answer<Op::kManifest>(client, named(name)), json, capacity, needed);
  });
}

pf_result pf_snapshots(pf_client* client, char* json, size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    return deliver_json(answer<Op::kSnapshots>(client, {}), json, capacity, needed);
  });
}

pf_result pf_refs_list(pf_client* client, char* json, size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    return deliver_json(answer<Op::kRefs>(client, {}), json, capacity, needed);
  });
}

pf_result pf_health(pf_client* client, char* json, size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    return deliver_json(answer<Op::kHealth>(client, {}), json, capacity, needed);
  });
}

pf_result pf_branches(pf_client* client, char* json, size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    return deliver_json(answer<Op::kBranches>(client, {}), json, capacity, needed);
  });
}

pf_result pf_pool_json(pf_client* client, char* json, size_t capacity, size_t* needed) {
  return boundary([&]() -> Status {
    PF_TRY(check_json_args(client, json, capacity));
    return deliver_json(answer<Op::kPool>(client, {}), json, capacity, needed);
  });
}

pf_result pf_ref_set(pf_client* client, const char* name, const char* cid_or_ref) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(std::string_view n, text_arg(name, "name"));
    PF_ASSIGN_OR_RETURN(std::string_view c, text_arg(cid_or_ref, "cid_or_ref"));
    pf::msg::RefSet request;
    request.name = n;
    request.cid = c;
    return client->conn->request<Op::kRefSet>(std::move(request)).status();
  });
}

pf_result pf_ref_get(pf_client* client, const char* name, char* cid, size_t cid_capacity) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(std::string_view n, text_arg(name, "name"));
    PF_TRY(check_out(cid, "cid"));
    PF_TRY(check_cid_buffer(cid, cid_capacity, "cid"));
    PF_ASSIGN_OR_RETURN(auto ref, client->conn->request<Op::kRefGet>(named(n)));
    copy_cid(ref.cid, cid);
    return Status::ok();
  });
}

pf_result pf_ref_delete(pf_client* client, const char* name) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(std::string_view n, text_arg(name, "name"));
    return client->conn->request<Op::kRefDelete>(named(n)).status();
  });
}

pf_result pf_unpin(pf_client* client, const char* cid) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(std::string_view c, text_arg(cid, "cid"));
    return client->conn->request<Op::kUnpin>(named(c)).status();
  });
}

pf_result pf_wait_durable(pf_client* client, const char* cid_or_ref) {
  return boundary([&]() -> Status {
    PF_TRY(check_client(client));
    PF_ASSIGN_OR_RETURN(std::string_view c, text_arg(cid_or_ref, "cid"));
    return client->conn->request<Op::kSync>(named(c)).status();
  });
}

}  // extern "C"
