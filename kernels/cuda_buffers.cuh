// The scratch memory of the CUDA page kernels (cuda_kernels.cu; CUDA translation units only).
//
// DESIGN
//  - Nothing here may stall the engine's process in a hot call. cudaMalloc / cudaFree (and
//    cudaFreeHost) synchronize the whole device: every stream of every library in the
//    process, the engine's forward included. So scratch is allocated once at construction,
//    sized for the documented batch (kScratch* below), and grows only when a batch exceeds
//    it: in big steps (at least doubling, so a workload grows a handful of times in its
//    life), with the stream-ordered allocator (cudaMallocAsync / cudaFreeAsync on the stream
//    the call runs on), which orders the new buffer after that stream's earlier work and
//    waits for nothing else. A device without memory pools
//    (cudaDevAttrMemoryPoolsSupported == 0) falls back to cudaMalloc / cudaFree.
//  - Descriptors go to the device from pinned host staging (cudaMallocHost), so the upload
//    is a true asynchronous DMA rather than a pageable copy staged by the driver. A staging
//    buffer is rewritten only after the upload that last read it has completed: the upload
//    records an event, and acquire() waits for it.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <string>

#include "base/status.h"
#include "kernels/cuda_check.cuh"

namespace pf::kernels::cuda_detail {

// The batch the scratch is sized for at construction; larger batches grow it (see DESIGN).
// Descriptors: 1 MiB holds 32768 digest pages (32 B each), 43690 copy ops or kv tokens (24 B).
constexpr std::size_t kScratchDescBytes = std::size_t{1} << 20;
// Chunk chaining values: 32 B per 1 KiB chunk; 2 MiB holds 64 MiB of page bytes per digest
// batch (two such buffers).
constexpr std::size_t kScratchChunkValueBytes = std::size_t{2} << 20;
// Digests or compare flags read back: 32 B per page.
constexpr std::size_t kScratchOutBytes = std::size_t{1} << 20;
// CUB temporary storage of a batched copy.
constexpr std::size_t kScratchCubBytes = std::size_t{1} << 20;

// The capacity a buffer of `cap` bytes grows to when `bytes` are needed.
inline std::size_t grown_capacity(std::size_t cap, std::size_t bytes) {
  return std::max(bytes, 2 * cap);
}

// Device scratch that only grows; see DESIGN. Not thread-safe (the kernels' mutex guards it).
class DeviceScratch {
 public:
  DeviceScratch() = default;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch() { release(nullptr); }

  // The first allocation (construction time; `stream_ordered`: the device has memory pools).
  Status init(std::size_t bytes, bool stream_ordered, cudaStream_t stream) {
    stream_ordered_ = stream_ordered;
    return reserve(bytes, stream);
  }

  // Frees the allocation at teardown (errors ignored: nothing can be done about them then):
  // a stream-ordered one on `stream`, which the caller synchronizes afterwards. The caller
  // has synchronized every stream that used it.
  void release(cudaStream_t stream) {
    if (ptr_ != nullptr) {
      if (stream_ordered_) {
        cudaFreeAsync(ptr_, stream);
      } else {
        cudaFree(ptr_);
      }
    }
    ptr_ = nullptr;
    cap_ = 0;
  }

  // Makes the buffer hold at least `bytes`, ordered on `stream` (the stream that uses it
  // next). The previous contents are lost. The caller guarantees no earlier work still reads
  // the buffer on another stream (every call of the kernels completes, or is fenced, before
  // the next one starts).
  Status reserve(std::size_t bytes, cudaStream_t stream) {
    if (bytes <= cap_) return Status::ok();
    const std::size_t want = grown_capacity(cap_, bytes);
    void* old = ptr_;
    ptr_ = nullptr;
    cap_ = 0;
    if (stream_ordered_) {
      if (old != nullptr) PF_CUDA_TRY(cudaFreeAsync(old, stream));
      PF_CUDA_TRY(cudaMallocAsync(&ptr_, want, stream));
    } else {
      if (old != nullptr) PF_CUDA_TRY(cudaFree(old));
      PF_CUDA_TRY(cudaMalloc(&ptr_, want));
    }
    cap_ = want;
    return Status::ok();
  }

  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  std::size_t capacity() const { return cap_; }

 private:
  void* ptr_ = nullptr;
  std::size_t cap_ = 0;
  bool stream_ordered_ = false;
};

// Pinned host memory for descriptor uploads and result read-back, reused across calls.
// acquire() returns memory no earlier asynchronous copy still reads; uploaded(stream) must
// follow every cudaMemcpyAsync that reads it. Not thread-safe (the kernels' mutex guards it).
class PinnedStaging {
 public:
  PinnedStaging() = default;
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;
  ~PinnedStaging() {
    if (done_ != nullptr) cudaEventDestroy(done_);
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
  }

  Status init(std::size_t bytes) {
    PF_CUDA_TRY(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    PF_CUDA_TRY(cudaMallocHost(&ptr_, bytes));
    cap_ = bytes;
    return Status::ok();
  }

  // At least `bytes` of pinned memory that no pending copy reads. Growing (a batch beyond
  // the construction size) frees and allocates pinned memory, which synchronizes the device:
  // it happens in big steps, a handful of times at most.
  Result<void*> acquire(std::size_t bytes) {
    if (recorded_) {
      PF_CUDA_TRY(cudaEventSynchronize(done_));
      recorded_ = false;
    }
    if (bytes > cap_) {
      const std::size_t want = grown_capacity(cap_, bytes);
      void* old = ptr_;
      ptr_ = nullptr;
      cap_ = 0;
      if (old != nullptr) PF_CUDA_TRY(cudaFreeHost(old));
      PF_CUDA_TRY(cudaMallocHost(&ptr_, want));
      cap_ = want;
    }
    return ptr_;
  }

  // Marks the buffer busy until `stream` reaches this point (after the copies that read it).
  Status uploaded(cudaStream_t stream) {
    PF_CUDA_TRY(cudaEventRecord(done_, stream));
    recorded_ = true;
    return Status::ok();
  }

 private:
  void* ptr_ = nullptr;
  std::size_t cap_ = 0;
  cudaEvent_t done_ = nullptr;
  bool recorded_ = false;
};

}  // namespace pf::kernels::cuda_detail
