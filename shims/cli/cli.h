// The `processfork` CLI (docs/cli.md): shared pieces of its commands.
//
// DESIGN: every command except `serve` is a client of the daemon through the C++ header
// over libprocessfork (processfork.hpp), exactly what an engine links; `serve` runs the
// daemon itself (pf::ipc::serve_main). Commands print human text by default and one JSON
// document with --json. Failures are exceptions caught once in main(): processfork::Error
// (exit 1, or 3 when the daemon is unreachable) and UsageError (exit 2).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "shims/include/processfork.hpp"

namespace pf::cli {

using Json = nlohmann::json;

enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,       // the daemon (or the library) refused the operation
  kExitUsage = 2,        // bad command line
  kExitUnreachable = 3,  // no daemon at the socket, or it went away
};

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct GlobalOptions {
  std::string socket;  // "" = the library's default
  bool json = false;
  std::uint32_t timeout_ms = 0;
};

// The arguments after the command name, with helpers that throw UsageError.
class Args {
 public:
  explicit Args(std::vector<std::string> args) : args_(std::move(args)) {}
  bool empty() const { return at_ >= args_.size(); }
  std::size_t left() const { return args_.size() - at_; }
  const std::string& peek() const { return args_.at(at_); }
  std::string next(const char* what);
  // Consumes "--flag VALUE" / "--flag=VALUE" anywhere in the remaining arguments.
  bool take_option(const std::string& flag, std::string* value);
  // Consumes a bare "--flag" anywhere in the remaining arguments.
  bool take_flag(const std::string& flag);
  // Throws when anything is left.
  void finish() const;

 private:
  std::vector<std::string> args_;
  std::size_t at_ = 0;
};

std::uint64_t parse_u64(const std::string& text, const char* what);
std::uint32_t parse_u32(const std::string& text, const char* what);
// "12" or "branch:12" is a branch; "ref:NAME" a ref name; anything else a CID or ref name.
processfork::Source parse_source(const std::string& text);

processfork::Client connect(const GlobalOptions& g);
// Prints a JSON document (one line) to stdout.
void print_json(const Json& j);
// A JSON answer of the library (pf_diff, pf_log, ...) as a document; throws on bad text.
Json parse_answer(const std::string& text);
// A string field of an answer ("" when absent or null).
std::string str(const Json& j, const char* key);
std::string human_bytes(std::uint64_t bytes);
std::string dtype_name(std::uint32_t dtype);
// "1, 2, 3" of a JSON list of ids.
std::string join_ids(const Json& list);

int cmd_status(const GlobalOptions& g, Args& a);
int cmd_branch(const GlobalOptions& g, Args& a);
int cmd_snapshot(const GlobalOptions& g, Args& a);
int cmd_snapshots(const GlobalOptions& g, Args& a);
int cmd_unpin(const GlobalOptions& g, Args& a);
int cmd_fork(const GlobalOptions& g, Args& a);
int cmd_checkout(const GlobalOptions& g, Args& a);
int cmd_merge(const GlobalOptions& g, Args& a);
int cmd_log(const GlobalOptions& g, Args& a);
int cmd_diff(const GlobalOptions& g, Args& a);
int cmd_refs(const GlobalOptions& g, Args& a);
int cmd_gc(const GlobalOptions& g, Args& a);
int cmd_bench(const GlobalOptions& g, Args& a);

}  // namespace pf::cli
