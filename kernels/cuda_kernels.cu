// The CUDA implementation of PageKernels (compiled only when PF_HAVE_CUDA is on).
//
// DESIGN
//  - One instance serves one device ordinal and owns one non-blocking stream, two events and
//    scratch (cuda_buffers.cuh): device buffers and pinned host staging allocated at
//    construction for the documented batch size, grown only for larger batches, in big
//    steps, stream-ordered. No call of a documented-size batch allocates or frees, so none
//    synchronizes the device behind the engine's back. Calls are serialized by a mutex (they
//    share the stream and scratch), make the device current for their duration and restore
//    the caller's current device before returning.
//  - Every call is blocking: it enqueues its work, copies results into the caller's host
//    memory and synchronizes the stream it used before returning. A call that fails after
//    enqueueing records an event behind its work; the next call (and fence()) waits for it
//    before reusing scratch, so nothing of a failed call is still running when pages are
//    sealed.
//  - Descriptors are written into pinned staging and uploaded with one cudaMemcpyAsync per
//    call; the staging buffer is rewritten only after the event behind that upload fired.
//  - copy_batch: one op is one cudaMemcpyAsync (a one-page copy-on-write: no descriptors, no
//    CUB); more ops are cub::DeviceMemcpy::Batched over device arrays of src/dst/size.
//  - digest_batch: BLAKE3 in two kernels. (1) One thread per 1 KiB chunk, over every chunk of
//    every page in the batch, computes the chunk's chaining value (or, for a page of one
//    chunk, the digest itself with ROOT on its last block). (2) One thread block per page
//    reduces its chunk values level by level: pairs (2i, 2i+1) become parent nodes, an odd
//    last node is carried up unchanged, and the final pair's compression carries ROOT. This
//    is exactly BLAKE3's left-balanced tree. Levels ping-pong between two scratch arrays.
//  - compare_batch: a kernel that clears a pair's flag on the first differing word it sees;
//    pairs of different lengths never reach the device.
//  - kv_copy: the runs are expanded on the host into one descriptor per token (page row
//    base, slot, engine token); one warp per (token, layer, K|V, head) row copies head_dim
//    elements with 16-, 4- or 1-byte accesses (the widest every address allows). Runs on the
//    stream stream_kind() picks (stream_choice.h): 0 is the legacy default stream, which
//    PyTorch's default stream is, so a store is ordered after the engine's kernels;
//    kOwnStream is this instance's stream; anything else is the caller's stream itself.
//  - Errors: every CUDA runtime error becomes Code::kDriver with cudaGetErrorString's text; a
//    missing driver or device at construction is Code::kUnavailable. Nothing aborts.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cub/device/device_memcpy.cuh>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/batch_checks.h"
#include "kernels/blake3.h"
#include "kernels/blake3_core.h"
#include "kernels/cuda_buffers.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/page_kernels.h"
#include "kernels/stream_choice.h"

namespace pf::kernels {
namespace {

constexpr int kThreadsPerBlock = 128;
constexpr int kReduceThreads = 256;

// ---------------------------------------------------------------------------------------
// Device code

struct PageDesc {
  const std::uint8_t* data;
  std::uint64_t bytes;
  std::uint64_t first_chunk;  // index of the page's first chunk in the batch's chunk arrays
  std::uint64_t n_chunks;     // max(1, ceil(bytes / 1024))
};

struct PairDesc {
  const std::uint8_t* a;
  const std::uint8_t* b;
  std::uint64_t bytes;
  std::uint64_t index;  // position in the caller's batch (its flag)
};

// Word i of a 64-byte block at p, little-endian; `align` is p's alignment (1, 4 or 16).
__device__ __forceinline__ void load_full_block(const std::uint8_t* p, int align,
                                                std::uint32_t m[16]) {
  if (align == 16) {
    const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint4 x = q[k];
      m[4 * k + 0] = x.x;
      m[4 * k + 1] = x.y;
      m[4 * k + 2] = x.z;
      m[4 * k + 3] = x.w;
    }
  } else if (align == 4) {
    const std::uint32_t* q = reinterpret_cast<const std::uint32_t*>(p);
#pragma unroll
    for (int i = 0; i < 16; ++i) m[i] = q[i];
  } else {
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      m[i] = std::uint32_t{p[4 * i]} | (std::uint32_t{p[4 * i + 1]} << 8) |
             (std::uint32_t{p[4 * i + 2]} << 16) | (std::uint32_t{p[4 * i + 3]} << 24);
    }
  }
}

// The last, short block of a chunk (n < 64 bytes), zero-padded.
__device__ __forceinline__ void load_partial_block(const std::uint8_t* p, std::uint32_t n,
                                                   std::uint32_t m[16]) {
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    std::uint32_t w = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::uint32_t at = 4u * i + j;
      if (at < n) w |= std::uint32_t{p[at]} << (8 * j);
    }
    m[i] = w;
  }
}

__device__ void device_chunk_cv(const std::uint8_t* p, std::uint64_t len, std::uint64_t chunk_index,
                                bool root, std::uint32_t cv[8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) cv[i] = b3::iv(i);
  const std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(p);
  const int align = (addr % 16 == 0) ? 16 : (addr % 4 == 0) ? 4 : 1;
  const std::uint32_t lo = static_cast<std::uint32_t>(chunk_index);
  const std::uint32_t hi = static_cast<std::uint32_t>(chunk_index >> 32);
  const std::uint64_t blocks = len == 0 ? 1 : (len + b3::kBlockBytes - 1) / b3::kBlockBytes;
#pragma unroll 1
  for (std::uint64_t b = 0; b < blocks; ++b) {
    const std::uint64_t off = b * b3::kBlockBytes;
    const std::uint32_t n =
        static_cast<std::uint32_t>(len - off < b3::kBlockBytes ? len - off : b3::kBlockBytes);
    std::uint32_t m[16];
    if (n == b3::kBlockBytes) {
      load_full_block(p + off, align, m);
    } else {
      load_partial_block(p + off, n, m);
    }
    std::uint32_t f = 0;
    if (b == 0) f |= b3::kChunkStart;
    if (b == blocks - 1) f |= b3::kChunkEnd | (root ? b3::kRoot : 0u);
    b3::compress<std::uint32_t>(cv, m, lo, hi, n, f);
  }
}

// Kernel 1: chaining value of every chunk of every page (one thread per chunk).
__global__ void chunk_cv_kernel(const PageDesc* pages, std::uint32_t n_pages,
                                std::uint64_t total_chunks, std::uint32_t (*cvs)[8],
                                std::uint32_t (*digests)[8]) {
  const std::uint64_t stride = std::uint64_t{gridDim.x} * blockDim.x;
  for (std::uint64_t c = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; c < total_chunks;
       c += stride) {
    // The page holding chunk c: the last page whose first_chunk <= c.
    std::uint32_t lo = 0, hi = n_pages - 1;
    while (lo < hi) {
      const std::uint32_t mid = lo + (hi - lo + 1) / 2;
      if (pages[mid].first_chunk <= c) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    const PageDesc pg = pages[lo];
    const std::uint64_t idx = c - pg.first_chunk;
    const std::uint64_t off = idx * b3::kChunkBytes;
    const std::uint64_t rest = pg.bytes - off;
    const std::uint64_t len = rest < b3::kChunkBytes ? rest : b3::kChunkBytes;
    const bool root = pg.n_chunks == 1;
    std::uint32_t cv[8];
    device_chunk_cv(pg.data + off, len, idx, root, cv);
    std::uint32_t* dst = root ? digests[lo] : cvs[c];
#pragma unroll
    for (int i = 0; i < 8; ++i) dst[i] = cv[i];
  }
}

// Kernel 2: one block per page folds its chunk values into the root (pages of one chunk were
// finished by kernel 1). `a` holds the chunk values on entry; `b` is scratch of equal size.
__global__ void reduce_tree_kernel(const PageDesc* pages, std::uint32_t (*a)[8],
                                   std::uint32_t (*b)[8], std::uint32_t (*digests)[8]) {
  const PageDesc pg = pages[blockIdx.x];
  if (pg.n_chunks < 2) return;
  std::uint32_t(*src)[8] = a + pg.first_chunk;
  std::uint32_t(*dst)[8] = b + pg.first_chunk;
  std::uint64_t m = pg.n_chunks;
  while (m > 2) {
    const std::uint64_t half = (m + 1) / 2;
    for (std::uint64_t i = threadIdx.x; i < half; i += blockDim.x) {
      if (2 * i + 1 < m) {
        b3::parent_cv(src[2 * i], src[2 * i + 1], 0u, dst[i]);
      } else {
#pragma unroll
        for (int k = 0; k < 8; ++k) dst[i][k] = src[2 * i][k];
      }
    }
    __syncthreads();  // this level is written and the previous one fully read
    std::uint32_t(*t)[8] = src;
    src = dst;
    dst = t;
    m = half;
  }
  if (threadIdx.x == 0) b3::parent_cv(src[0], src[1], b3::kRoot, digests[blockIdx.x]);
}

// Clears flags[pair.index] when the pair's bytes differ. Grid: x over each pair's bytes,
// y over pairs.
__global__ void compare_kernel(const PairDesc* pairs, std::uint32_t n_pairs, std::uint8_t* flags) {
  for (std::uint32_t p = blockIdx.y; p < n_pairs; p += gridDim.y) {
    const PairDesc pr = pairs[p];
    volatile std::uint8_t* flag = flags + pr.index;
    const std::uint64_t tid = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    const std::uint64_t stride = std::uint64_t{gridDim.x} * blockDim.x;
    const std::uintptr_t align_bits =
        reinterpret_cast<std::uintptr_t>(pr.a) | reinterpret_cast<std::uintptr_t>(pr.b);
    std::uint64_t tail_start = 0;
    bool differ = false;
    if (align_bits % 16 == 0) {
      const std::uint64_t words = pr.bytes / 16;
      const uint4* a = reinterpret_cast<const uint4*>(pr.a);
      const uint4* b = reinterpret_cast<const uint4*>(pr.b);
      std::uint32_t iter = 0;
      for (std::uint64_t i = tid; i < words && !differ; i += stride, ++iter) {
        const uint4 x = a[i];
        const uint4 y = b[i];
        differ = (x.x != y.x) | (x.y != y.y) | (x.z != y.z) | (x.w != y.w);
        if (iter % 16 == 15 && *flag == 0) break;  // another thread already found a difference
      }
      tail_start = words * 16;
    }
    for (std::uint64_t i = tail_start + tid; i < pr.bytes && !differ; i += stride) {
      differ = pr.a[i] != pr.b[i];
    }
    if (differ) *flag = 0;
  }
}

struct KVTokenDesc {
  std::uint64_t page;  // page address
  std::uint64_t engine_token;
  std::uint32_t slot;
  std::uint32_t pad;
};

struct KVKernelArgs {
  const std::uint64_t* k_ptrs;  // indexed by pool layer
  const std::uint64_t* v_ptrs;
  const KVTokenDesc* tokens;
  std::uint64_t n_tokens;
  std::uint64_t block_tokens;
  std::int64_t block_stride, token_stride, head_stride;
  std::uint32_t layer_begin, n_layers, kv_heads, page_tokens;
  std::uint32_t row_bytes;
  bool to_pages;
};

// Copies `bytes` from src to dst with one warp, using the widest access both allow.
__device__ __forceinline__ void warp_copy_row(std::uint8_t* dst, const std::uint8_t* src,
                                              std::uint32_t bytes, unsigned lane) {
  const std::uintptr_t bits =
      reinterpret_cast<std::uintptr_t>(dst) | reinterpret_cast<std::uintptr_t>(src) | bytes;
  if (bits % 16 == 0) {
    for (std::uint32_t i = lane; i < bytes / 16; i += 32) {
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
    }
  } else if (bits % 4 == 0) {
    for (std::uint32_t i = lane; i < bytes / 4; i += 32) {
      reinterpret_cast<std::uint32_t*>(dst)[i] = reinterpret_cast<const std::uint32_t*>(src)[i];
    }
  } else {
    for (std::uint32_t i = lane; i < bytes; i += 32) dst[i] = src[i];
  }
}

// One warp per row; rows enumerate (token, layer, K|V, head), head fastest.
__global__ void kv_copy_kernel(KVKernelArgs a) {
  const std::uint64_t warps = std::uint64_t{gridDim.x} * (blockDim.x / 32);
  const std::uint64_t rows = a.n_tokens * a.n_layers * 2 * a.kv_heads;
  const unsigned lane = threadIdx.x % 32;
  for (std::uint64_t row = std::uint64_t{blockIdx.x} * (blockDim.x / 32) + threadIdx.x / 32;
       row < rows; row += warps) {
    const std::uint32_t head = static_cast<std::uint32_t>(row % a.kv_heads);
    std::uint64_t rest = row / a.kv_heads;
    const int kv = static_cast<int>(rest % 2);
    rest /= 2;
    const std::uint32_t layer = a.layer_begin + static_cast<std::uint32_t>(rest % a.n_layers);
    const KVTokenDesc t = a.tokens[rest / a.n_layers];
    const std::uint64_t page_row =
        ((std::uint64_t{layer} * 2 + static_cast<std::uint64_t>(kv)) * a.page_tokens + t.slot) *
            a.kv_heads +
        head;
    auto* page = reinterpret_cast<std::uint8_t*>(t.page + page_row * a.row_bytes);
    const std::uint64_t base = kv == 0 ? a.k_ptrs[layer] : a.v_ptrs[layer];
    const std::int64_t off =
        static_cast<std::int64_t>(t.engine_token / a.block_tokens) * a.block_stride +
        static_cast<std::int64_t>(t.engine_token % a.block_tokens) * a.token_stride +
        static_cast<std::int64_t>(head) * a.head_stride;
    auto* engine = reinterpret_cast<std::uint8_t*>(base + static_cast<std::uint64_t>(off));
    if (a.to_pages) {
      warp_copy_row(page, engine, a.row_bytes, lane);
    } else {
      warp_copy_row(engine, page, a.row_bytes, lane);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Host side

using cuda_detail::DeviceScratch;
using cuda_detail::PinnedStaging;

// Makes `ordinal` the calling thread's current device; restores the previous one on exit.
class DeviceScope {
 public:
  explicit DeviceScope(int ordinal) : ordinal_(ordinal) {}
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  ~DeviceScope() {
    if (entered_ && previous_ != ordinal_) cudaSetDevice(previous_);
  }
  Status enter() {
    PF_CUDA_TRY(cudaGetDevice(&previous_));
    if (previous_ != ordinal_) PF_CUDA_TRY(cudaSetDevice(ordinal_));
    entered_ = true;
    return Status::ok();
  }

 private:
  int ordinal_;
  int previous_ = 0;
  bool entered_ = false;
};

unsigned grid_for(std::uint64_t items, int threads) {
  const std::uint64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(
      std::min<std::uint64_t>(std::max<std::uint64_t>(blocks, 1), std::uint64_t{1} << 30));
}

class CudaKernels final : public PageKernels {
 public:
  explicit CudaKernels(int ordinal) : ordinal_(ordinal) {}
  CudaKernels(const CudaKernels&) = delete;
  CudaKernels& operator=(const CudaKernels&) = delete;
  ~CudaKernels() override {
    DeviceScope scope(ordinal_);
    scope.enter().ignore();
    settle_locked().ignore();  // nothing may still run on the scratch freed below
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    for (DeviceScratch* b : {&desc_, &cvs_a_, &cvs_b_, &out_, &temp_}) b->release(stream_);
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);  // the stream-ordered frees
    if (in_flight_ != nullptr) cudaEventDestroy(in_flight_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // Creates the stream, the events and every scratch buffer at its construction size
  // (cuda_buffers.cuh), so no call of a documented-size batch allocates.
  Status init() {
    DeviceScope scope(ordinal_);
    PF_TRY(scope.enter());
    PF_CUDA_TRY(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    PF_CUDA_TRY(cudaEventCreateWithFlags(&in_flight_, cudaEventDisableTiming));
    int pools = 0;
    PF_CUDA_TRY(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, ordinal_));
    using namespace cuda_detail;
    PF_TRY(desc_.init(kScratchDescBytes, pools != 0, stream_));
    PF_TRY(cvs_a_.init(kScratchChunkValueBytes, pools != 0, stream_));
    PF_TRY(cvs_b_.init(kScratchChunkValueBytes, pools != 0, stream_));
    PF_TRY(out_.init(kScratchOutBytes, pools != 0, stream_));
    PF_TRY(temp_.init(kScratchCubBytes, pools != 0, stream_));
    PF_TRY(upload_.init(kScratchDescBytes));
    PF_TRY(readback_.init(kScratchOutBytes));
    PF_CUDA_TRY(cudaStreamSynchronize(stream_));
    return Status::ok();
  }

  std::string_view name() const override { return "cuda"; }

  Status copy_batch(std::span<const CopyOp> ops) override {
    PF_TRY(check_copy_batch(ops));
    std::size_t n = 0;
    const CopyOp* only = nullptr;
    for (const CopyOp& op : ops) {
      if (op.bytes == 0) continue;
      ++n;
      only = &op;
    }
    if (n == 0) return Status::ok();

    std::lock_guard<std::mutex> lock(mu_);
    DeviceScope scope(ordinal_);
    PF_TRY(scope.enter());
    PF_TRY(settle_locked());
    InFlight flight(*this, stream_);
    if (n == 1) {  // a one-page copy-on-write: one DMA, no descriptors, no CUB
      PF_CUDA_TRY(
          cudaMemcpyAsync(only->dst, only->src, only->bytes, cudaMemcpyDeviceToDevice, stream_));
    } else {
      // [srcs][dsts][sizes] as words, zero-byte ops dropped.
      const std::size_t bytes = 3 * n * sizeof(std::uint64_t);
      PF_ASSIGN_OR_RETURN(void* host, upload_.acquire(bytes));
      auto* staging = static_cast<std::uint64_t*>(host);
      std::size_t k = 0;
      for (const CopyOp& op : ops) {
        if (op.bytes == 0) continue;
        staging[k] = reinterpret_cast<std::uintptr_t>(op.src);
        staging[n + k] = reinterpret_cast<std::uintptr_t>(op.dst);
        staging[2 * n + k] = op.bytes;
        ++k;
      }
      PF_TRY(desc_.reserve(bytes, stream_));
      PF_CUDA_TRY(
          cudaMemcpyAsync(desc_.as<void>(), staging, bytes, cudaMemcpyHostToDevice, stream_));
      PF_TRY(upload_.uploaded(stream_));
      const void* const* srcs = desc_.as<const void* const>();
      void* const* dsts = desc_.as<void* const>() + n;
      const std::uint64_t* sizes = desc_.as<const std::uint64_t>() + 2 * n;
      std::size_t temp_bytes = 0;
      PF_CUDA_TRY(cub::DeviceMemcpy::Batched(nullptr, temp_bytes, srcs, dsts, sizes,
                                             static_cast<std::int64_t>(n), stream_));
      PF_TRY(temp_.reserve(std::max<std::size_t>(temp_bytes, 1), stream_));
      PF_CUDA_TRY(cub::DeviceMemcpy::Batched(temp_.as<void>(), temp_bytes, srcs, dsts, sizes,
                                             static_cast<std::int64_t>(n), stream_));
    }
    PF_CUDA_TRY(cudaStreamSynchronize(stream_));
    flight.completed();
    return Status::ok();
  }

  Status digest_batch(std::span<const ConstSpan> pages, std::span<Digest> out) override {
    PF_TRY(check_digest_batch(pages, out));
    if (pages.size() > UINT32_MAX) {
      return PF_ERROR(Code::kInvalidArgument, "digest_batch: too many pages in one batch");
    }
    if (pages.empty()) return Status::ok();
    const auto n_pages = static_cast<std::uint32_t>(pages.size());
    using Cv = std::uint32_t[8];

    std::lock_guard<std::mutex> lock(mu_);
    DeviceScope scope(ordinal_);
    PF_TRY(scope.enter());
    PF_TRY(settle_locked());
    InFlight flight(*this, stream_);
    const std::size_t desc_bytes = pages.size() * sizeof(PageDesc);
    PF_ASSIGN_OR_RETURN(void* host, upload_.acquire(desc_bytes));
    auto* descs = static_cast<PageDesc*>(host);
    std::uint64_t total_chunks = 0;
    for (std::size_t i = 0; i < pages.size(); ++i) {
      const std::uint64_t bytes = pages[i].bytes;
      const std::uint64_t n_chunks =
          bytes == 0 ? 1 : (bytes + b3::kChunkBytes - 1) / b3::kChunkBytes;
      descs[i] =
          PageDesc{static_cast<const std::uint8_t*>(pages[i].data), bytes, total_chunks, n_chunks};
      total_chunks += n_chunks;
    }
    PF_TRY(desc_.reserve(desc_bytes, stream_));
    PF_TRY(cvs_a_.reserve(total_chunks * sizeof(Cv), stream_));
    PF_TRY(cvs_b_.reserve(total_chunks * sizeof(Cv), stream_));
    PF_TRY(out_.reserve(pages.size() * sizeof(Cv), stream_));
    PF_CUDA_TRY(
        cudaMemcpyAsync(desc_.as<void>(), descs, desc_bytes, cudaMemcpyHostToDevice, stream_));
    PF_TRY(upload_.uploaded(stream_));
    chunk_cv_kernel<<<grid_for(total_chunks, kThreadsPerBlock), kThreadsPerBlock, 0, stream_>>>(
        desc_.as<const PageDesc>(), n_pages, total_chunks, cvs_a_.as<Cv>(), out_.as<Cv>());
    PF_CUDA_LAUNCHED();
    if (total_chunks > pages.size()) {  // some page has more than one chunk
      reduce_tree_kernel<<<n_pages, kReduceThreads, 0, stream_>>>(
          desc_.as<const PageDesc>(), cvs_a_.as<Cv>(), cvs_b_.as<Cv>(), out_.as<Cv>());
      PF_CUDA_LAUNCHED();
    }
    const std::size_t out_bytes = pages.size() * sizeof(Cv);
    PF_ASSIGN_OR_RETURN(void* back, readback_.acquire(out_bytes));
    PF_CUDA_TRY(cudaMemcpyAsync(back, out_.as<void>(), out_bytes, cudaMemcpyDeviceToHost, stream_));
    PF_TRY(readback_.uploaded(stream_));
    PF_CUDA_TRY(cudaStreamSynchronize(stream_));
    flight.completed();
    const auto* words = static_cast<const std::uint32_t*>(back);
    for (std::size_t i = 0; i < pages.size(); ++i) {
      b3::cv_to_bytes(&words[8 * i], out[i].bytes.data());
    }
    return Status::ok();
  }

  Status compare_batch(std::span<const ConstSpan> a, std::span<const ConstSpan> b,
                       std::span<std::uint8_t> equal) override {
    PF_TRY(check_compare_batch(a, b, equal));
    std::vector<PairDesc> pairs;
    std::vector<std::uint8_t> flags(a.size());
    std::uint64_t max_bytes = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      flags[i] = a[i].bytes == b[i].bytes;
      if (flags[i] && a[i].bytes != 0 && a[i].data != b[i].data) {
        pairs.push_back(PairDesc{static_cast<const std::uint8_t*>(a[i].data),
                                 static_cast<const std::uint8_t*>(b[i].data), a[i].bytes, i});
        max_bytes = std::max<std::uint64_t>(max_bytes, a[i].bytes);
      }
    }
    if (pairs.size() > UINT32_MAX) {
      return PF_ERROR(Code::kInvalidArgument, "compare_batch: too many pairs in one batch");
    }
    if (!pairs.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      DeviceScope scope(ordinal_);
      PF_TRY(scope.enter());
      PF_TRY(settle_locked());
      InFlight flight(*this, stream_);
      // One upload: [pairs][flags].
      const std::size_t pair_bytes = pairs.size() * sizeof(PairDesc);
      PF_ASSIGN_OR_RETURN(void* host, upload_.acquire(pair_bytes + flags.size()));
      std::memcpy(host, pairs.data(), pair_bytes);
      std::memcpy(static_cast<std::uint8_t*>(host) + pair_bytes, flags.data(), flags.size());
      PF_TRY(desc_.reserve(pair_bytes + flags.size(), stream_));
      PF_CUDA_TRY(cudaMemcpyAsync(desc_.as<void>(), host, pair_bytes + flags.size(),
                                  cudaMemcpyHostToDevice, stream_));
      PF_TRY(upload_.uploaded(stream_));
      std::uint8_t* dev_flags = desc_.as<std::uint8_t>() + pair_bytes;
      // Each thread covers about 16 words of 16 bytes in a pass.
      const dim3 grid(std::min<unsigned>(grid_for(max_bytes / 256 + 1, kThreadsPerBlock), 1024),
                      static_cast<unsigned>(std::min<std::size_t>(pairs.size(), 65535)));
      compare_kernel<<<grid, kThreadsPerBlock, 0, stream_>>>(
          desc_.as<const PairDesc>(), static_cast<std::uint32_t>(pairs.size()), dev_flags);
      PF_CUDA_LAUNCHED();
      PF_ASSIGN_OR_RETURN(void* back, readback_.acquire(flags.size()));
      PF_CUDA_TRY(cudaMemcpyAsync(back, dev_flags, flags.size(), cudaMemcpyDeviceToHost, stream_));
      PF_TRY(readback_.uploaded(stream_));
      PF_CUDA_TRY(cudaStreamSynchronize(stream_));
      flight.completed();
      std::memcpy(flags.data(), back, flags.size());
    }
    std::copy(flags.begin(), flags.end(), equal.begin());
    return Status::ok();
  }

  Status kv_copy(const KVCopy& job, void* stream) override {
    PF_TRY(check_kv_copy(job));
    const KVPageFormat& f = job.format;
    std::uint64_t n_tokens = 0;
    for (const KVRun& r : job.runs) n_tokens += r.count;
    if (n_tokens == 0) return Status::ok();
    // [k_ptrs][v_ptrs] as words, then one descriptor per token.
    const std::size_t ptr_bytes = 2 * std::size_t{f.layers} * sizeof(std::uint64_t);
    const std::size_t token_bytes = n_tokens * sizeof(KVTokenDesc);

    std::lock_guard<std::mutex> lock(mu_);
    DeviceScope scope(ordinal_);
    PF_TRY(scope.enter());
    PF_TRY(settle_locked());
    const cudaStream_t s = cuda_stream(stream);
    InFlight flight(*this, s);
    PF_ASSIGN_OR_RETURN(void* host, upload_.acquire(ptr_bytes + token_bytes));
    auto* words = static_cast<std::uint64_t*>(host);
    std::copy(job.engine.k_ptrs.begin(), job.engine.k_ptrs.end(), words);
    std::copy(job.engine.v_ptrs.begin(), job.engine.v_ptrs.end(), words + f.layers);
    auto* tokens = reinterpret_cast<KVTokenDesc*>(static_cast<std::uint8_t*>(host) + ptr_bytes);
    std::size_t k = 0;
    for (const KVRun& r : job.runs) {
      for (std::uint32_t t = 0; t < r.count; ++t) {
        tokens[k++] = KVTokenDesc{reinterpret_cast<std::uintptr_t>(r.page), r.engine_token + t,
                                  r.page_slot + t, 0};
      }
    }
    PF_TRY(desc_.reserve(ptr_bytes + token_bytes, s));
    auto* dev = desc_.as<std::uint8_t>();
    PF_CUDA_TRY(cudaMemcpyAsync(dev, host, ptr_bytes + token_bytes, cudaMemcpyHostToDevice, s));
    PF_TRY(upload_.uploaded(s));
    KVKernelArgs a{};
    a.k_ptrs = reinterpret_cast<const std::uint64_t*>(dev);
    a.v_ptrs = a.k_ptrs + f.layers;
    a.tokens = reinterpret_cast<const KVTokenDesc*>(dev + ptr_bytes);
    a.n_tokens = n_tokens;
    a.block_tokens = job.engine.block_tokens;
    a.block_stride = job.engine.block_stride;
    a.token_stride = job.engine.token_stride;
    a.head_stride = job.engine.head_stride;
    a.layer_begin = job.layer_begin;
    a.n_layers = job.layer_end - job.layer_begin;
    a.kv_heads = f.kv_heads;
    a.page_tokens = f.page_tokens;
    a.row_bytes = static_cast<std::uint32_t>(f.row_bytes());
    a.to_pages = job.direction == KVDirection::kEngineToPages;
    const std::uint64_t rows = a.n_tokens * a.n_layers * 2 * a.kv_heads;
    constexpr int kWarpsPerBlock = kThreadsPerBlock / 32;
    const unsigned grid = std::min<unsigned>(grid_for(rows, kWarpsPerBlock), 65535u);
    kv_copy_kernel<<<grid, kThreadsPerBlock, 0, s>>>(a);
    PF_CUDA_LAUNCHED();
    PF_CUDA_TRY(cudaStreamSynchronize(s));
    flight.completed();
    return Status::ok();
  }

  Status fence() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!in_flight_pending_ && !lost_track_) return Status::ok();
    DeviceScope scope(ordinal_);
    PF_TRY(scope.enter());
    return settle_locked();
  }

 private:
  // Marks work a call enqueued on `stream` as in flight unless the call reached completed():
  // a call that fails after enqueueing (a launch error, a failed copy) leaves its work
  // running, and the next call or fence() waits for it (settle_locked).
  class InFlight {
   public:
    InFlight(CudaKernels& k, cudaStream_t stream) : k_(k), stream_(stream) {}
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;
    ~InFlight() {
      if (!completed_) k_.left_in_flight(stream_);
    }
    void completed() { completed_ = true; }

   private:
    CudaKernels& k_;
    cudaStream_t stream_;
    bool completed_ = false;
  };

  // The cudaStream_t that kv_copy's `stream` argument names (stream_choice.h).
  cudaStream_t cuda_stream(void* stream) const {
    switch (stream_kind(stream)) {
      case StreamKind::kLegacyDefault:
        return cudaStreamLegacy;
      case StreamKind::kOwn:
        return stream_;
      case StreamKind::kCaller:
        break;
    }
    return static_cast<cudaStream_t>(stream);
  }

  // Called with mu_ held by a failing call's InFlight.
  void left_in_flight(cudaStream_t stream) {
    if (cudaEventRecord(in_flight_, stream) == cudaSuccess) {
      in_flight_pending_ = true;
    } else {
      cudaGetLastError();  // clear a non-sticky error; the device-wide wait below covers it
      lost_track_ = true;
    }
  }

  // Waits for work a failed call left in flight (mu_ held, device current).
  Status settle_locked() {
    if (lost_track_) {
      PF_CUDA_TRY(cudaDeviceSynchronize());
      lost_track_ = false;
      in_flight_pending_ = false;
    }
    if (in_flight_pending_) {
      PF_CUDA_TRY(cudaEventSynchronize(in_flight_));
      in_flight_pending_ = false;
    }
    return Status::ok();
  }

  const int ordinal_;
  cudaStream_t stream_ = nullptr;
  std::mutex mu_;
  cudaEvent_t in_flight_ = nullptr;  // recorded after the work of a failed call
  bool in_flight_pending_ = false;   // in_flight_ was recorded and not yet waited for
  bool lost_track_ = false;          // recording failed: wait for the whole device
  DeviceScratch desc_;               // per-call descriptors (copy arrays, pages, pairs+flags)
  DeviceScratch cvs_a_;              // chunk chaining values, then even tree levels
  DeviceScratch cvs_b_;              // odd tree levels
  DeviceScratch out_;                // digests as words
  DeviceScratch temp_;               // CUB temporary storage
  PinnedStaging upload_;             // descriptors on their way to desc_
  PinnedStaging readback_;           // digests or flags on their way back
};

}  // namespace

Result<std::unique_ptr<PageKernels>> make_cuda_kernels(int device_ordinal) {
  const std::string device = "cuda:" + std::to_string(device_ordinal);
  if (device_ordinal < 0) {
    return PF_ERROR(Code::kInvalidArgument, "invalid CUDA device ordinal " + device);
  }
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error for later callers
    const bool absent = err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver;
    return PF_ERROR(Code::kUnavailable,
                    "CUDA page kernels for " + device + " are unavailable" +
                        (absent ? " (no usable CUDA driver or GPU on this machine)" : "") + ": " +
                        cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  }
  if (device_ordinal >= count) {
    return PF_ERROR(Code::kUnavailable, "CUDA page kernels for " + device +
                                            " are unavailable: the machine has " +
                                            std::to_string(count) + " CUDA device(s)");
  }
  auto kernels = std::make_unique<CudaKernels>(device_ordinal);
  Status s = kernels->init();
  if (!s.is_ok()) return s;
  return std::unique_ptr<PageKernels>(std::move(kernels));
}

}  // namespace pf::kernels
