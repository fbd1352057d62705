// The slow K/V writer of gpu_stream0_repro; contract in perf/gpu_stream0_kernel.h.
#include "perf/gpu_stream0_kernel.h"

namespace pf::perf {
namespace {

__device__ std::uint64_t global_ns() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void slow_write(std::uint8_t* buf, std::uint64_t bytes, std::uint64_t spin_ns) {
  const std::uint64_t start = global_ns();
  while (global_ns() - start < spin_ns) __nanosleep(1000);
  for (std::uint64_t i = blockIdx.x * std::uint64_t{blockDim.x} + threadIdx.x; i < bytes;
       i += std::uint64_t{gridDim.x} * blockDim.x) {
    buf[i] = final_byte(i);
  }
}

}  // namespace

cudaError_t launch_slow_write(std::uint8_t* buf, std::size_t bytes, std::uint64_t spin_ns) {
  // 0: the legacy default stream, as an engine that never picked a stream uses.
  slow_write<<<264, 256, 0, 0>>>(buf, bytes, spin_ns);
  return cudaGetLastError();
}

}  // namespace pf::perf
