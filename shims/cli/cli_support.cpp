// Shared pieces of the CLI's commands (cli.h): argument parsing, connecting, output.
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
  const char* name = pf_dtype_name(d);
  return name ? name : "unknown";
}

std::string join_ids(const Json& list) {
  std::string out;
  for (const Json& v : list) {
    if (!out.empty()) out += ' ';
    out += v.is_string() ? v.get<std::string>() : v.dump();
  }
  return out;
}

// --- status -------------------------------------------------------------------------------

}  // namespace pf::cli
