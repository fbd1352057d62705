// processfork: the git-like command line of ProcessFork (docs/cli.md).
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "ipc/daemon.h"
#include "shims/cli/cli.h"

namespace {

using pf::cli::Args;
using pf::cli::GlobalOptions;
using pf::cli::UsageError;

constexpr const char* kUsage =
    R"(usage: processfork [--socket PATH] [--json] [--timeout MS] <command> [args]

commands:
  serve [daemon flags]            run the daemon (processfork serve --help)
  status                          daemon, device, geometry and pool usage
  branch create [--namespace HEX] [TOKEN...]
                                  new detached branch reusing cached pages for TOKENs
                                  (in prefix-index namespace HEX, 64 hex digits)
  branch show ID [--tokens]       a branch's length, pages (and tokens)
  branch delete ID                free a branch
  branch list                     every branch of the daemon
  snapshot BRANCH [--name N] [--sync]
                                  seal and pin a branch; prints its CID (--sync: return
                                  once it is durable in the daemon's store)
  snapshots                       every snapshot
  unpin CID                       drop a snapshot's pin
  fork SOURCE -n N                N detached branches at SOURCE (CID, ref or branch)
  checkout CID|REF                a detached branch at a snapshot
  merge FROM INTO                 merge two sources; prints the outcome and what to prefill
  log CID|REF                     ancestry of a snapshot
  diff A B                        common prefix and page sharing of two sources
  refs                            list refs
  refs set NAME CID|REF           point a ref at a snapshot
  refs get NAME                   the CID a ref names
  refs delete NAME                delete a ref
  gc [--drop-cache]               free unheld pages, give empty chunks back
  bench [--iterations N] [--tokens T] [-n N]
                                  fork / checkout round-trip latency over the socket

SOURCE: a branch id ("12" or "branch:12"), a CID ("sha256:..."), or a ref ("ref:NAME" or NAME).
exit codes: 0 ok, 1 operation failed, 2 usage, 3 daemon unreachable.
)";

int run(const std::string& command, const GlobalOptions& g, Args& args) {
  using namespace pf::cli;
  if (command == "status") return cmd_status(g, args);
  if (command == "branch") return cmd_branch(g, args);
  if (command == "snapshot") return cmd_snapshot(g, args);
  if (command == "snapshots") return cmd_snapshots(g, args);
  if (command == "unpin") return cmd_unpin(g, args);
  if (command == "fork") return cmd_fork(g, args);
  if (command == "checkout") return cmd_checkout(g, args);
  if (command == "merge") return cmd_merge(g, args);
  if (command == "log") return cmd_log(g, args);
  if (command == "diff") return cmd_diff(g, args);
  if (command == "refs") return cmd_refs(g, args);
  if (command == "gc") return cmd_gc(g, args);
  if (command == "bench") return cmd_bench(g, args);
  throw UsageError("unknown command '" + command + "'");
}

int serve(int argc, char** argv, int serve_at, const GlobalOptions& g) {
  // The daemon's parser takes the flags after "serve"; a global --socket given before the
  // command becomes the daemon's --socket (a later --socket flag still wins).
  std::vector<char*> forwarded;
  std::string socket_flag = "--socket=" + g.socket;
  if (!g.socket.empty()) forwarded.push_back(socket_flag.data());
  forwarded.insert(forwarded.end(), argv + serve_at + 1, argv + argc);
  forwarded.push_back(nullptr);
  return pf::ipc::serve_main(static_cast<int>(forwarded.size() - 1), forwarded.data());
}

}  // namespace

int main(int argc, char** argv) {
  // A daemon that went away must show as an error, not kill the CLI (the library sends
  // with MSG_NOSIGNAL already; this covers anything else writing to a closed pipe).
  std::signal(SIGPIPE, SIG_IGN);
  GlobalOptions g;
  std::string command;
  std::vector<std::string> rest;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&](const std::string& flag) -> std::string {
        if (arg.size() > flag.size() && arg.compare(0, flag.size() + 1, flag + "=") == 0) {
          return arg.substr(flag.size() + 1);
        }
        if (i + 1 >= argc) throw UsageError(flag + " needs a value");
        return argv[++i];
      };
      if (command.empty() || command != "serve") {
        if (arg == "--json") {
          g.json = true;
          continue;
        }
        if (arg == "--socket" || arg.starts_with("--socket=")) {
          g.socket = value("--socket");
          continue;
        }
        if (arg == "--timeout" || arg.starts_with("--timeout=")) {
          g.timeout_ms = pf::cli::parse_u32(value("--timeout"), "--timeout");
          continue;
        }
        if (arg == "-h" || arg == "--help" || (command.empty() && arg == "help")) {
          std::fputs(kUsage, stdout);
          return pf::cli::kExitOk;
        }
        if (command.empty() && arg == "--version") {
          std::printf("processfork %s (ABI %u.%u)\n", pf_version_string(), pf_abi_version() >> 16,
                      pf_abi_version() & 0xffffu);
          return pf::cli::kExitOk;
        }
      }
      if (command.empty()) {
        if (arg.starts_with("-") && arg.size() > 1) {
          throw UsageError("unknown option '" + arg + "'");
        }
        command = arg;
        if (command == "serve") return serve(argc, argv, i, g);
        continue;
      }
      rest.push_back(arg);
    }
    if (command.empty()) throw UsageError("no command given");
    Args args(std::move(rest));
    return run(command, g, args);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "processfork: %s\n\n%s", e.what(), kUsage);
    return pf::cli::kExitUsage;
  } catch (const processfork::Error& e) {
    const bool unreachable = e.code() == PF_UNAVAILABLE;
    if (g.json) {
      pf::cli::print_json(pf::cli::Json{
          {"error",
           {{"code", pf_result_string(e.code())}, {"message", pf_last_error_message(nullptr)}}}});
    }
    std::fprintf(stderr, "processfork: error: %s\n", e.what());
    return unreachable ? pf::cli::kExitUnreachable : pf::cli::kExitFailed;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "processfork: internal error: %s\n", e.what());
    return pf::cli::kExitFailed;
  }
}
