// The fan-out demo's command line: the parent's flags and the flags the parent passes to
// the child processes it execs (--child ...). See docs/demo.md.
#pragma once

#include <cstdint>
#include <string>

#include "base/page_format.h"

namespace pf::demo {

struct Options {
  std::uint64_t context = 4090;  // 255 full pages of 16 and one page holding 10 tokens
  std::uint32_t children = 12;
  std::uint32_t suffix = 16;
  std::uint32_t steps = 32;
  std::string model = "demo";
  std::uint32_t page_tokens = 16;
  std::string dtype = "fp32";
  float temperature = 0.8f;
  std::uint64_t seed = 1;
  std::string device = "auto";
  std::string processfork;
  std::string workdir;
  std::uint32_t fork_reps = 200;
  std::string json;
  bool control = true;
  std::string fault;  // "child-seed": worker 0 samples with another seed (must be caught)
  bool verify = false;
  // --child mode
  bool child = false;
  std::string socket;
  std::uint64_t branch = 0;
  std::uint32_t index = 0;
  std::string report;
  std::int64_t t0_ns = 0;
  bool is_control = false;
};

// Parses argv. Prints the usage and exits: status 0 for -h/--help, 2 for a bad argument.
Options parse_options(int argc, char** argv);

// The KV dtype named by --dtype.
rt::DType dtype_of(const Options& o);

}  // namespace pf::demo
