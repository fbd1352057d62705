// The client commands of the CLI (docs/cli.md). Branches a command creates (branch create,
// fork, checkout, merge) are detached before it exits: a CLI process's lease ends with it,
// and a branch that died with it would be useless.
#include <charconv>
#include <cstdio>
#include <iostream>
#include <string>

#include "shims/cli/cli.h"

namespace pf::cli {

// --- helpers ----------------------------------------------------------------------------

std::string Args::next(const char* what) {
  if (empty()) throw UsageError(std::string("missing ") + what);
  return args_[at_++];
}

bool Args::take_option(const std::string& flag, std::string* value) {
  for (std::size_t i = at_; i < args_.size(); ++i) {
    if (args_[i] == flag) {
      if (i + 1 >= args_.size()) throw UsageError(flag + " needs a value");
      *value = args_[i + 1];
      args_.erase(args_.begin() + static_cast<std::ptrdiff_t>(i),
                  args_.begin() + static_cast<std::ptrdiff_t>(i) + 2);
      return true;
    }
    if (args_[i].starts_with(flag + "=")) {
      *value = args_[i].substr(flag.size() + 1);
      args_.erase(args_.begin() + static_cast<std::ptrdiff_t>(i));
      return true;
    }
  }
  return false;
}

bool Args::take_flag(const std::string& flag) {
  for (std::size_t i = at_; i < args_.size(); ++i) {
    if (args_[i] == flag) {
      args_.erase(args_.begin() + static_cast<std::ptrdiff_t>(i));
      return true;
    }
  }
  return false;
}

void Args::finish() const {
  if (!empty()) throw UsageError("unexpected argument '" + args_[at_] + "'");
}

std::uint64_t parse_u64(const std::string& text, const char* what) {
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    throw UsageError(std::string(what) + " must be a non-negative integer, got '" + text + "'");
  }
  return v;
}

std::uint32_t parse_u32(const std::string& text, const char* what) {
  const std::uint64_t v = parse_u64(text, what);
  if (v > UINT32_MAX) throw UsageError(std::string(what) + " is out of range: " + text);
  return static_cast<std::uint32_t>(v);
}

namespace {
bool all_digits(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}
}  // namespace

processfork::Source parse_source(const std::string& text) {
  if (text.starts_with("branch:"))
    return processfork::Source(parse_u64(text.substr(7), "branch id"));
  if (text.starts_with("ref:")) {
    if (text.size() == 4) throw UsageError("empty ref name in '" + text + "'");
    return processfork::Source(text.substr(4));
  }
  if (all_digits(text)) return processfork::Source(parse_u64(text, "branch id"));
  if (text.empty()) throw UsageError("empty source");
  return processfork::Source(text);
}

processfork::Client connect(const GlobalOptions& g) {
  processfork::ConnectOptions options;
  options.socket_path = g.socket;
  options.timeout_ms = g.timeout_ms;
  options.attach = false;  // no command touches page bytes
  return processfork::Client(options);
}

void print_json(const Json& j) {
  std::string text = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  text.push_back('\n');
  std::fwrite(text.data(), 1, text.size(), stdout);
}

namespace {

Json parse_answer(const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded()) throw std::runtime_error("the daemon's answer is not JSON: " + text);
  return j;
}

std::string str(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string human_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string dtype_name(std::uint32_t d) {
  switch (d) {
    case PF_DTYPE_BF16:
      return "bf16";
    case PF_DTYPE_FP16:
      return "fp16";
    case PF_DTYPE_FP32:
      return "fp32";
    case PF_DTYPE_FP8_E4M3:
      return "fp8_e4m3";
    case PF_DTYPE_FP8_E5M2:
      return "fp8_e5m2";
  }
  return "unknown";
}

std::string join_ids(const Json& list) {
  std::string out;
  for (const Json& v : list) {
    if (!out.empty()) out += ' ';
    out += v.is_string() ? v.get<std::string>() : v.dump();
  }
  return out;
}

}  // namespace

// --- status -------------------------------------------------------------------------------

int cmd_status(const GlobalOptions& g, Args& a) {
  a.finish();
  processfork::Client client = connect(g);
  const pf_pool_info info = client.pool();
  const Json health = parse_answer(client.health());
  const Json pool = parse_answer(client.pool_json());
  if (g.json) {
    print_json(Json{{"daemon_pid", info.daemon_pid},
                    {"protocol", std::to_string(info.protocol_major) + "." +
                                     std::to_string(info.protocol_minor)},
                    {"lease", info.lease},
                    {"health", health},
                    {"pool", pool}});
    return kExitOk;
  }
  std::printf("daemon     pid %u, version %s, protocol %u.%u, status %s\n", info.daemon_pid,
              str(health, "version").c_str(), info.protocol_major, info.protocol_minor,
              str(health, "status").c_str());
  std::printf("device     %s (backend %s)\n", info.device, info.backend);
  std::printf(
      "geometry   layers=%u kv_heads=%u head_dim=%u dtype=%s page_tokens=%u (%s per page)\n",
      info.layers, info.kv_heads, info.head_dim, dtype_name(info.dtype).c_str(), info.page_tokens,
      human_bytes(info.page_bytes).c_str());
  const auto u = [&](const char* k) { return pool.value(k, std::uint64_t{0}); };
  std::printf("pool       %llu of %llu pages used (%s of %s); %llu shared, %llu cached\n",
              static_cast<unsigned long long>(u("used_pages")),
              static_cast<unsigned long long>(u("capacity_pages")),
              human_bytes(u("used_pages") * info.page_bytes).c_str(),
              human_bytes(u("capacity_pages") * info.page_bytes).c_str(),
              static_cast<unsigned long long>(u("shared_pages")),
              static_cast<unsigned long long>(u("cached_pages")));
  std::printf("chunks     %llu mapped x %s\n", static_cast<unsigned long long>(u("chunks")),
              human_bytes(info.chunk_bytes).c_str());
  std::printf("objects    %llu branches, %llu snapshots\n",
              static_cast<unsigned long long>(u("branches")),
              static_cast<unsigned long long>(u("snapshots")));
  return kExitOk;
}

// --- branch -------------------------------------------------------------------------------

int cmd_branch(const GlobalOptions& g, Args& a) {
  const std::string sub = a.next("branch subcommand (create, show, delete, list)");
  if (sub == "create") {
    std::vector<std::uint32_t> tokens;
    while (!a.empty()) tokens.push_back(parse_u32(a.next("token"), "token"));
    processfork::Client client = connect(g);
    processfork::NewBranch b = client.branch(tokens);
    const pf_branch_id id = b.branch.detach();
    if (g.json) {
      print_json(Json{{"branch", id},
                      {"n_tokens", b.n_tokens},
                      {"reused_tokens", b.reused_tokens},
                      {"detached", true}});
    } else {
      std::printf("branch %llu (detached): %llu tokens, %llu reused from the prefix cache\n",
                  static_cast<unsigned long long>(id), static_cast<unsigned long long>(b.n_tokens),
                  static_cast<unsigned long long>(b.reused_tokens));
    }
    return kExitOk;
  }
  if (sub == "show") {
    const bool with_tokens = a.take_flag("--tokens");
    const std::uint64_t id = parse_u64(a.next("branch id"), "branch id");
    a.finish();
    processfork::Client client = connect(g);
    processfork::Branch handle = client.adopt(id);
    processfork::View v;
    try {
      v = handle.view(with_tokens);
    } catch (...) {
      handle.release();  // only looking: never free it
      throw;
    }
    handle.release();
    if (g.json) {
      Json j = {{"branch", v.info.branch},
                {"owner", v.info.owner},
                {"n_tokens", v.info.n_tokens},
                {"n_pages", v.info.n_pages},
                {"fill_in_last_page", v.info.fill_in_last_page},
                {"pages", v.pages}};
      if (with_tokens) j["tokens"] = v.tokens;
      print_json(j);
      return kExitOk;
    }
    std::printf("branch %llu: %llu tokens in %llu pages (%u in the last), %s\n",
                static_cast<unsigned long long>(v.info.branch),
                static_cast<unsigned long long>(v.info.n_tokens),
                static_cast<unsigned long long>(v.info.n_pages), v.info.fill_in_last_page,
                v.info.owner == 0 ? "detached"
                                  : ("owned by lease " + std::to_string(v.info.owner)).c_str());
    std::printf("pages      %s\n", join_ids(Json(v.pages)).c_str());
    if (with_tokens) std::printf("tokens     %s\n", join_ids(Json(v.tokens)).c_str());
    return kExitOk;
  }
  if (sub == "delete") {
    const std::uint64_t id = parse_u64(a.next("branch id"), "branch id");
    a.finish();
    processfork::Client client = connect(g);
    client.adopt(id).free();
    if (g.json) {
      print_json(Json{{"deleted", id}});
    } else {
      std::printf("deleted branch %llu\n", static_cast<unsigned long long>(id));
    }
    return kExitOk;
  }
  if (sub == "list") {
    a.finish();
    processfork::Client client = connect(g);
    const Json list = parse_answer(client.branches());
    if (g.json) {
      print_json(list);
      return kExitOk;
    }
    std::printf("%-10s %10s %8s %10s  %s\n", "BRANCH", "TOKENS", "PAGES", "OWNER", "BASE");
    for (const Json& b : list.value("branches", Json::array())) {
      const std::uint64_t owner = b.value("owner", std::uint64_t{0});
      std::printf("%-10llu %10llu %8llu %10s  %s\n",
                  static_cast<unsigned long long>(b.value("branch", std::uint64_t{0})),
                  static_cast<unsigned long long>(b.value("n_tokens", std::uint64_t{0})),
                  static_cast<unsigned long long>(b.value("n_pages", std::uint64_t{0})),
                  owner == 0 ? "detached" : std::to_string(owner).c_str(),
                  str(b, "base").empty() ? "-" : str(b, "base").c_str());
    }
    return kExitOk;
  }
  throw UsageError("unknown branch subcommand '" + sub + "' (create, show, delete, list)");
}

// --- snapshots ------------------------------------------------------------------------------

int cmd_snapshot(const GlobalOptions& g, Args& a) {
  std::string name;
  a.take_option("--name", &name);
  const std::uint64_t id = parse_u64(a.next("branch id"), "branch id");
  a.finish();
  processfork::Client client = connect(g);
  processfork::Branch handle = client.adopt(id);
  processfork::Snapshot s;
  try {
    s = handle.snapshot(name);
  } catch (...) {
    handle.release();
    throw;
  }
  handle.release();
  if (g.json) {
    print_json(Json{{"cid", s.cid},
                    {"name", name},
                    {"n_tokens", s.n_tokens},
                    {"n_pages", s.n_pages},
                    {"created", s.created}});
  } else {
    std::printf("%s  (%llu tokens, %llu pages%s)\n", s.cid.c_str(),
                static_cast<unsigned long long>(s.n_tokens),
                static_cast<unsigned long long>(s.n_pages),
                s.created ? "" : "; an identical snapshot existed");
  }
  return kExitOk;
}

int cmd_snapshots(const GlobalOptions& g, Args& a) {
  a.finish();
  processfork::Client client = connect(g);
  const Json list = parse_answer(client.snapshots());
  if (g.json) {
    print_json(list);
    return kExitOk;
  }
  for (const Json& s : list.value("snapshots", Json::array())) {
    std::printf("%s  %8llu tokens  %6llu pages  %s\n", str(s, "cid").c_str(),
                static_cast<unsigned long long>(s.value("n_tokens", std::uint64_t{0})),
                static_cast<unsigned long long>(s.value("n_pages", std::uint64_t{0})),
                str(s, "name").c_str());
  }
  return kExitOk;
}

int cmd_unpin(const GlobalOptions& g, Args& a) {
  const std::string cid = a.next("CID");
  a.finish();
  processfork::Client client = connect(g);
  client.unpin(cid);
  if (g.json) {
    print_json(Json{{"unpinned", cid}});
  } else {
    std::printf("unpinned %s\n", cid.c_str());
  }
  return kExitOk;
}

// --- fork, checkout, merge ---------------------------------------------------------------

int cmd_fork(const GlobalOptions& g, Args& a) {
  std::string n_text;
  if (!a.take_option("-n", &n_text)) throw UsageError("fork needs -n N");
  const std::uint32_t n = parse_u32(n_text, "-n");
  const processfork::Source source = parse_source(a.next("source (CID, ref or branch)"));
  a.finish();
  processfork::Client client = connect(g);
  std::string cid;
  std::vector<processfork::Branch> children = client.fork(source, n, &cid);
  Json ids = Json::array();
  for (auto& child : children) ids.push_back(child.detach());
  if (g.json) {
    print_json(Json{{"branches", ids},
                    {"source", cid.empty() ? Json(nullptr) : Json(cid)},
                    {"detached", true}});
  } else {
    std::printf("forked %u detached branches%s%s: %s\n", n, cid.empty() ? "" : " from ",
                cid.c_str(), join_ids(ids).c_str());
  }
  return kExitOk;
}

int cmd_checkout(const GlobalOptions& g, Args& a) {
  const std::string name = a.next("CID or ref");
  a.finish();
  processfork::Client client = connect(g);
  std::string cid;
  processfork::Branch b = client.checkout(name, &cid);
  const pf_branch_id id = b.detach();
  if (g.json) {
    print_json(Json{{"branch", id}, {"cid", cid}, {"detached", true}});
  } else {
    std::printf("branch %llu (detached) at %s\n", static_cast<unsigned long long>(id), cid.c_str());
  }
  return kExitOk;
}

int cmd_merge(const GlobalOptions& g, Args& a) {
  const processfork::Source from = parse_source(a.next("FROM"));
  const processfork::Source into = parse_source(a.next("INTO"));
  a.finish();
  processfork::Client client = connect(g);
  processfork::Merge m = client.merge(from, into);
  const pf_branch_id id = m.branch.detach();
  if (g.json) {
    print_json(Json{{"outcome", m.fast_forward ? "fast-forward" : "three-way"},
                    {"branch", id},
                    {"cid", m.cid},
                    {"base", m.base.empty() ? Json(nullptr) : Json(m.base)},
                    {"common_tokens", m.common_tokens},
                    {"recompute_tokens", m.recompute_tokens},
                    {"detached", true}});
    return kExitOk;
  }
  std::printf("%s: branch %llu (detached) at %s\n",
              m.fast_forward ? "fast-forward" : "three-way merge",
              static_cast<unsigned long long>(id), m.cid.c_str());
  std::printf("base       %s\n", m.base.empty() ? "(no common ancestor)" : m.base.c_str());
  std::printf("common     %llu tokens\n", static_cast<unsigned long long>(m.common_tokens));
  std::printf("recompute  %zu tokens%s%s\n", m.recompute_tokens.size(),
              m.recompute_tokens.empty() ? "" : ": ", join_ids(Json(m.recompute_tokens)).c_str());
  return kExitOk;
}

// --- history -------------------------------------------------------------------------------

int cmd_log(const GlobalOptions& g, Args& a) {
  const std::string name = a.next("CID or ref");
  a.finish();
  processfork::Client client = connect(g);
  const Json log = parse_answer(client.log(name));
  if (g.json) {
    print_json(log);
    return kExitOk;
  }
  for (const Json& e : log.value("entries", Json::array())) {
    const bool known = e.value("known", true);
    std::printf("%s  %8llu tokens  %s%s%s\n", str(e, "cid").c_str(),
                static_cast<unsigned long long>(e.value("n_tokens", std::uint64_t{0})),
                known ? "" : "(unpinned) ", str(e, "name").c_str(),
                e.value("parents", Json::array()).empty()
                    ? ""
                    : ("  parents: " + join_ids(e["parents"])).c_str());
  }
  return kExitOk;
}

int cmd_diff(const GlobalOptions& g, Args& a) {
  const processfork::Source x = parse_source(a.next("A"));
  const processfork::Source y = parse_source(a.next("B"));
  a.finish();
  processfork::Client client = connect(g);
  const Json d = parse_answer(client.diff(x, y));
  if (g.json) {
    print_json(d);
    return kExitOk;
  }
  std::printf("common tokens  %llu\n",
              static_cast<unsigned long long>(d.value("common_tokens", std::uint64_t{0})));
  for (const char* key : {"shared_pages", "a_only_pages", "b_only_pages"}) {
    const Json list = d.value(key, Json::array());
    std::printf("%-14s %zu%s%s\n", key, list.size(), list.empty() ? "" : ": ",
                join_ids(list).c_str());
  }
  return kExitOk;
}

// --- refs ---------------------------------------------------------------------------------

int cmd_refs(const GlobalOptions& g, Args& a) {
  if (a.empty()) {
    processfork::Client client = connect(g);
    const Json refs = parse_answer(client.refs());
    if (g.json) {
      print_json(refs);
      return kExitOk;
    }
    for (const Json& r : refs.value("refs", Json::array())) {
      std::printf("%-24s %s\n", str(r, "name").c_str(), str(r, "cid").c_str());
    }
    return kExitOk;
  }
  const std::string sub = a.next("refs subcommand");
  if (sub == "set") {
    const std::string name = a.next("ref name");
    const std::string target = a.next("CID or ref");
    a.finish();
    processfork::Client client = connect(g);
    client.ref_set(name, target);
    const std::string cid = client.ref_get(name);
    if (g.json) {
      print_json(Json{{"name", name}, {"cid", cid}});
    } else {
      std::printf("%s -> %s\n", name.c_str(), cid.c_str());
    }
    return kExitOk;
  }
  if (sub == "get") {
    const std::string name = a.next("ref name");
    a.finish();
    processfork::Client client = connect(g);
    const std::string cid = client.ref_get(name);
    if (g.json) {
      print_json(Json{{"name", name}, {"cid", cid}});
    } else {
      std::printf("%s\n", cid.c_str());
    }
    return kExitOk;
  }
  if (sub == "delete") {
    const std::string name = a.next("ref name");
    a.finish();
    processfork::Client client = connect(g);
    client.ref_delete(name);
    if (g.json) {
      print_json(Json{{"deleted", name}});
    } else {
      std::printf("deleted ref %s\n", name.c_str());
    }
    return kExitOk;
  }
  throw UsageError("unknown refs subcommand '" + sub + "' (set, get, delete)");
}

// --- gc -----------------------------------------------------------------------------------

int cmd_gc(const GlobalOptions& g, Args& a) {
  const bool drop_cache = a.take_flag("--drop-cache");
  a.finish();
  processfork::Client client = connect(g);
  const processfork::GcResult r = client.gc(drop_cache);
  if (g.json) {
    print_json(Json{{"evicted_pages", r.evicted_pages}, {"released_chunks", r.released_chunks}});
  } else {
    std::printf("evicted %llu cached pages, released %llu chunks\n",
                static_cast<unsigned long long>(r.evicted_pages),
                static_cast<unsigned long long>(r.released_chunks));
  }
  return kExitOk;
}

}  // namespace pf::cli
