#include "perf/fanout_options.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace pf::demo {
namespace {

[[noreturn]] void usage(const std::string& why) {
  const bool help = why.empty();
  std::fprintf(help ? stdout : stderr,
               "%s%s"
               "usage: fanout_demo [--context T] [--children N] [--suffix S] [--steps K]\n"
               "                   [--model SPEC] [--page-tokens P] [--dtype fp32|bf16]\n"
               "                   [--temperature X] [--seed N] [--device auto|host|cuda[:N]]\n"
               "                   [--processfork PATH] [--workdir DIR] [--fork-reps R]\n"
               "                   [--json FILE] [--no-control] [--verify]\n"
               "                   [--inject-fault child-seed]\n"
               "See docs/demo.md. Exit status 0 only when every check passes.\n",
               help ? "" : "fanout_demo: ", help ? "" : (why + "\n").c_str());
  std::exit(help ? 0 : 2);
}

std::uint64_t parse_u64(const std::string& flag, const std::string& v, std::uint64_t lo,
                        std::uint64_t hi) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || x < lo || x > hi) {
    usage(flag + " needs an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
  }
  return x;
}

}  // namespace

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v;
    const std::size_t eq = a.find('=');
    const bool has_eq = a.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_eq) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    auto val = [&]() -> std::string {
      if (has_eq) return v;
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--context") {
      o.context = parse_u64(a, val(), 1, 1u << 20);
    } else if (a == "--children") {
      o.children = static_cast<std::uint32_t>(parse_u64(a, val(), 1, 256));
    } else if (a == "--suffix") {
      o.suffix = static_cast<std::uint32_t>(parse_u64(a, val(), 1, 4096));
    } else if (a == "--steps") {
      o.steps = static_cast<std::uint32_t>(parse_u64(a, val(), 1, 4096));
    } else if (a == "--model") {
      o.model = val();
    } else if (a == "--page-tokens") {
      o.page_tokens = static_cast<std::uint32_t>(parse_u64(a, val(), 1, 4096));
    } else if (a == "--dtype") {
      o.dtype = val();
      if (o.dtype != "fp32" && o.dtype != "bf16") usage("--dtype is fp32 or bf16");
    } else if (a == "--temperature") {
      const std::string t = val();
      char* end = nullptr;
      o.temperature = std::strtof(t.c_str(), &end);
      if (t.empty() || *end != '\0' || !(o.temperature >= 0.0f) || o.temperature > 100.0f) {
        usage("--temperature needs a number in 0..100");
      }
    } else if (a == "--seed") {
      o.seed = parse_u64(a, val(), 0, UINT64_MAX);
    } else if (a == "--device") {
      o.device = val();
    } else if (a == "--processfork") {
      o.processfork = val();
    } else if (a == "--workdir") {
      o.workdir = val();
    } else if (a == "--fork-reps") {
      o.fork_reps = static_cast<std::uint32_t>(parse_u64(a, val(), 1, 1000000));
    } else if (a == "--json") {
      o.json = val();
    } else if (a == "--no-control") {
      o.control = false;
    } else if (a == "--verify") {
      o.verify = true;
    } else if (a == "--inject-fault") {
      o.fault = val();
      if (o.fault != "child-seed") usage("--inject-fault takes child-seed");
    } else if (a == "--child") {
      o.child = true;
    } else if (a == "--socket") {
      o.socket = val();
    } else if (a == "--branch") {
      o.branch = parse_u64(a, val(), 1, UINT64_MAX);
    } else if (a == "--index") {
      o.index = static_cast<std::uint32_t>(parse_u64(a, val(), 0, 1u << 20));
    } else if (a == "--report") {
      o.report = val();
    } else if (a == "--t0") {
      o.t0_ns = static_cast<std::int64_t>(parse_u64(a, val(), 0, INT64_MAX));
    } else if (a == "--control") {
      o.is_control = true;
    } else if (a == "-h" || a == "--help") {
      usage("");
    } else {
      usage("unknown argument " + a);
    }
  }
  return o;
}

rt::DType dtype_of(const Options& o) {
  return o.dtype == "bf16" ? rt::DType::kBF16 : rt::DType::kFP32;
}

}  // namespace pf::demo
