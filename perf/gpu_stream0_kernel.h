// The engine side of gpu_stream0_repro (perf/gpu_stream0_repro.cpp): a slow kernel on the
// legacy default stream that writes K/V late. Kept apart so nvcc compiles only this.
//
//  final_byte(i)              the byte the kernel leaves at offset i (host and device).
//  launch_slow_write(buf, n, spin_ns)
//                             enqueues, on the legacy default stream (stream 0), a kernel
//                             whose every thread first spins spin_ns nanoseconds of
//                             %globaltimer and then writes final_byte(i) over its share of
//                             buf[0, n) (device memory). Returns the launch error
//                             (cudaGetLastError), never waits for the kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define PF_STREAM0_HD __host__ __device__
#else
#define PF_STREAM0_HD
#endif

namespace pf::perf {

PF_STREAM0_HD inline constexpr std::uint8_t final_byte(std::uint64_t i) {
  return static_cast<std::uint8_t>(((i * 2654435761u) >> 7) ^ 0xA5u);
}

cudaError_t launch_slow_write(std::uint8_t* buf, std::size_t bytes, std::uint64_t spin_ns);

}  // namespace pf::perf
