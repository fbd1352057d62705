#include "runtime/manifest.h"

#include <nlohmann/json.hpp>

#include "runtime/prefix_index.h"
#include "runtime/sha256.h"

namespace pf::rt {

namespace {

void put_uint(std::string& s, std::uint64_t v) {
  s += std::to_string(v);
}

template <typename T>
void put_uint_array(std::string& s, const std::vector<T>& v) {
  s += '[';
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    put_uint(s, v[i]);
  }
  s += ']';
}

Result<std::string> json_string(const std::string& v) {
  try {
    return nlohmann::json(v).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    return PF_ERROR(Code::kInvalidArgument, std::string("string is not valid UTF-8: ") + e.what());
  }
}

bool is_hex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

bool is_cid(std::string_view s) {
  return s.size() == 71 && s.substr(0, 7) == "sha256:" && is_hex64(s.substr(7));
}

Result<std::string> canonical_json(const Manifest& m) {
  if (m.name.size() > kMaxNameBytes) {
    return PF_ERROR(Code::kInvalidArgument,
                    "snapshot name longer than " + std::to_string(kMaxNameBytes) + " bytes");
  }
  PF_ASSIGN_OR_RETURN(std::string name, json_string(m.name));
  std::string s;
  s.reserve(256 + m.tokens.size() * 7 + m.pages.size() * 150);
  // Keys in byte order: dtype, format_version, head_dim, layout, logical_seqs, n_heads,
  // n_layers, name, namespace (only when not default), page_size_tokens, pages, parents,
  // tokens.
  s += "{\"dtype\":\"";
  s += dtype_name(m.geometry.dtype);
  s += "\",\"format_version\":";
  put_uint(s, m.format_version);
  s += ",\"head_dim\":";
  put_uint(s, m.geometry.head_dim);
  s += ",\"layout\":";
  PF_ASSIGN_OR_RETURN(std::string layout, json_string(m.layout));
  s += layout;
  s += ",\"logical_seqs\":[";
  for (std::size_t i = 0; i < m.logical_seqs.size(); ++i) {
    const LogicalSeq& q = m.logical_seqs[i];
    if (i) s += ',';
    s += "{\"fill_in_last_page\":";
    put_uint(s, q.fill_in_last_page);
    s += ",\"id\":";
    put_uint(s, q.id);
    s += ",\"page_ixs\":";
    put_uint_array(s, q.page_ixs);
    s += '}';
  }
  s += "],\"n_heads\":";
  put_uint(s, m.geometry.kv_heads);
  s += ",\"n_layers\":";
  put_uint(s, m.geometry.layers);
  s += ",\"name\":";
  s += name;
  if (!is_default_namespace(m.ns)) {
    s += ",\"namespace\":\"";
    s += to_hex(m.ns);
    s += '"';
  }
  s += ",\"page_size_tokens\":";
  put_uint(s, m.geometry.page_tokens);
  s += ",\"pages\":[";
  for (std::size_t i = 0; i < m.pages.size(); ++i) {
    if (i) s += ',';
    s += "{\"ix\":";
    put_uint(s, i);
    s += ",\"k\":\"";
    s += m.pages[i].k;
    s += "\",\"v\":\"";
    s += m.pages[i].v;
    s += "\"}";
  }
  s += "],\"parents\":[";
  for (std::size_t i = 0; i < m.parents.size(); ++i) {
    if (i) s += ',';
    s += '"';
    s += m.parents[i];
    s += '"';
  }
  s += "],\"tokens\":";
  put_uint_array(s, m.tokens);
  s += '}';
  return s;
}

std::string cid_of(std::string_view canonical_bytes) {
  return "sha256:" + to_hex(sha256(canonical_bytes.data(), canonical_bytes.size()));
}

namespace {

using nlohmann::json;

Status bad(const std::string& what) {
  return Status(Code::kInvalidArgument, "invalid manifest: " + what);
}

Result<std::uint64_t> get_uint(const json& j, const char* key, std::uint64_t max) {
  auto it = j.find(key);
  if (it == j.end()) return bad(std::string("missing '") + key + "'");
  if (!it->is_number_unsigned())
    return bad(std::string("'") + key + "' is not a non-negative integer");
  const std::uint64_t v = it->get<std::uint64_t>();
  if (v > max) return bad(std::string("'") + key + "' out of range");
  return v;
}

}  // namespace

Result<ParsedManifest> parse_manifest(std::string_view bytes) {
  json j;
  try {
    j = json::parse(bytes.begin(), bytes.end());
  } catch (const json::exception& e) {
    return PF_ERROR(Code::kInvalidArgument, std::string("manifest is not JSON: ") + e.what());
  }
  if (!j.is_object()) return PF_ERROR(Code::kInvalidArgument, "manifest is not a JSON object");
  static const char* kKeys[] = {
      "dtype",    "format_version", "head_dim",         "layout", "logical_seqs", "n_heads",
      "n_layers", "name",           "page_size_tokens", "pages",  "parents",      "tokens"};
  const bool has_ns = j.contains("namespace");  // optional: absent in the default namespace
  if (j.size() != std::size(kKeys) + (has_ns ? 1 : 0)) {
    return PF_ERROR(Code::kInvalidArgument,
                    "manifest has " + std::to_string(j.size()) + " fields, expected " +
                        std::to_string(std::size(kKeys)) + " (plus an optional 'namespace')");
  }
  for (const char* k : kKeys) {
    if (!j.contains(k))
      return PF_ERROR(Code::kInvalidArgument, std::string("manifest lacks '") + k + "'");
  }
  ParsedManifest out;
  Manifest& m = out.manifest;
  constexpr std::uint64_t k32 = 0xFFFFFFFFull;
  PF_ASSIGN_OR_RETURN(std::uint64_t fv, get_uint(j, "format_version", k32));
  if (fv != kManifestFormatVersion) {
    return PF_ERROR(Code::kInvalidArgument,
                    "unsupported manifest format_version " + std::to_string(fv));
  }
  m.format_version = static_cast<std::uint32_t>(fv);
  PF_ASSIGN_OR_RETURN(std::uint64_t layers, get_uint(j, "n_layers", k32));
  PF_ASSIGN_OR_RETURN(std::uint64_t heads, get_uint(j, "n_heads", k32));
  PF_ASSIGN_OR_RETURN(std::uint64_t dim, get_uint(j, "head_dim", k32));
  PF_ASSIGN_OR_RETURN(std::uint64_t pt, get_uint(j, "page_size_tokens", k32));
  m.geometry.layers = static_cast<std::uint32_t>(layers);
  m.geometry.kv_heads = static_cast<std::uint32_t>(heads);
  m.geometry.head_dim = static_cast<std::uint32_t>(dim);
  m.geometry.page_tokens = static_cast<std::uint32_t>(pt);
  if (!j["dtype"].is_string()) return bad("'dtype' is not a string");
  PF_ASSIGN_OR_RETURN(m.geometry.dtype, parse_dtype(j["dtype"].get<std::string>()));
  PF_TRY(m.geometry.validate());
  if (!j["layout"].is_string()) return bad("'layout' is not a string");
  m.layout = j["layout"].get<std::string>();
  if (m.layout != kManifestLayout) return bad("unsupported layout '" + m.layout + "'");
  if (!j["name"].is_string()) return bad("'name' is not a string");
  m.name = j["name"].get<std::string>();
  if (m.name.size() > kMaxNameBytes) return bad("'name' too long");
  if (has_ns) {
    // A zero namespace is the default one, which is never written: canonical form fails.
    if (!j["namespace"].is_string() || !is_hex64(j["namespace"].get<std::string>()) ||
        !parse_key_hex(j["namespace"].get<std::string>(), &m.ns)) {
      return bad("'namespace' is not 64 lowercase hex digits");
    }
  }
  if (!j["parents"].is_array()) return bad("'parents' is not an array");
  for (const json& p : j["parents"]) {
    if (!p.is_string() || !is_cid(p.get<std::string>())) return bad("a parent is not a CID");
    m.parents.push_back(p.get<std::string>());
  }
  if (!j["tokens"].is_array()) return bad("'tokens' is not an array");
  m.tokens.reserve(j["tokens"].size());
  for (const json& t : j["tokens"]) {
    if (!t.is_number_unsigned() || t.get<std::uint64_t>() > k32)
      return bad("a token is not a uint32");
    m.tokens.push_back(static_cast<Token>(t.get<std::uint64_t>()));
  }
  if (!j["pages"].is_array()) return bad("'pages' is not an array");
  for (const json& p : j["pages"]) {
    if (!p.is_object() || p.size() != 3) return bad("a page is not {ix, k, v}");
    PF_ASSIGN_OR_RETURN(std::uint64_t ix, get_uint(p, "ix", ~0ull));
    if (ix != m.pages.size()) return bad("page ix " + std::to_string(ix) + " out of order");
    if (!p.contains("k") || !p.contains("v") || !p["k"].is_string() || !p["v"].is_string() ||
        !is_hex64(p["k"].get<std::string>()) || !is_hex64(p["v"].get<std::string>())) {
      return bad("page " + std::to_string(ix) + " digests are not 64 lowercase hex digits");
    }
    m.pages.push_back({p["k"].get<std::string>(), p["v"].get<std::string>()});
  }
  if (!j["logical_seqs"].is_array()) return bad("'logical_seqs' is not an array");
  for (const json& q : j["logical_seqs"]) {
    if (!q.is_object() || q.size() != 3 || !q.contains("page_ixs") || !q["page_ixs"].is_array()) {
      return bad("a logical_seq is not {id, page_ixs, fill_in_last_page}");
    }
    LogicalSeq seq;
    PF_ASSIGN_OR_RETURN(seq.id, get_uint(q, "id", ~0ull));
    PF_ASSIGN_OR_RETURN(std::uint64_t fill, get_uint(q, "fill_in_last_page", pt));
    seq.fill_in_last_page = static_cast<std::uint32_t>(fill);
    for (const json& ix : q["page_ixs"]) {
      if (!ix.is_number_unsigned() || ix.get<std::uint64_t>() >= m.pages.size()) {
        return bad("a page_ix is out of range");
      }
      seq.page_ixs.push_back(ix.get<std::uint64_t>());
    }
    if ((seq.page_ixs.empty()) != (seq.fill_in_last_page == 0)) {
      return bad("fill_in_last_page must be 0 exactly when a seq has no pages");
    }
    m.logical_seqs.push_back(std::move(seq));
  }
  if (m.logical_seqs.empty()) {
    if (!m.tokens.empty()) return bad("tokens without a logical_seq");
  } else {
    const LogicalSeq& q = m.logical_seqs[0];
    const std::uint64_t expect =
        q.page_ixs.empty() ? 0 : (q.page_ixs.size() - 1) * pt + q.fill_in_last_page;
    if (m.tokens.size() != expect) {
      return bad("tokens has " + std::to_string(m.tokens.size()) +
                 " entries, logical_seqs[0] holds " + std::to_string(expect));
    }
  }
  PF_ASSIGN_OR_RETURN(std::string canon, canonical_json(m));
  if (canon != bytes) return bad("not in canonical form (sorted keys, no whitespace, integers)");
  out.cid = cid_of(bytes);
  return out;
}

}  // namespace pf::rt
