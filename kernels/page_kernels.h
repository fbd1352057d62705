// Device work on pages (DESIGN §3 kernels/): batched copy, content digest, compare, and the
// layout gather/scatter between pages and engines' tensors (kv_layout.h).
//
// One interface, one implementation per memory kind: `host` (CPU loads/stores) and `cuda`
// (kernels launched on the device that owns the pool). The runtime picks the instance that
// matches its vmm backend with kernels_for() and never knows which one it holds.
//
// Contract for every implementation:
//  - All calls are blocking: they return when every byte is written / every result is in
//    the caller's host memory.
//  - Pointers are addresses in the memory the implementation serves (host memory for
//    `host`; device-accessible VAs — cuMem mappings or cudaMalloc — for `cuda`). Output
//    spans (digests, equal flags) are always ordinary host memory.
//  - Ranges inside one batch must not overlap each other's destinations.
//  - Errors are returned, never thrown; a failed call may have written some destinations.
//  - Identical inputs give identical results on every implementation (tested byte for byte).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "kernels/kv_layout.h"
#include "kernels/stream_choice.h"
#include "vmm/backend.h"

namespace pf::kernels {

// A 256-bit page content digest: BLAKE3 with the default (unkeyed) mode, 32-byte output.
struct Digest {
  std::array<std::uint8_t, 32> bytes{};
  std::string hex() const;
  bool operator==(const Digest&) const = default;
};

struct CopyOp {
  const void* src = nullptr;
  void* dst = nullptr;
  std::size_t bytes = 0;
};

struct ConstSpan {
  const void* data = nullptr;
  std::size_t bytes = 0;
};

class PageKernels {
 public:
  virtual ~PageKernels() = default;
  // "host" or "cuda".
  virtual std::string_view name() const = 0;
  // Copies every op (src and dst in this implementation's memory).
  virtual Status copy_batch(std::span<const CopyOp> ops) = 0;
  // out[i] = BLAKE3-256(pages[i]); out.size() must equal pages.size().
  virtual Status digest_batch(std::span<const ConstSpan> pages, std::span<Digest> out) = 0;
  // equal[i] = 1 when a[i] and b[i] have the same length and bytes, else 0.
  virtual Status compare_batch(std::span<const ConstSpan> a, std::span<const ConstSpan> b,
                               std::span<std::uint8_t> equal) = 0;
  // Moves the job's KV rows between pages and engine tensors (kv_layout.h), both in this
  // implementation's memory. `stream`, for `cuda` (stream_choice.h): the cudaStream_t the
  // engine wrote the tensors on, so the copy is ordered after that work; nullptr is the
  // legacy default stream (as in CUDA; PyTorch's default stream), kOwnStream the kernels' own
  // stream (ordered after nothing of the caller's). `host` ignores it, kOwnStream included.
  // Blocking like every call here: returns when the copy is complete.
  virtual Status kv_copy(const KVCopy& job, void* stream) = 0;
  // Waits until no work this instance enqueued is still running. Every call above is
  // blocking, so after a successful call nothing is; a call that failed after enqueueing may
  // have left copies running, and fence() waits for them. Whoever seals pages this instance
  // wrote (commit, snapshot, fork, publish) calls it first. `host`: returns at once (its
  // calls never leave work behind). Errors: the device's, for work that failed.
  virtual Status fence() = 0;
};

// BLAKE3-256 of one host buffer (the host implementation's single-buffer entry point).
Digest blake3_digest(const void* data, std::size_t bytes);

// Host kernels on the process-wide HostThreadPool (kernels/host_thread_pool.h).
std::unique_ptr<PageKernels> make_host_kernels();
// Host kernels on their own pool of `threads` threads (1: every call runs serially on the
// caller). Digests are identical whatever the thread count.
std::unique_ptr<PageKernels> make_host_kernels(unsigned threads);
// kUnavailable where the build has no CUDA or no usable GPU/driver is present.
Result<std::unique_ptr<PageKernels>> make_cuda_kernels(int device_ordinal);
// The implementation that serves `backend`'s memory (host for MemoryKind::kHost).
Result<std::unique_ptr<PageKernels>> kernels_for(const vmm::Backend& backend);

}  // namespace pf::kernels
