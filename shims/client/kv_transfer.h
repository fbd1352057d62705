// KVTransfer: the client side of the layout gather/scatter (kernels/kv_layout.h): copies KV
// between this process's mapping of the pool's pages and an engine's own tensors, with the
// page kernels of the pool's device (host memcpy for a host pool, the CUDA kernel for a
// cuda:N pool). Nothing goes over the socket: pages are addressed through the mapping.
//
// Contracts:
//  - Page ids are resolved with Connection::page_ptr (attaching if the pool grew), so a page
//    beyond the pool or in no chunk is an error before any byte moves; the job is then
//    validated by check_kv_copy. A rejected call copies nothing.
//  - Geometry: the layout must give one K and one V pointer per pool layer, and its element
//    size must equal the pool dtype's (the engine tensors must BE the pool's dtype; nothing
//    converts).
//  - Storing writes page memory directly, so it is refused (kPermissionDenied, nothing
//    copied) unless every page is one this session may write (Connection::page_writable:
//    append's write runs, alloc'd pages, not sealed since). Sealed pages are shared and
//    immutable (DESIGN §2). Loading reads any page the caller holds.
//  - Blocking: returns when the copy is complete (a CUDA copy is ordered on `stream` after
//    the engine's own work, then synchronized). `stream` as PageKernels::kv_copy takes it
//    (kernels/stream_choice.h): nullptr is the legacy default stream, kernels::kOwnStream
//    (PF_CUDA_STREAM_OWN) the kernels' own.
//  - Fence: fence() waits for any copy a failed call left running on the device; the C ABI
//    calls it before every call that seals pages (processfork.h "GPU fences"). It costs one
//    atomic load until the first copy, and nothing on a host pool.
//  - Threading: any number of threads may call copy(); the kernels are created once, on
//    first use, under a mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "base/status.h"
#include "kernels/kv_layout.h"
#include "kernels/page_kernels.h"
#include "shims/client/connection.h"

namespace pf::client {

struct KVLayoutDesc {
  std::span<const std::uint64_t> k_ptrs;  // one per pool layer
  std::span<const std::uint64_t> v_ptrs;
  std::uint64_t block_tokens = 0;
  std::int64_t block_stride = 0;  // bytes
  std::int64_t token_stride = 0;  // bytes
  std::int64_t head_stride = 0;   // bytes
  std::uint32_t elem_bytes = 0;   // must equal the pool dtype's size
};

struct KVPageRun {
  std::uint32_t page = 0;
  std::uint32_t page_slot = 0;
  std::uint32_t count = 0;
  std::uint64_t engine_token = 0;
};

class KVTransfer {
 public:
  // `conn` must outlive this object.
  explicit KVTransfer(Connection& conn) : conn_(conn) {}

  // Waits until no copy of this transfer is still running (PageKernels::fence).
  Status fence();

  // Copies layers [layer_begin, layer_end) of every run; returns the bytes moved.
  Result<std::uint64_t> copy(const KVLayoutDesc& layout, std::span<const KVPageRun> runs,
                             std::uint32_t layer_begin, std::uint32_t layer_end,
                             kernels::KVDirection direction, void* stream);

 private:
  Result<kernels::PageKernels*> kernels();

  Connection& conn_;
  std::mutex mu_;
  std::unique_ptr<kernels::PageKernels> kernels_;     // guarded by mu_ until set
  std::atomic<kernels::PageKernels*> made_{nullptr};  // kernels_.get() once set, for fence()
};

}  // namespace pf::client
