// The client commands of the CLI (docs/cli.md): fork, checkout, merge, log, diff, refs, gc.
// Branches a command creates (branch create, fork, checkout, merge) are detached before it exits: a
// CLI process's lease ends with it, and a branch that died with it would be useless.
#include <cstdio>
#include <iostream>
#include <string>

#include "shims/cli/cli.h"

namespace pf::cli {

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
