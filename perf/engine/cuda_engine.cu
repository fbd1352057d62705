// The CUDA implementation of the reference engine (engine.h); compiled only when
// PF_HAVE_CUDA is on. Pages (pool mappings or cudaMalloc'd arenas) and weights live in
// device memory; the page table is uploaded per forward() call.
//
// DESIGN
//  - Same model, same block structure as the host engine (kBlock tokens per pass; RoPE
//    cos/sin computed on the host in double and uploaded), one kernel per step.
//  - Determinism: every reduction has a fixed shape that depends only on the sizes — a
//    warp's xor-shuffle tree over lane-strided partial sums (matmul), a shared-memory tree
//    over thread-strided partial sums (RMSNorm, softmax sums), and fixed position-strided
//    groups combined in group order (attention's weighted V sum). No atomics, no
//    data-dependent splitting. So results repeat bit for bit on one GPU whatever pages hold
//    the KV; they are close to, not identical with, the host engine's.
//  - Every call is blocking (one stream, synchronized before returning) and restores the
//    caller's current device. Errors become Code::kDriver; no device is kUnavailable.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda_check.cuh"
#include "perf/engine/engine.h"

namespace pf::engine {
namespace {

constexpr std::size_t kBlock = 16;
constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

// ---------------------------------------------------------------------------------------
// Device code

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Fixed-shape block reduction (sum or max) of one value per thread; every thread gets the
// result. `red` holds kThreads floats.
template <bool kMax>
__device__ float block_reduce(float v, float* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float a = red[threadIdx.x];
      const float b = red[threadIdx.x + s];
      red[threadIdx.x] = kMax ? fmaxf(a, b) : a + b;
    }
    __syncthreads();
  }
  const float r = red[0];
  __syncthreads();
  return r;
}

__device__ __forceinline__ float load_elem(const std::uint8_t* row, int i, bool bf16) {
  if (!bf16) return reinterpret_cast<const float*>(row)[i];
  const std::uint32_t u = std::uint32_t{reinterpret_cast<const std::uint16_t*>(row)[i]} << 16;
  return __uint_as_float(u);
}

__device__ __forceinline__ void store_elem(std::uint8_t* row, int i, float f, bool bf16) {
  if (!bf16) {
    reinterpret_cast<float*>(row)[i] = f;
    return;
  }
  std::uint32_t u = __float_as_uint(f);
  std::uint16_t h;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    h = static_cast<std::uint16_t>((u >> 16) | 0x40);
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);
    h = static_cast<std::uint16_t>(u >> 16);
  }
  reinterpret_cast<std::uint16_t*>(row)[i] = h;
}

struct KvDesc {
  std::uint8_t* const* pages;  // device array of page base pointers
  std::uint32_t page_tokens;
  std::uint64_t block_bytes;  // one layer's K (or V) block
  std::uint64_t token_bytes;  // one token's row
  bool bf16;
};

__device__ __forceinline__ std::uint8_t* kv_row(const KvDesc& kv, int layer, int half,
                                                std::uint64_t token) {
  return kv.pages[token / kv.page_tokens] + (std::uint64_t(layer) * 2 + half) * kv.block_bytes +
         (token % kv.page_tokens) * kv.token_bytes;
}

__global__ void embed_kernel(const std::uint32_t* tokens, const float* embed, int d, float* x) {
  const int t = blockIdx.x;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    x[std::size_t(t) * d + i] = embed[std::size_t(tokens[t]) * d + i];
  }
}

// One block per token.
__global__ void rmsnorm_kernel(const float* x, const float* gain, int d, float eps, float* y) {
  __shared__ float red[kThreads];
  const float* xr = x + std::size_t(blockIdx.x) * d;
  float acc = 0.0f;
  for (int i = threadIdx.x; i < d; i += kThreads) acc += xr[i] * xr[i];
  const float ss = block_reduce<false>(acc, red);
  const float scale = 1.0f / sqrtf(ss / float(d) + eps);
  float* yr = y + std::size_t(blockIdx.x) * d;
  for (int i = threadIdx.x; i < d; i += kThreads) yr[i] = xr[i] * scale * gain[i];
}

// y[t][o] = scale * dot(x[t], W[o]): one warp per output row o, over all rows t.
__global__ void matmul_kernel(const float* x, int rows, int in, const float* w, int out,
                              float scale, float* y) {
  const int o = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (o >= out) return;
  const float* wr = w + std::size_t(o) * in;
  for (int t = 0; t < rows; ++t) {
    const float* xr = x + std::size_t(t) * in;
    float acc = 0.0f;
    for (int k = lane; k < in; k += 32) acc += xr[k] * wr[k];
    acc = warp_sum(acc);
    if (lane == 0) y[std::size_t(t) * out + o] = acc * scale;
  }
}

// RoPE on q and k of token t (block t), then K and V rows into the pages.
__global__ void rope_store_kernel(float* q, float* k, const float* v, const float* cos_t,
                                  const float* sin_t, int n_heads, int n_kv_heads, int hd,
                                  KvDesc kv, int layer, std::uint64_t pos0) {
  const int t = blockIdx.x;
  const int half = hd / 2;
  const int q_dim = n_heads * hd;
  const int kv_dim = n_kv_heads * hd;
  const float* c = cos_t + std::size_t(t) * half;
  const float* s = sin_t + std::size_t(t) * half;
  for (int idx = threadIdx.x; idx < (n_heads + n_kv_heads) * half; idx += blockDim.x) {
    const int head = idx / half;
    const int i = idx % half;
    float* base = head < n_heads ? q + std::size_t(t) * q_dim + head * hd
                                 : k + std::size_t(t) * kv_dim + (head - n_heads) * hd;
    const float a = base[i];
    const float b = base[i + half];
    base[i] = a * c[i] - b * s[i];
    base[i + half] = a * s[i] + b * c[i];
  }
  __syncthreads();
  std::uint8_t* krow = kv_row(kv, layer, 0, pos0 + t);
  std::uint8_t* vrow = kv_row(kv, layer, 1, pos0 + t);
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    store_elem(krow, i, k[std::size_t(t) * kv_dim + i], kv.bf16);
    store_elem(vrow, i, v[std::size_t(t) * kv_dim + i], kv.bf16);
  }
}

// Attention of token t (blockIdx.y) query head hq (blockIdx.x) over rows 0..pos0+t.
// scores: scratch of max_len floats per (t, hq).
__global__ void attention_kernel(const float* q, KvDesc kv, int layer, std::uint64_t pos0,
                                 int n_heads, int n_kv_heads, int hd, float scale, float* scores,
                                 std::uint64_t max_len, float* out) {
  __shared__ float red[kThreads];
  extern __shared__ float dyn[];  // q vector (hd) + partial outputs (groups * hd)
  const int hq = blockIdx.x;
  const int t = blockIdx.y;
  const int hk = hq / (n_heads / n_kv_heads);
  const std::uint64_t len = pos0 + t + 1;
  const int esize = kv.bf16 ? 2 : 4;
  float* qv = dyn;
  float* part = dyn + hd;
  for (int i = threadIdx.x; i < hd; i += kThreads) {
    qv[i] = q[(std::size_t(t) * n_heads + hq) * hd + i];
  }
  __syncthreads();
  float* s = scores + (std::size_t(t) * n_heads + hq) * max_len;
  float m = -INFINITY;
  for (std::uint64_t j = threadIdx.x; j < len; j += kThreads) {
    const std::uint8_t* krow = kv_row(kv, layer, 0, j) + std::size_t(hk) * hd * esize;
    float acc = 0.0f;
    for (int i = 0; i < hd; ++i) acc += qv[i] * load_elem(krow, i, kv.bf16);
    acc *= scale;
    s[j] = acc;
    m = fmaxf(m, acc);
  }
  m = block_reduce<true>(m, red);
  float sum = 0.0f;
  for (std::uint64_t j = threadIdx.x; j < len; j += kThreads) {
    const float e = expf(s[j] - m);
    s[j] = e;
    sum += e;
  }
  sum = block_reduce<false>(sum, red);  // also a barrier: every s[j] is written
  const int groups = kThreads / hd;
  if (threadIdx.x < groups * hd) {
    const int e = threadIdx.x % hd;
    const int g = threadIdx.x / hd;
    float acc = 0.0f;
    for (std::uint64_t j = g; j < len; j += groups) {
      acc += s[j] * load_elem(kv_row(kv, layer, 1, j) + std::size_t(hk) * hd * esize, e, kv.bf16);
    }
    part[g * hd + e] = acc;
  }
  __syncthreads();
  if (threadIdx.x < hd) {
    float acc = 0.0f;
    for (int g = 0; g < groups; ++g) acc += part[g * hd + threadIdx.x];
    out[(std::size_t(t) * n_heads + hq) * hd + threadIdx.x] = acc * (1.0f / sum);
  }
}

__global__ void add_kernel(float* x, const float* y, std::size_t n) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void swiglu_kernel(float* g, const float* u, std::size_t n) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const float gi = g[i];
    g[i] = gi / (1.0f + expf(-gi)) * u[i];
  }
}

// ---------------------------------------------------------------------------------------
// Host side

unsigned blocks_for(std::size_t n) {
  return static_cast<unsigned>((n + kThreads - 1) / kThreads);
}

class DeviceGuard {
 public:
  explicit DeviceGuard(int ordinal) {
    if (cudaGetDevice(&prev_) != cudaSuccess) prev_ = -1;
    ok_ = cudaSetDevice(ordinal) == cudaSuccess;
  }
  ~DeviceGuard() {
    if (prev_ >= 0) (void)cudaSetDevice(prev_);
  }
  bool ok() const { return ok_; }

 private:
  int prev_ = -1;
  bool ok_ = false;
};

// A growable device buffer.
struct DevBuf {
  void* p = nullptr;
  std::size_t bytes = 0;
  ~DevBuf() {
    if (p != nullptr) (void)cudaFree(p);
  }
  Status reserve(std::size_t n) {
    if (n <= bytes) return Status::ok();
    if (p != nullptr) PF_CUDA_TRY(cudaFree(p));
    p = nullptr;
    bytes = 0;
    PF_CUDA_TRY(cudaMalloc(&p, n));
    bytes = n;
    return Status::ok();
  }
  float* f() const { return static_cast<float*>(p); }
};

void free_device_pages(std::byte* p) {
  (void)cudaFree(p);
}

class CudaEngine final : public Engine {
 public:
  CudaEngine(const ModelConfig& cfg, int ordinal) : cfg_(cfg), ordinal_(ordinal) {}
  ~CudaEngine() override {
    DeviceGuard guard(ordinal_);
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }

  Status init() {
    DeviceGuard guard(ordinal_);
    if (!guard.ok()) {
      return PF_ERROR(Code::kUnavailable, "cuda:" + std::to_string(ordinal_) + " is not usable");
    }
    PF_CUDA_TRY(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const Weights w = make_weights(cfg_);
    // One device buffer for all weights; offsets_ in floats.
    std::vector<float> all;
    const auto put = [&](const std::vector<float>& v) {
      const std::size_t off = all.size();
      all.insert(all.end(), v.begin(), v.end());
      return off;
    };
    embed_ = put(w.embed);
    for (const LayerWeights& l : w.layers) {
      layers_.push_back({put(l.attn_norm), put(l.wq), put(l.wk), put(l.wv), put(l.wo),
                         put(l.mlp_norm), put(l.w_gate), put(l.w_up), put(l.w_down)});
    }
    final_norm_ = put(w.final_norm);
    head_ = w.lm_head.empty() ? embed_ : put(w.lm_head);
    PF_TRY(weights_.reserve(all.size() * sizeof(float)));
    PF_CUDA_TRY(
        cudaMemcpy(weights_.p, all.data(), all.size() * sizeof(float), cudaMemcpyHostToDevice));
    const std::size_t half = cfg_.head_dim / 2;
    inv_freq_.resize(half);
    for (std::size_t i = 0; i < half; ++i) {
      inv_freq_[i] = std::pow(static_cast<double>(cfg_.rope_theta),
                              -2.0 * static_cast<double>(i) / static_cast<double>(cfg_.head_dim));
    }
    return Status::ok();
  }

  std::string name() const override { return "cuda:" + std::to_string(ordinal_); }
  const ModelConfig& config() const override { return cfg_; }
  bool host_memory() const override { return false; }

  Status forward(PagedKv& kv, std::span<const rt::Token> tokens, std::span<float> logits) override {
    PF_TRY(check_forward(kv, tokens, logits));
    DeviceGuard guard(ordinal_);
    if (!guard.ok()) return PF_ERROR(Code::kDriver, "cudaSetDevice failed");
    // The page table, as far as this call reaches.
    const std::uint64_t end = kv.n_tokens() + tokens.size();
    const std::size_t n_pages =
        static_cast<std::size_t>((end + kv.geometry().page_tokens - 1) / kv.geometry().page_tokens);
    PF_TRY(table_.reserve(std::max<std::size_t>(1, n_pages) * sizeof(void*)));
    PF_CUDA_TRY(cudaMemcpyAsync(table_.p, kv.pages().data(), n_pages * sizeof(void*),
                                cudaMemcpyHostToDevice, stream_));
    for (std::size_t b = 0; b < tokens.size(); b += kBlock) {
      const std::size_t n = std::min(kBlock, tokens.size() - b);
      const bool last = b + n == tokens.size();
      PF_TRY(run_block(kv, tokens.subspan(b, n), last ? logits : std::span<float>{}));
      PF_TRY(kv.set_n_tokens(kv.n_tokens() + n));
    }
    PF_CUDA_TRY(cudaStreamSynchronize(stream_));
    return Status::ok();
  }

  Result<PageArena> alloc_pages(std::size_t n_pages, std::size_t page_bytes) override {
    const std::size_t stride = (page_bytes + 255) / 256 * 256;
    if (n_pages == 0 || stride == 0) {
      return PF_ERROR(Code::kInvalidArgument, "alloc_pages: zero pages or page bytes");
    }
    DeviceGuard guard(ordinal_);
    void* p = nullptr;
    PF_CUDA_TRY(cudaMalloc(&p, n_pages * stride));
    return PageArena(static_cast<std::byte*>(p), n_pages, stride, &free_device_pages);
  }
  Status copy_to_host(void* host, const void* dev, std::size_t n) override {
    DeviceGuard guard(ordinal_);
    PF_CUDA_TRY(cudaMemcpy(host, dev, n, cudaMemcpyDefault));
    return Status::ok();
  }
  Status copy_from_host(void* dev, const void* host, std::size_t n) override {
    DeviceGuard guard(ordinal_);
    PF_CUDA_TRY(cudaMemcpy(dev, host, n, cudaMemcpyDefault));
    return Status::ok();
  }
  Status copy_within(void* dst, const void* src, std::size_t n) override {
    DeviceGuard guard(ordinal_);
    PF_CUDA_TRY(cudaMemcpy(dst, src, n, cudaMemcpyDefault));
    return Status::ok();
  }

 private:
  struct LayerOffsets {
    std::size_t attn_norm, wq, wk, wv, wo, mlp_norm, w_gate, w_up, w_down;
  };

  const float* W(std::size_t off) const { return weights_.f() + off; }

  Status matmul(const float* x, std::size_t rows, std::size_t in, const float* w, std::size_t out,
                float* y, float scale = 1.0f) {
    const unsigned grid = static_cast<unsigned>((out + kWarpsPerBlock - 1) / kWarpsPerBlock);
    matmul_kernel<<<grid, kThreads, 0, stream_>>>(x, static_cast<int>(rows), static_cast<int>(in),
                                                  w, static_cast<int>(out), scale, y);
    PF_CUDA_LAUNCHED();
    return Status::ok();
  }

  Status run_block(PagedKv& kv, std::span<const rt::Token> tokens, std::span<float> logits) {
    const std::size_t n = tokens.size();
    const std::size_t d = cfg_.d_model;
    const std::size_t hd = cfg_.head_dim;
    const std::size_t half = hd / 2;
    const std::size_t q_dim = std::size_t{cfg_.n_heads} * hd;
    const std::size_t kv_dim = std::size_t{cfg_.n_kv_heads} * hd;
    const std::size_t ffn = cfg_.ffn_dim;
    const std::uint64_t pos0 = kv.n_tokens();
    const std::uint64_t max_len = pos0 + n;

    PF_TRY(tok_.reserve(kBlock * sizeof(std::uint32_t)));
    PF_TRY(x_.reserve(kBlock * d * 4));
    PF_TRY(h_.reserve(kBlock * d * 4));
    PF_TRY(q_.reserve(kBlock * q_dim * 4));
    PF_TRY(k_.reserve(kBlock * kv_dim * 4));
    PF_TRY(v_.reserve(kBlock * kv_dim * 4));
    PF_TRY(att_.reserve(kBlock * q_dim * 4));
    PF_TRY(o_.reserve(kBlock * d * 4));
    PF_TRY(g_.reserve(kBlock * ffn * 4));
    PF_TRY(u_.reserve(kBlock * ffn * 4));
    PF_TRY(rope_.reserve(2 * kBlock * half * 4));
    PF_TRY(logits_.reserve(std::size_t{cfg_.vocab} * 4));
    if (scores_.bytes < kBlock * q_dim / hd * max_len * 4) {
      // Grow geometrically: decode adds one position per call.
      PF_CUDA_TRY(cudaStreamSynchronize(stream_));
      PF_TRY(scores_.reserve(kBlock * cfg_.n_heads * (max_len * 3 / 2 + 256) * 4));
    }
    const std::uint64_t score_stride = scores_.bytes / 4 / (kBlock * cfg_.n_heads);

    // Host staging must outlive the async copies: synchronize before reusing it.
    PF_CUDA_TRY(cudaStreamSynchronize(stream_));
    staging_tok_.assign(tokens.begin(), tokens.end());
    staging_rope_.resize(2 * n * half);
    for (std::size_t t = 0; t < n; ++t) {
      for (std::size_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(pos0 + t) * inv_freq_[i];
        staging_rope_[t * half + i] = static_cast<float>(std::cos(angle));
        staging_rope_[n * half + t * half + i] = static_cast<float>(std::sin(angle));
      }
    }
    PF_CUDA_TRY(
        cudaMemcpyAsync(tok_.p, staging_tok_.data(), n * 4, cudaMemcpyHostToDevice, stream_));
    PF_CUDA_TRY(cudaMemcpyAsync(rope_.p, staging_rope_.data(), 2 * n * half * 4,
                                cudaMemcpyHostToDevice, stream_));
    const float* cos_t = rope_.f();
    const float* sin_t = rope_.f() + n * half;

    KvDesc desc{static_cast<std::uint8_t* const*>(table_.p), kv.geometry().page_tokens,
                kv.geometry().block_bytes(), kv.geometry().token_bytes(),
                kv.geometry().dtype == rt::DType::kBF16};
    const unsigned nb = static_cast<unsigned>(n);
    embed_kernel<<<nb, kThreads, 0, stream_>>>(static_cast<const std::uint32_t*>(tok_.p), W(embed_),
                                               static_cast<int>(d), x_.f());
    PF_CUDA_LAUNCHED();
    const int groups = kThreads / static_cast<int>(hd);
    const std::size_t attn_smem = (hd + static_cast<std::size_t>(groups) * hd) * sizeof(float);
    for (std::uint32_t l = 0; l < cfg_.layers; ++l) {
      const LayerOffsets& lo = layers_[l];
      rmsnorm_kernel<<<nb, kThreads, 0, stream_>>>(x_.f(), W(lo.attn_norm), static_cast<int>(d),
                                                   cfg_.norm_eps, h_.f());
      PF_CUDA_LAUNCHED();
      PF_TRY(matmul(h_.f(), n, d, W(lo.wq), q_dim, q_.f()));
      PF_TRY(matmul(h_.f(), n, d, W(lo.wk), kv_dim, k_.f()));
      PF_TRY(matmul(h_.f(), n, d, W(lo.wv), kv_dim, v_.f()));
      rope_store_kernel<<<nb, kThreads, 0, stream_>>>(
          q_.f(), k_.f(), v_.f(), cos_t, sin_t, static_cast<int>(cfg_.n_heads),
          static_cast<int>(cfg_.n_kv_heads), static_cast<int>(hd), desc, static_cast<int>(l), pos0);
      PF_CUDA_LAUNCHED();
      attention_kernel<<<dim3(cfg_.n_heads, nb), kThreads, attn_smem, stream_>>>(
          q_.f(), desc, static_cast<int>(l), pos0, static_cast<int>(cfg_.n_heads),
          static_cast<int>(cfg_.n_kv_heads), static_cast<int>(hd),
          1.0f / std::sqrt(static_cast<float>(hd)), scores_.f(), score_stride, att_.f());
      PF_CUDA_LAUNCHED();
      PF_TRY(matmul(att_.f(), n, q_dim, W(lo.wo), d, o_.f()));
      add_kernel<<<blocks_for(n * d), kThreads, 0, stream_>>>(x_.f(), o_.f(), n * d);
      PF_CUDA_LAUNCHED();
      rmsnorm_kernel<<<nb, kThreads, 0, stream_>>>(x_.f(), W(lo.mlp_norm), static_cast<int>(d),
                                                   cfg_.norm_eps, h_.f());
      PF_CUDA_LAUNCHED();
      PF_TRY(matmul(h_.f(), n, d, W(lo.w_gate), ffn, g_.f()));
      PF_TRY(matmul(h_.f(), n, d, W(lo.w_up), ffn, u_.f()));
      swiglu_kernel<<<blocks_for(n * ffn), kThreads, 0, stream_>>>(g_.f(), u_.f(), n * ffn);
      PF_CUDA_LAUNCHED();
      PF_TRY(matmul(g_.f(), n, ffn, W(lo.w_down), d, o_.f()));
      add_kernel<<<blocks_for(n * d), kThreads, 0, stream_>>>(x_.f(), o_.f(), n * d);
      PF_CUDA_LAUNCHED();
    }
    if (logits.empty()) return Status::ok();
    rmsnorm_kernel<<<1, kThreads, 0, stream_>>>(x_.f() + (n - 1) * d, W(final_norm_),
                                                static_cast<int>(d), cfg_.norm_eps, h_.f());
    PF_CUDA_LAUNCHED();
    PF_TRY(matmul(h_.f(), 1, d, W(head_), cfg_.vocab, logits_.f(), cfg_.logit_scale()));
    PF_CUDA_TRY(cudaMemcpyAsync(logits.data(), logits_.p, std::size_t{cfg_.vocab} * 4,
                                cudaMemcpyDeviceToHost, stream_));
    PF_CUDA_TRY(cudaStreamSynchronize(stream_));
    return Status::ok();
  }

  ModelConfig cfg_;
  int ordinal_;
  cudaStream_t stream_ = nullptr;
  DevBuf weights_;
  std::size_t embed_ = 0, final_norm_ = 0, head_ = 0;
  std::vector<LayerOffsets> layers_;
  std::vector<double> inv_freq_;
  DevBuf table_, tok_, x_, h_, q_, k_, v_, att_, o_, g_, u_, rope_, logits_, scores_;
  std::vector<std::uint32_t> staging_tok_;
  std::vector<float> staging_rope_;
};

}  // namespace

Result<std::unique_ptr<Engine>> make_cuda_engine(const ModelConfig& cfg, int ordinal) {
  PF_TRY(cfg.validate());
  if (ordinal < 0) {
    return PF_ERROR(Code::kInvalidArgument,
                    "invalid CUDA device ordinal " + std::to_string(ordinal));
  }
  if (cfg.head_dim > static_cast<std::uint32_t>(kThreads)) {
    return PF_ERROR(Code::kUnsupported,
                    "the CUDA engine supports head_dim up to " + std::to_string(kThreads));
  }
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || ordinal >= count) {
    (void)cudaGetLastError();
    return PF_ERROR(Code::kUnavailable,
                    "cuda:" + std::to_string(ordinal) + " unavailable: " +
                        (err != cudaSuccess ? std::string(cudaGetErrorString(err))
                                            : std::to_string(count) + " CUDA device(s)"));
  }
  auto engine = std::make_unique<CudaEngine>(cfg, ordinal);
  PF_TRY(engine->init());
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace pf::engine
