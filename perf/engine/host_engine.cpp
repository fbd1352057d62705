// The host implementation of the reference engine (engine.h): single-threaded fp32 with a
// fixed reduction order everywhere.
//
// Tokens are processed in blocks of kBlock so that each weight row is read once per block;
// every output element is still one dot() over the same inputs in the same order as when
// the token is processed alone, so block boundaries never change a bit. Attention of the
// block's i-th token runs after the block's K/V rows are in the pages and reads rows
// 0 .. position(i) only.
//
// This file is compiled with -ffp-contract=off (perf/CMakeLists.txt): no fused
// multiply-adds, so the bits do not depend on the compiler's contraction choices.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "perf/engine/engine.h"

namespace pf::engine {
namespace {

constexpr std::size_t kBlock = 16;

// Dot product in a fixed order: eight interleaved partial sums (element k goes to sum
// k % 8), combined pairwise. Depends only on n.
float dot(const float* a, const float* b, std::size_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (std::size_t k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  }
  for (std::size_t k = 0; i < n; ++i, ++k) acc[k] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// y[t][o] = dot(x[t], W[o]) for t < rows, o < out; W is [out][in].
void matmul(const float* x, std::size_t rows, std::size_t in, const float* w, std::size_t out,
            float* y) {
  for (std::size_t o = 0; o < out; ++o) {
    const float* wr = w + o * in;
    for (std::size_t t = 0; t < rows; ++t) y[t * out + o] = dot(x + t * in, wr, in);
  }
}

void rmsnorm(const float* x, const float* gain, std::size_t d, float eps, float* y) {
  const float ss = dot(x, x, d);
  const float scale = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
  for (std::size_t i = 0; i < d; ++i) y[i] = x[i] * scale * gain[i];
}

std::uint16_t to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<std::uint16_t>(u >> 16);
}

float from_bf16(std::uint16_t h) {
  const std::uint32_t u = std::uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void store_row(std::byte* dst, const float* src, std::size_t n, rt::DType dtype) {
  if (dtype == rt::DType::kFP32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint16_t h = to_bf16(src[i]);
    std::memcpy(dst + 2 * i, &h, 2);
  }
}

// The n floats of the row at src, converted from dtype into tmp (copied for fp32: page
// bytes are never read through a float lvalue).
const float* load_row(const std::byte* src, std::size_t n, rt::DType dtype, float* tmp) {
  if (dtype == rt::DType::kFP32) {
    std::memcpy(tmp, src, n * sizeof(float));
    return tmp;
  }
  for (std::size_t i = 0; i < n; ++i) {
    std::uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    tmp[i] = from_bf16(h);
  }
  return tmp;
}

void free_host_pages(std::byte* p) {
  std::free(p);
}

class HostEngine final : public Engine {
 public:
  explicit HostEngine(const ModelConfig& cfg) : cfg_(cfg), w_(make_weights(cfg)) {
    const std::size_t half = cfg.head_dim / 2;
    inv_freq_.resize(half);
    for (std::size_t i = 0; i < half; ++i) {
      inv_freq_[i] = std::pow(static_cast<double>(cfg.rope_theta),
                              -2.0 * static_cast<double>(i) / static_cast<double>(cfg.head_dim));
    }
  }

  std::string name() const override { return "host"; }
  const ModelConfig& config() const override { return cfg_; }
  bool host_memory() const override { return true; }

  Status forward(PagedKv& kv, std::span<const rt::Token> tokens, std::span<float> logits) override {
    PF_TRY(check_forward(kv, tokens, logits));
    for (std::size_t b = 0; b < tokens.size(); b += kBlock) {
      const std::size_t n = std::min(kBlock, tokens.size() - b);
      const bool last = b + n == tokens.size();
      run_block(kv, tokens.subspan(b, n), last ? logits : std::span<float>{});
      PF_TRY(kv.set_n_tokens(kv.n_tokens() + n));
    }
    return Status::ok();
  }

  Result<PageArena> alloc_pages(std::size_t n_pages, std::size_t page_bytes) override {
    const std::size_t stride = (page_bytes + 255) / 256 * 256;
    if (n_pages == 0 || stride == 0) {
      return PF_ERROR(Code::kInvalidArgument, "alloc_pages: zero pages or page bytes");
    }
    void* p = std::aligned_alloc(256, n_pages * stride);
    if (p == nullptr) return PF_ERROR(Code::kOutOfMemory, "alloc_pages: out of host memory");
    return PageArena(static_cast<std::byte*>(p), n_pages, stride, &free_host_pages);
  }
  Status copy_to_host(void* host, const void* dev, std::size_t n) override {
    std::memcpy(host, dev, n);
    return Status::ok();
  }
  Status copy_from_host(void* dev, const void* host, std::size_t n) override {
    std::memcpy(dev, host, n);
    return Status::ok();
  }
  Status copy_within(void* dst, const void* src, std::size_t n) override {
    std::memmove(dst, src, n);
    return Status::ok();
  }

 private:
  // Runs n <= kBlock tokens at positions kv.n_tokens() ...; writes logits of the last one
  // when `logits` is not empty.
  void run_block(PagedKv& kv, std::span<const rt::Token> tokens, std::span<float> logits) {
    const std::size_t n = tokens.size();
    const std::size_t d = cfg_.d_model;
    const std::size_t hd = cfg_.head_dim;
    const std::size_t q_dim = std::size_t{cfg_.n_heads} * hd;
    const std::size_t kv_dim = std::size_t{cfg_.n_kv_heads} * hd;
    const std::size_t ffn = cfg_.ffn_dim;
    const std::uint64_t pos0 = kv.n_tokens();
    const rt::DType dtype = kv.geometry().dtype;

    x_.assign(n * d, 0.0f);
    h_.resize(n * d);
    q_.resize(n * q_dim);
    k_.resize(n * kv_dim);
    v_.resize(n * kv_dim);
    att_.resize(n * q_dim);
    o_.resize(n * d);
    g_.resize(n * ffn);
    u_.resize(n * ffn);
    for (std::size_t t = 0; t < n; ++t) {
      std::memcpy(&x_[t * d], &w_.embed[std::size_t{tokens[t]} * d], d * sizeof(float));
    }
    // cos/sin of every (token, frequency) of the block: shared by all heads and layers.
    const std::size_t half = hd / 2;
    cos_.resize(n * half);
    sin_.resize(n * half);
    for (std::size_t t = 0; t < n; ++t) {
      for (std::size_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(pos0 + t) * inv_freq_[i];
        cos_[t * half + i] = static_cast<float>(std::cos(angle));
        sin_[t * half + i] = static_cast<float>(std::sin(angle));
      }
    }

    for (std::uint32_t l = 0; l < cfg_.layers; ++l) {
      const LayerWeights& lw = w_.layers[l];
      for (std::size_t t = 0; t < n; ++t) {
        rmsnorm(&x_[t * d], lw.attn_norm.data(), d, cfg_.norm_eps, &h_[t * d]);
      }
      matmul(h_.data(), n, d, lw.wq.data(), q_dim, q_.data());
      matmul(h_.data(), n, d, lw.wk.data(), kv_dim, k_.data());
      matmul(h_.data(), n, d, lw.wv.data(), kv_dim, v_.data());
      for (std::size_t t = 0; t < n; ++t) {
        for (std::uint32_t hq = 0; hq < cfg_.n_heads; ++hq) rope(&q_[t * q_dim + hq * hd], t);
        for (std::uint32_t hk = 0; hk < cfg_.n_kv_heads; ++hk) rope(&k_[t * kv_dim + hk * hd], t);
        store_row(kv.row(l, rt::Half::kK, pos0 + t), &k_[t * kv_dim], kv_dim, dtype);
        store_row(kv.row(l, rt::Half::kV, pos0 + t), &v_[t * kv_dim], kv_dim, dtype);
      }
      for (std::size_t t = 0; t < n; ++t) attend(kv, l, pos0 + t, &q_[t * q_dim], &att_[t * q_dim]);
      matmul(att_.data(), n, q_dim, lw.wo.data(), d, o_.data());
      for (std::size_t i = 0; i < n * d; ++i) x_[i] += o_[i];

      for (std::size_t t = 0; t < n; ++t) {
        rmsnorm(&x_[t * d], lw.mlp_norm.data(), d, cfg_.norm_eps, &h_[t * d]);
      }
      matmul(h_.data(), n, d, lw.w_gate.data(), ffn, g_.data());
      matmul(h_.data(), n, d, lw.w_up.data(), ffn, u_.data());
      for (std::size_t i = 0; i < n * ffn; ++i) {
        const float gi = g_[i];
        g_[i] = gi / (1.0f + std::exp(-gi)) * u_[i];  // SiLU(gate) * up
      }
      matmul(g_.data(), n, ffn, lw.w_down.data(), d, o_.data());
      for (std::size_t i = 0; i < n * d; ++i) x_[i] += o_[i];
    }

    if (logits.empty()) return;
    rmsnorm(&x_[(n - 1) * d], w_.final_norm.data(), d, cfg_.norm_eps, h_.data());
    const float scale = cfg_.logit_scale();
    matmul(h_.data(), 1, d, w_.head().data(), cfg_.vocab, logits.data());
    for (float& z : logits) z *= scale;
  }

  // Rotary embedding of one head vector of the block's t-th token ("rotate half" pairing:
  // element i with element i + head_dim / 2).
  void rope(float* x, std::size_t t) const {
    const std::size_t half = cfg_.head_dim / 2;
    for (std::size_t i = 0; i < half; ++i) {
      const float c = cos_[t * half + i];
      const float s = sin_[t * half + i];
      const float a = x[i];
      const float b = x[i + half];
      x[i] = a * c - b * s;
      x[i + half] = a * s + b * c;
    }
  }

  // Attention of the token at `pos` (its query heads in q) over rows 0..pos of layer l,
  // read from the pages; out receives n_heads * head_dim floats.
  void attend(const PagedKv& kv, std::uint32_t l, std::uint64_t pos, const float* q, float* out) {
    const std::size_t hd = cfg_.head_dim;
    const std::size_t group = cfg_.n_heads / cfg_.n_kv_heads;
    const std::size_t len = pos + 1;
    const std::size_t esize = rt::dtype_bytes(kv.geometry().dtype);
    const rt::DType dtype = kv.geometry().dtype;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    scores_.resize(group * len);
    sums_.resize(group);
    row_.resize(hd);
    for (std::uint32_t hk = 0; hk < cfg_.n_kv_heads; ++hk) {
      for (std::size_t j = 0; j < len; ++j) {
        const float* krow =
            load_row(kv.row(l, rt::Half::kK, j) + hk * hd * esize, hd, dtype, row_.data());
        for (std::size_t g = 0; g < group; ++g) {
          scores_[g * len + j] = dot(q + (hk * group + g) * hd, krow, hd) * scale;
        }
      }
      for (std::size_t g = 0; g < group; ++g) {
        float* s = &scores_[g * len];
        float m = s[0];
        for (std::size_t j = 1; j < len; ++j) m = std::max(m, s[j]);
        float sum = 0.0f;
        for (std::size_t j = 0; j < len; ++j) {
          s[j] = std::exp(s[j] - m);
          sum += s[j];
        }
        sums_[g] = sum;
        float* o = out + (hk * group + g) * hd;
        std::fill(o, o + hd, 0.0f);
      }
      for (std::size_t j = 0; j < len; ++j) {
        const float* vrow =
            load_row(kv.row(l, rt::Half::kV, j) + hk * hd * esize, hd, dtype, row_.data());
        for (std::size_t g = 0; g < group; ++g) {
          const float p = scores_[g * len + j];
          float* o = out + (hk * group + g) * hd;
          for (std::size_t e = 0; e < hd; ++e) o[e] += p * vrow[e];
        }
      }
      for (std::size_t g = 0; g < group; ++g) {
        const float inv = 1.0f / sums_[g];
        float* o = out + (hk * group + g) * hd;
        for (std::size_t e = 0; e < hd; ++e) o[e] *= inv;
      }
    }
  }

  ModelConfig cfg_;
  Weights w_;
  std::vector<double> inv_freq_;
  // Scratch, reused across calls.
  std::vector<float> x_, h_, q_, k_, v_, att_, o_, g_, u_, cos_, sin_, scores_, sums_, row_;
};

}  // namespace

std::unique_ptr<Engine> make_host_engine(const ModelConfig& cfg) {
  return std::make_unique<HostEngine>(cfg);
}

}  // namespace pf::engine
