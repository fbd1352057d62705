// HTTP answers (DESIGN §6) from reply messages: one answer_body per reply message.
#include "base/dtype.h"
#include "base/hex.h"
#include "ipc/api_json.h"

namespace pf::ipc::api {
namespace {

Json optional_cid(std::string_view cid) {
  return cid.empty() ? Json(nullptr) : Json(cid);
}

Json geometry_json(const wire::GeometryWire& g) {
  return Json{{"layers", g.layers},
              {"kv_heads", g.kv_heads},
              {"head_dim", g.head_dim},
              {"dtype", std::string(dtype_name(static_cast<DType>(g.dtype)))},
              {"page_tokens", g.page_tokens}};
}

Json branch_json(const msg::BranchInfo& b) {
  Json out{{"branch", b.branch},
           {"n_tokens", b.n_tokens},
           {"n_pages", b.n_pages},
           {"fill_in_last_page", b.fill_in_last_page},
           {"base", b.parents.empty() ? Json(nullptr) : Json(b.parents.front())},
           {"parents", b.parents},
           {"owner", b.owner}};
  // Shown only outside the default namespace, like the manifest's field.
  if (b.ns != wire::Namespace{}) out["namespace"] = hex_string(b.ns.data(), b.ns.size());
  return out;
}

Json ref_json(const msg::RefEntry& r) {
  return Json{{"name", r.name}, {"cid", r.cid}};
}

}  // namespace

std::string answer_body(const msg::Empty&) {
  return std::string();
}

std::string answer_body(const msg::NewBranch& m) {
  return dump(Json{{"branch", m.head.branch},
                   {"n_tokens", m.head.n_tokens},
                   {"reused_tokens", m.head.reused_tokens}});
}

std::string answer_body(const msg::BranchInfo& m) {
  return dump(branch_json(m));
}

std::string answer_body(const msg::Branches& m) {
  Json list = Json::array();
  for (const msg::BranchInfo& b : m.branches) list.push_back(branch_json(b));
  return dump(Json{{"branches", std::move(list)}});
}

std::string answer_body(const msg::SnapshotAnswer& m) {
  return dump(Json{{"cid", msg::cstr(m.head.cid)},
                   {"name", m.name},
                   {"n_tokens", m.head.n_tokens},
                   {"n_pages", m.head.n_pages},
                   {"created", m.head.created != 0}});
}

std::string answer_body(const msg::Forked& m) {
  return dump(Json{{"branches", m.branches}, {"source", optional_cid(msg::cstr(m.head.source))}});
}

std::string answer_body(const msg::CheckedOut& m) {
  return dump(Json{{"branch", m.head.branch}, {"cid", msg::cstr(m.head.cid)}});
}

std::string answer_body(const msg::Merged& m) {
  return dump(Json{{"outcome", m.fast_forward ? "fast-forward" : "three-way"},
                   {"branch", m.branch},
                   {"cid", m.cid},
                   {"base", optional_cid(m.base)},
                   {"common_tokens", m.common_tokens},
                   {"recompute_tokens", m.recompute_tokens}});
}

std::string answer_body(const msg::Diffed& m) {
  return dump(Json{{"common_tokens", m.common_tokens},
                   {"shared_pages", m.shared_pages},
                   {"a_only_pages", m.a_only_pages},
                   {"b_only_pages", m.b_only_pages}});
}

std::string answer_body(const msg::Log& m) {
  Json out = Json::array();
  for (const msg::LogEntry& e : m.entries) {
    out.push_back(Json{{"cid", e.cid},
                       {"name", e.name},
                       {"parents", e.parents},
                       {"n_tokens", e.n_tokens},
                       {"known", e.known != 0}});
  }
  return dump(Json{{"entries", std::move(out)}});
}

std::string answer_body(const msg::Manifest& m) {
  return m.canonical;
}

std::string answer_body(const msg::Snapshots& m) {
  Json list = Json::array();
  for (const msg::SnapshotEntry& s : m.snapshots) {
    list.push_back(Json{{"cid", s.cid},
                        {"name", s.name},
                        {"n_tokens", s.n_tokens},
                        {"n_pages", s.n_pages},
                        {"parents", s.parents}});
  }
  return dump(Json{{"snapshots", std::move(list)}});
}

std::string answer_body(const msg::RefEntry& m) {
  return dump(ref_json(m));
}

std::string answer_body(const msg::Refs& m) {
  Json list = Json::array();
  for (const msg::RefEntry& r : m.refs) list.push_back(ref_json(r));
  return dump(Json{{"refs", std::move(list)}});
}

std::string answer_body(const msg::PoolAnswer& m) {
  return dump(Json{{"backend", m.backend},
                   {"device", m.device},
                   {"geometry", geometry_json(m.geometry)},
                   {"page_bytes", m.page_bytes},
                   {"chunk_bytes", m.chunk_bytes},
                   {"chunks", m.chunks},
                   {"epoch", m.epoch},
                   {"capacity_pages", m.capacity_pages},
                   {"mapped_pages", m.mapped_pages},
                   {"used_pages", m.used_pages},
                   {"free_pages", m.free_pages},
                   {"exclusive_pages", m.exclusive_pages},
                   {"sealed_pages", m.sealed_pages},
                   {"shared_pages", m.shared_pages},
                   {"cached_pages", m.cached_pages},
                   {"branches", m.branches},
                   {"snapshots", m.snapshots}});
}

std::string answer_body(const msg::GcAnswer& m) {
  return dump(Json{{"evicted_pages", m.evicted_pages}, {"released_chunks", m.released_chunks}});
}

std::string answer_body(const msg::Health& m) {
  return dump(
      Json{{"status", m.status},
           {"version", m.version},
           {"backend", m.backend},
           {"device", m.device},
           {"protocol", std::to_string(m.protocol_major) + "." + std::to_string(m.protocol_minor)},
           {"boot_epoch", m.boot_epoch}});
}

}  // namespace pf::ipc::api
