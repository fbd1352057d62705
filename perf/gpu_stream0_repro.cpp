// gpu_stream0_repro: the stream-0 race of issue 14, reproduced or shown fixed on a real GPU.
// perf/gpu_check.sh runs it.
//
//   gpu_stream0_repro [--spin-ms MS] [--out FILE]
//
// An engine writes its K/V with a kernel on the legacy default stream (stream 0) and then
// asks the library to store that K/V into pool pages with `stream = 0`. Under the stream
// contract of shims/include/processfork.h, 0 is the legacy default stream (the library's
// own stream is the separate sentinel PF_CUDA_STREAM_OWN, kernels' kOwnStream), so the copy
// must be ordered after the engine's kernel and the pages must hold the final values.
// Before that contract (the library's own non-blocking stream for 0), the copy runs while
// the kernel is still spinning and the pages get the stale values: the race.
//
// Steps: engine tensors (4 layers of K and V, 8 kv heads x 128 bf16, 64 pages of 16
// tokens) are set to a stale pattern and made visible (cudaDeviceSynchronize); one warm-up
// store sizes the kernels' scratch so nothing in the timed store allocates (a cudaFree
// would synchronize the device and hide the race); a kernel on stream 0 spins for
// --spin-ms (default 200) and then writes the final pattern; without any synchronization
// the library's kv_copy (engine -> pages) is called with stream 0; then the pages are read
// back and compared byte for byte with the final pattern laid out by the host kernels.
// Where the build has PF_CUDA_STREAM_OWN, the same sequence with the own stream is run as
// the control: it must show the race, proving the check can see one.
//
// Prints one JSON object: "semantics" ("0 = legacy default stream" where the build has
// PF_CUDA_STREAM_OWN, else "0 = library's own stream"), "stream_0" {result: "fixed" |
// "race reproduced", mismatched_bytes, stale_bytes, copy_ms}, the control, "result"
// (stream_0's) and "status".
// Exit status: 0 when stream 0 is fixed and the control (if any) shows the race; 1 when
// the race is reproduced on stream 0 or the control cannot see it; 3 when no GPU or driver
// is usable ("status": "no_gpu", the path a rehearsal takes); 2 bad arguments.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/page_kernels.h"
#include "perf/gpu_stream0_kernel.h"
#include "perf/gpu_tool.h"
#include "shims/include/processfork.h"

namespace {

using pf::perf::final_byte;
using pf::perf::kExitFailed;
using pf::perf::kExitNoGpu;
using pf::perf::kExitUsage;
using pf::perf::launch_slow_write;
using Json = nlohmann::json;
namespace k = pf::kernels;

constexpr std::uint32_t kLayers = 4, kHeads = 8, kDim = 128, kTokensPerPage = 16, kElem = 2;
constexpr std::uint32_t kPages = 64;
constexpr std::uint64_t kTokens = std::uint64_t{kPages} * kTokensPerPage;
constexpr std::size_t kTensorBytes = kTokens * kHeads * kDim * kElem;  // one K or V tensor

constexpr std::uint8_t kStale = 0x11;

struct Failure {
  std::string what;
};
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Failure{std::string(what) + " failed: " + cudaGetErrorString(e)};
}

// Device buffers for one store: the engine's K/V (one allocation, [layer][K|V] tensors of
// [token][head][dim]) and the pages.
struct Buffers {
  std::uint8_t* engine = nullptr;
  std::uint8_t* pages = nullptr;
  std::size_t engine_bytes = 2 * kLayers * kTensorBytes;
  std::size_t page_bytes = 0;
  ~Buffers() {
    cudaFree(engine);
    cudaFree(pages);
  }
};

// The store job over `engine_base` (device or host memory, same layout) into `pages_base`.
struct Job {
  std::vector<std::uint64_t> kp, vp;
  std::vector<k::KVRun> runs;
  k::KVCopy copy;
};
void make_job(Job& job, std::uint8_t* engine_base, std::uint8_t* pages_base,
              const k::KVPageFormat& f) {
  job.kp.resize(kLayers);
  job.vp.resize(kLayers);
  for (std::uint32_t l = 0; l < kLayers; ++l) {
    job.kp[l] = reinterpret_cast<std::uintptr_t>(engine_base + (2 * l) * kTensorBytes);
    job.vp[l] = reinterpret_cast<std::uintptr_t>(engine_base + (2 * l + 1) * kTensorBytes);
  }
  job.runs.resize(kPages);
  for (std::uint32_t p = 0; p < kPages; ++p) {
    job.runs[p] = {reinterpret_cast<std::byte*>(pages_base + p * f.page_bytes()), 0, kTokensPerPage,
                   std::uint64_t{p} * kTokensPerPage};
  }
  const k::KVEngineLayout e{job.kp,
                            job.vp,
                            kTokens,
                            0,
                            static_cast<std::int64_t>(kHeads * kDim * kElem),
                            static_cast<std::int64_t>(kDim * kElem)};
  job.copy = k::KVCopy{f, e, job.runs, 0, kLayers, k::KVDirection::kEngineToPages};
}

// One racing store on `stream`; compares the pages with `expected`.
Json race_once(k::PageKernels& kernels, Buffers& b, const Job& job, void* stream,
               std::uint64_t spin_ns, const std::vector<std::uint8_t>& expected) {
  cuda_check(cudaMemset(b.engine, kStale, b.engine_bytes), "cudaMemset(engine)");
  cuda_check(cudaMemset(b.pages, 0, b.page_bytes), "cudaMemset(pages)");
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  cuda_check(launch_slow_write(b.engine, b.engine_bytes, spin_ns), "slow_write launch");
  const auto t0 = std::chrono::steady_clock::now();
  const pf::Status s = kernels.kv_copy(job.copy, stream);
  const double copy_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!s.is_ok()) throw Failure{"kv_copy: " + s.to_string()};
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  std::vector<std::uint8_t> got(b.page_bytes);
  cuda_check(cudaMemcpy(got.data(), b.pages, got.size(), cudaMemcpyDeviceToHost),
             "cudaMemcpy(pages)");
  std::uint64_t mismatched = 0, stale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    mismatched += got[i] != expected[i];
    stale += got[i] == kStale && expected[i] != kStale;
  }
  return Json{{"result", mismatched == 0 ? "fixed" : "race reproduced"},
              {"mismatched_bytes", mismatched},
              {"stale_bytes", stale},
              {"page_bytes_compared", got.size()},
              {"copy_ms", copy_ms},
              {"spin_ms", static_cast<double>(spin_ns) / 1e6}};
}

}  // namespace

int main(int argc, char** argv) {
  double spin_ms = 200;
  std::string out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--spin-ms" && i + 1 < argc) {
      spin_ms = std::atof(argv[++i]);
    } else if (a == "--out" && i + 1 < argc) {
      out = argv[++i];
    } else if (a == "-h" || a == "--help") {
      std::puts(
          "gpu_stream0_repro [--spin-ms MS] [--out FILE]: K/V written on stream 0, "
          "stored with stream 0; JSON says \"fixed\" or \"race reproduced\" (exit 0 "
          "fixed, 1 race or error, 3 no GPU)");
      return 0;
    } else {
      std::fprintf(stderr, "gpu_stream0_repro: bad argument %s (--help)\n", a.c_str());
      return kExitUsage;
    }
  }
  if (!(spin_ms > 0)) {
    std::fprintf(stderr, "gpu_stream0_repro: --spin-ms must be positive\n");
    return kExitUsage;
  }
#ifdef PF_CUDA_STREAM_OWN
  const bool new_semantics = true;
#else
  const bool new_semantics = false;
#endif
  Json j{
      {"program", "gpu_stream0_repro"},
      {"semantics", new_semantics ? "0 = legacy default stream (PF_CUDA_STREAM_OWN = own)"
                                  : "0 = library's own stream (build before PF_CUDA_STREAM_OWN)"},
      {"expected", new_semantics ? "fixed" : "race reproduced"}};

  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess || count == 0) {
    j["status"] = "no_gpu";
    j["error"] = e != cudaSuccess ? std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e)
                                  : std::string("no CUDA device");
    pf::perf::emit_json("gpu_stream0_repro", j, out);
    return kExitNoGpu;
  }
  pf::Result<std::unique_ptr<k::PageKernels>> kernels = k::make_cuda_kernels(0);
  if (!kernels.is_ok()) {
    j["status"] = "no_gpu";
    j["error"] = kernels.status().to_string();
    pf::perf::emit_json("gpu_stream0_repro", j, out);
    return kExitNoGpu;
  }
  try {
    cuda_check(cudaSetDevice(0), "cudaSetDevice");
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    j["device_name"] = prop.name;
    const k::KVPageFormat f{kLayers, kHeads, kDim, kTokensPerPage, kElem};
    Buffers b;
    b.page_bytes = std::size_t{kPages} * f.page_bytes();
    cuda_check(cudaMalloc(&b.engine, b.engine_bytes), "cudaMalloc(engine)");
    cuda_check(cudaMalloc(&b.pages, b.page_bytes), "cudaMalloc(pages)");

    // The expected pages: the final pattern stored by the host kernels.
    std::vector<std::uint8_t> host_engine(b.engine_bytes), expected(b.page_bytes, 0);
    for (std::size_t i = 0; i < host_engine.size(); ++i) host_engine[i] = final_byte(i);
    Job host_job;
    make_job(host_job, host_engine.data(), expected.data(), f);
    if (const pf::Status s = k::kv_copy_host(host_job.copy); !s.is_ok())
      throw Failure{"kv_copy_host: " + s.to_string()};

    Job job;
    make_job(job, b.engine, b.pages, f);
    // Warm-up: sizes the scratch buffers so the timed stores allocate nothing.
    if (const pf::Status s = (*kernels)->kv_copy(job.copy, nullptr); !s.is_ok())
      throw Failure{"warm-up kv_copy: " + s.to_string()};
    cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");

    const auto spin_ns = static_cast<std::uint64_t>(spin_ms * 1e6);
    j["stream_0"] = race_once(**kernels, b, job, nullptr, spin_ns, expected);
    j["result"] = j["stream_0"]["result"];
    bool ok = j["result"] == "fixed";
#ifdef PF_CUDA_STREAM_OWN
    j["own_stream_control"] = race_once(**kernels, b, job, PF_CUDA_STREAM_OWN, spin_ns, expected);
    j["own_stream_control"]["expected"] = "race reproduced";
    ok = ok && j["own_stream_control"]["result"] == "race reproduced";
#endif
    j["status"] = ok ? "ok" : "failed";
  } catch (const Failure& e) {
    j["status"] = "error";
    j["error"] = e.what;
  }
  pf::perf::emit_json("gpu_stream0_repro", j, out);
  return j["status"] == "ok" ? 0 : kExitFailed;
}
