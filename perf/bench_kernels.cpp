// bench_kernels: the page kernels against the memory system's own copy bandwidth, side by
// side in one run (DESIGN §7 "GPU: copy and digest kernels as a fraction of measured
// device-to-device bandwidth"; perf/README.md).
//
//  host (always): memcpy of a batch of pages (the baseline), the host kernels' copy_batch
//  of the same pages, their BLAKE3 digest_batch, and the layout gather/scatter (kv_copy)
//  between the pages and the same bytes laid out as vLLM's KV cache — each as GB/s and as
//  a fraction of the memcpy bandwidth.
//  cuda (a build with CUDA and a usable GPU): cudaMemcpy device-to-device of the batch (the
//  baseline), the CUDA kernels' copy_batch, digest_batch and kv_copy on device memory.
//
//   bench_kernels [--pages N] [--page-bytes B] [--reps R] [--out FILE]
//
// Bytes per rep = pages x page bytes (default 128 x 2 MiB = 256 MiB, llama-3-8b pages).
// Copy bandwidth counts bytes copied (read once, written once), digest bandwidth bytes
// hashed. Median, p99, min and max over the reps. Not a test.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/page_kernels.h"
#include "perf/bench_common.h"

#ifdef PF_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace {

using namespace pf;
using Json = nlohmann::json;
using bench::Clock;
using bench::die;
using bench::must;

// GB/s figures from per-rep seconds: p50 of the rate is bytes / p50 of the time; the
// "p99" rate is bytes / p99 time (the slow tail).
Json rate_stats(std::vector<double> seconds, double bytes) {
  std::sort(seconds.begin(), seconds.end());
  auto at = [&](double p) { return bench::pct_sorted(seconds, p); };
  return Json{{"gbps_p50", bytes / at(0.5) / 1e9},
              {"gbps_p99", bytes / at(0.99) / 1e9},
              {"gbps_max", bytes / seconds.front() / 1e9},
              {"gbps_min", bytes / seconds.back() / 1e9},
              {"time_p50_us", at(0.5) * 1e6},
              {"time_p99_us", at(0.99) * 1e6},
              {"samples", seconds.size()}};
}

template <typename F>
std::vector<double> time_reps(std::uint32_t reps, F&& f) {
  f();  // warm-up (first touch, JIT, caches)
  std::vector<double> s;
  for (std::uint32_t r = 0; r < reps; ++r) {
    const Clock::time_point t = Clock::now();
    f();
    s.push_back(std::chrono::duration<double>(Clock::now() - t).count());
  }
  return s;
}

// The three measurements on one memory kind. `baseline` copies the whole batch with the
// memory system's own primitive.
template <typename Baseline>
Json measure(kernels::PageKernels& k, std::byte* src, std::byte* dst, std::size_t pages,
             std::size_t page_bytes, std::uint32_t reps, Baseline&& baseline,
             const char* baseline_name) {
  const double bytes = static_cast<double>(pages * page_bytes);
  std::vector<kernels::CopyOp> ops(pages);
  std::vector<kernels::ConstSpan> spans(pages);
  for (std::size_t i = 0; i < pages; ++i) {
    ops[i] = {src + i * page_bytes, dst + i * page_bytes, page_bytes};
    spans[i] = {src + i * page_bytes, page_bytes};
  }
  std::vector<kernels::Digest> digests(pages);
  Json j;
  j["baseline"] = baseline_name;
  j["bytes_per_rep"] = bytes;
  j["baseline_copy"] = rate_stats(time_reps(reps, baseline), bytes);
  j["copy_batch"] =
      rate_stats(time_reps(reps, [&] { must(k.copy_batch(ops), "copy_batch"); }), bytes);
  j["digest_batch"] = rate_stats(
      time_reps(reps, [&] { must(k.digest_batch(spans, digests), "digest_batch"); }), bytes);
  const double base = j["baseline_copy"]["gbps_p50"].get<double>();
  j["copy_fraction_of_baseline"] = j["copy_batch"]["gbps_p50"].get<double>() / base;
  j["digest_fraction_of_baseline"] = j["digest_batch"]["gbps_p50"].get<double>() / base;

  // Layout gather/scatter: pages of llama-3-8b's format (kv_heads 8, head_dim 128, bf16,
  // 16 tokens; as many layers as fill page_bytes) <-> `src` laid out as vLLM's
  // FlashAttention cache, per layer (2, blocks = pages, 16, 8, 128); page i <-> block
  // pages-1-i. Skipped when page_bytes is not a whole number of such layers.
  constexpr std::uint32_t kH = 8, kD = 128, kP = 16, kE = 2;
  const std::size_t layer_bytes = std::size_t{2} * kP * kH * kD * kE;
  if (page_bytes % layer_bytes == 0) {
    const auto layers = static_cast<std::uint32_t>(page_bytes / layer_bytes);
    const kernels::KVPageFormat f{layers, kH, kD, kP, kE};
    const std::size_t half = pages * kP * kH * kD * kE;  // K or V of one layer
    std::vector<std::uint64_t> kp(layers), vp(layers);
    for (std::uint32_t l = 0; l < layers; ++l) {
      kp[l] = reinterpret_cast<std::uintptr_t>(src + 2 * l * half);
      vp[l] = reinterpret_cast<std::uintptr_t>(src + (2 * l + 1) * half);
    }
    const kernels::KVEngineLayout engine{kp,
                                         vp,
                                         kP,
                                         static_cast<std::int64_t>(kP * kH * kD * kE),
                                         static_cast<std::int64_t>(kH * kD * kE),
                                         static_cast<std::int64_t>(kD * kE)};
    std::vector<kernels::KVRun> runs(pages);
    for (std::size_t i = 0; i < pages; ++i) {
      runs[i] = {dst + i * page_bytes, 0, kP, (pages - 1 - i) * kP};
    }
    const kernels::KVCopy store{f, engine, runs, 0, layers, kernels::KVDirection::kEngineToPages};
    const kernels::KVCopy load{f, engine, runs, 0, layers, kernels::KVDirection::kPagesToEngine};
    // On the kernels' own stream (kernels/stream_choice.h): no engine work to order after.
    j["kv_store"] = rate_stats(
        time_reps(reps, [&] { must(k.kv_copy(store, kernels::kOwnStream), "kv_copy"); }), bytes);
    j["kv_load"] = rate_stats(
        time_reps(reps, [&] { must(k.kv_copy(load, kernels::kOwnStream), "kv_copy"); }), bytes);
    j["kv_layout"] =
        "vLLM FlashAttention (2, blocks, 16, 8, 128) bf16, " + std::to_string(layers) + " layers";
    j["kv_store_fraction_of_baseline"] = j["kv_store"]["gbps_p50"].get<double>() / base;
    j["kv_load_fraction_of_baseline"] = j["kv_load"]["gbps_p50"].get<double>() / base;
  }
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  pf::bench::set_program("bench_kernels");
  std::size_t pages = 128;
  std::size_t page_bytes = 2u << 20;
  std::uint32_t reps = 10;
  std::string out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--pages") {
      pages = std::stoull(val());
    } else if (a == "--page-bytes") {
      page_bytes = std::stoull(val());
    } else if (a == "--reps") {
      reps = static_cast<std::uint32_t>(std::stoul(val()));
    } else if (a == "--out") {
      out = val();
    } else if (a == "-h" || a == "--help") {
      std::puts("bench_kernels [--pages N] [--page-bytes B] [--reps R] [--out FILE]");
      return 0;
    } else {
      die("unknown argument " + a);
    }
  }
  if (pages == 0 || page_bytes == 0 || reps == 0)
    die("--pages, --page-bytes, --reps must be positive");
  Json j;
  j["benchmark"] = "bench_kernels";
  j["pages"] = pages;
  j["page_bytes"] = page_bytes;
  j["reps"] = reps;

  {
    std::vector<std::byte> src(pages * page_bytes), dst(pages * page_bytes);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 131 + 7);
    std::memset(dst.data(), 0, dst.size());
    std::unique_ptr<kernels::PageKernels> hk = kernels::make_host_kernels();
    j["host"] = measure(
        *hk, src.data(), dst.data(), pages, page_bytes, reps,
        [&] {
          std::memcpy(dst.data(), src.data(), src.size());
          asm volatile("" ::"r"(dst.data()) : "memory");
        },
        "memcpy");
    std::fprintf(stderr,
                 "bench_kernels: host memcpy %.1f GB/s, copy_batch %.1f GB/s, digest %.2f GB/s, "
                 "kv_store %.1f GB/s, kv_load %.1f GB/s\n",
                 j["host"]["baseline_copy"]["gbps_p50"].get<double>(),
                 j["host"]["copy_batch"]["gbps_p50"].get<double>(),
                 j["host"]["digest_batch"]["gbps_p50"].get<double>(),
                 j["host"].value("kv_store", Json{{"gbps_p50", 0.0}})["gbps_p50"].get<double>(),
                 j["host"].value("kv_load", Json{{"gbps_p50", 0.0}})["gbps_p50"].get<double>());
  }

  Result<std::unique_ptr<kernels::PageKernels>> ck = kernels::make_cuda_kernels(0);
  if (!ck.is_ok()) {
    j["cuda"] = nullptr;
    j["cuda_unavailable"] = ck.status().to_string();
    std::fprintf(stderr, "bench_kernels: no CUDA measurements: %s\n",
                 ck.status().to_string().c_str());
  } else {
#ifdef PF_HAVE_CUDA
    void* src = nullptr;
    void* dst = nullptr;
    if (cudaMalloc(&src, pages * page_bytes) != cudaSuccess ||
        cudaMalloc(&dst, pages * page_bytes) != cudaSuccess) {
      die("cudaMalloc failed");
    }
    cudaMemset(src, 0x5a, pages * page_bytes);
    cudaDeviceSynchronize();
    j["cuda"] = measure(
        **ck, static_cast<std::byte*>(src), static_cast<std::byte*>(dst), pages, page_bytes, reps,
        [&] {
          cudaMemcpy(dst, src, pages * page_bytes, cudaMemcpyDeviceToDevice);
          cudaDeviceSynchronize();
        },
        "cudaMemcpy device-to-device");
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) j["cuda"]["device_name"] = prop.name;
    cudaFree(src);
    cudaFree(dst);
    std::fprintf(stderr,
                 "bench_kernels: cuda D2D %.1f GB/s, copy_batch %.1f GB/s, digest %.1f GB/s, "
                 "kv_store %.1f GB/s, kv_load %.1f GB/s\n",
                 j["cuda"]["baseline_copy"]["gbps_p50"].get<double>(),
                 j["cuda"]["copy_batch"]["gbps_p50"].get<double>(),
                 j["cuda"]["digest_batch"]["gbps_p50"].get<double>(),
                 j["cuda"].value("kv_store", Json{{"gbps_p50", 0.0}})["gbps_p50"].get<double>(),
                 j["cuda"].value("kv_load", Json{{"gbps_p50", 0.0}})["gbps_p50"].get<double>());
#else
    die("CUDA kernels present in a build without PF_HAVE_CUDA");
#endif
  }
  const std::string text = j.dump(1);
  if (!out.empty()) {
    std::ofstream f(out);
    f << text << "\n";
    if (!f) die("cannot write " + out);
  } else {
    std::printf("%s\n", text.c_str());
  }
  return 0;
}
