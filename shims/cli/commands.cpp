// The client commands of the CLI (docs/cli.md): status, branches, snapshots. Branches a command
// creates (branch create, fork, checkout, merge) are detached before it exits: a CLI process's
// lease ends with it, and a branch that died with it would be useless.
#include <cstdio>
#include <iostream>
#include <string>

#include "shims/cli/cli.h"

namespace pf::cli {

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
    std::string ns_hex;
    const bool has_ns = a.take_option("--namespace", &ns_hex);
    processfork::Namespace ns{};
    if (has_ns &&
        (ns_hex.size() != 2 * ns.size() || pf_key_from_hex(ns_hex.c_str(), ns.data()) != PF_OK)) {
      throw UsageError("--namespace must be 64 hex digits, got '" + ns_hex + "'");
    }
    std::vector<std::uint32_t> tokens;
    while (!a.empty()) tokens.push_back(parse_u32(a.next("token"), "token"));
    processfork::Client client = connect(g);
    processfork::NewBranch b = client.branch(tokens, has_ns ? &ns : nullptr);
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
  const bool sync = a.take_flag("--sync");
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
  if (sync) client.wait_durable(s.cid);
  if (g.json) {
    print_json(Json{{"cid", s.cid},
                    {"name", name},
                    {"durable", sync},
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

}  // namespace pf::cli
