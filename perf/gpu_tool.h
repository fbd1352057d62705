// What the GPU check's own programs (gpu_probe, gpu_stream0_repro; perf/gpu_check.sh) share:
// their exit status contract and how they print their one JSON result.
//
//  kExitFailed  1: the program ran and its check failed (the JSON says why).
//  kExitUsage   2: bad arguments (nothing printed on stdout).
//  kExitNoGpu   3: no usable driver or device; the JSON has "status": "no_gpu" and the
//               reason. The path a machine without a GPU takes, so a rehearsal can prove
//               the binary starts.
//  emit_json(program, j, out)  prints j (indent 1) on stdout and, when out is not empty,
//               writes the same text to the file out (a failure to write is reported on
//               stderr, prefixed with program; the stdout copy stands).
#pragma once

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace pf::perf {

inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitNoGpu = 3;

inline void emit_json(const char* program, const nlohmann::json& j, const std::string& out) {
  const std::string text = j.dump(1);
  std::printf("%s\n", text.c_str());
  if (!out.empty()) {
    std::ofstream f(out);
    f << text << "\n";
    if (!f) std::fprintf(stderr, "%s: cannot write %s\n", program, out.c_str());
  }
}

}  // namespace pf::perf
