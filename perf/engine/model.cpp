#include "perf/engine/model.h"

#include <charconv>
#include <cmath>

namespace pf::engine {
namespace {

std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::uint64_t rotl(std::uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

// n values uniform in [-scale, scale).
std::vector<float> uniform_vec(Rng& rng, std::size_t n, float scale) {
  std::vector<float> v(n);
  for (float& x : v) x = (2.0f * rng.uniform() - 1.0f) * scale;
  return v;
}

// RMSNorm gains: 1 +- 0.1, so every norm does something the KV depends on.
std::vector<float> norm_vec(Rng& rng, std::size_t n) {
  std::vector<float> v(n);
  for (float& x : v) x = 1.0f + 0.2f * (rng.uniform() - 0.5f);
  return v;
}

// A matrix [out][in] with variance ~1/in (uniform in +-sqrt(3/in)).
std::vector<float> matrix(Rng& rng, std::size_t out, std::size_t in) {
  return uniform_vec(rng, out * in, std::sqrt(3.0f / static_cast<float>(in)));
}

}  // namespace

Rng::Rng(std::uint64_t seed) {
  std::uint64_t x = seed;
  for (std::uint64_t& s : s_) s = splitmix64(x);
}

std::uint64_t Rng::next() {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

float Rng::uniform() {
  return static_cast<float>(next() >> 40) * 0x1.0p-24f;
}

double Rng::uniform_double() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

Status ModelConfig::validate() const {
  if (layers == 0 || d_model == 0 || n_heads == 0 || n_kv_heads == 0 || head_dim == 0 ||
      ffn_dim == 0 || vocab == 0) {
    return PF_ERROR(Code::kInvalidArgument, "model sizes must be positive: " + to_string());
  }
  if (n_heads % n_kv_heads != 0) {
    return PF_ERROR(Code::kInvalidArgument,
                    "n_heads must be a multiple of n_kv_heads: " + to_string());
  }
  if (head_dim % 2 != 0) {
    return PF_ERROR(Code::kInvalidArgument, "head_dim must be even (RoPE): " + to_string());
  }
  if (layers > 256 || d_model > 65536 || n_heads > 1024 || head_dim > 1024 || ffn_dim > 262144 ||
      vocab > (1u << 24)) {
    return PF_ERROR(Code::kInvalidArgument, "model sizes out of range: " + to_string());
  }
  return Status::ok();
}

std::string ModelConfig::to_string() const {
  return "layers=" + std::to_string(layers) + ",d_model=" + std::to_string(d_model) +
         ",n_heads=" + std::to_string(n_heads) + ",n_kv_heads=" + std::to_string(n_kv_heads) +
         ",head_dim=" + std::to_string(head_dim) + ",ffn_dim=" + std::to_string(ffn_dim) +
         ",vocab=" + std::to_string(vocab) + ",tied=" + (tied_embeddings ? "1" : "0") +
         ",seed=" + std::to_string(seed);
}

rt::Geometry ModelConfig::kv_geometry(std::uint32_t page_tokens, rt::DType dtype) const {
  rt::Geometry g;
  g.layers = layers;
  g.kv_heads = n_kv_heads;
  g.head_dim = head_dim;
  g.dtype = dtype;
  g.page_tokens = page_tokens;
  return g;
}

float ModelConfig::logit_scale() const {
  return 4.0f / std::sqrt(static_cast<float>(d_model));
}

Result<ModelConfig> model_preset(std::string_view name) {
  ModelConfig c;
  if (name == "demo") return c;
  if (name == "tiny") {
    c.layers = 2;
    c.d_model = 64;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 16;
    c.ffn_dim = 128;
    c.vocab = 256;
    return c;
  }
  if (name == "small") {
    c.layers = 4;
    c.d_model = 128;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 32;
    c.ffn_dim = 256;
    c.vocab = 512;
    return c;
  }
  return PF_ERROR(Code::kNotFound,
                  "unknown model preset '" + std::string(name) + "' (tiny, small, demo)");
}

Result<ModelConfig> parse_model_config(std::string_view spec) {
  ModelConfig c;
  bool first = true;
  while (!spec.empty()) {
    const std::size_t comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      if (!first) {
        return PF_ERROR(Code::kInvalidArgument, "model spec: a preset name may only come first: '" +
                                                    std::string(item) + "'");
      }
      PF_ASSIGN_OR_RETURN(c, model_preset(item));
      first = false;
      continue;
    }
    first = false;
    const std::string_view key = item.substr(0, eq);
    const std::string_view val = item.substr(eq + 1);
    std::uint64_t v = 0;
    const auto [ptr, ec] = std::from_chars(val.data(), val.data() + val.size(), v);
    if (ec != std::errc() || ptr != val.data() + val.size() || val.empty()) {
      return PF_ERROR(Code::kInvalidArgument,
                      "model spec: '" + std::string(item) + "' needs a non-negative integer");
    }
    const auto u32 = [&](std::uint32_t& field) -> Status {
      if (v > 0xffffffffull) return PF_ERROR(Code::kInvalidArgument, "model spec: too large");
      field = static_cast<std::uint32_t>(v);
      return Status::ok();
    };
    if (key == "layers") {
      PF_TRY(u32(c.layers));
    } else if (key == "d_model") {
      PF_TRY(u32(c.d_model));
    } else if (key == "n_heads") {
      PF_TRY(u32(c.n_heads));
    } else if (key == "n_kv_heads") {
      PF_TRY(u32(c.n_kv_heads));
    } else if (key == "head_dim") {
      PF_TRY(u32(c.head_dim));
    } else if (key == "ffn_dim") {
      PF_TRY(u32(c.ffn_dim));
    } else if (key == "vocab") {
      PF_TRY(u32(c.vocab));
    } else if (key == "tied") {
      if (v > 1) return PF_ERROR(Code::kInvalidArgument, "model spec: tied is 0 or 1");
      c.tied_embeddings = v == 1;
    } else if (key == "seed") {
      c.seed = v;
    } else {
      return PF_ERROR(Code::kInvalidArgument, "model spec: unknown key '" + std::string(key) +
                                                  "' (layers, d_model, n_heads, n_kv_heads, "
                                                  "head_dim, ffn_dim, vocab, tied, seed)");
    }
  }
  PF_TRY(c.validate());
  return c;
}

Weights make_weights(const ModelConfig& cfg) {
  Rng rng(cfg.seed);
  const std::size_t d = cfg.d_model;
  const std::size_t q_dim = std::size_t{cfg.n_heads} * cfg.head_dim;
  const std::size_t kv_dim = std::size_t{cfg.n_kv_heads} * cfg.head_dim;
  Weights w;
  w.embed = uniform_vec(rng, std::size_t{cfg.vocab} * d, 1.0f);
  w.layers.resize(cfg.layers);
  for (LayerWeights& l : w.layers) {
    l.attn_norm = norm_vec(rng, d);
    l.wq = matrix(rng, q_dim, d);
    l.wk = matrix(rng, kv_dim, d);
    l.wv = matrix(rng, kv_dim, d);
    l.wo = matrix(rng, d, q_dim);
    l.mlp_norm = norm_vec(rng, d);
    l.w_gate = matrix(rng, cfg.ffn_dim, d);
    l.w_up = matrix(rng, cfg.ffn_dim, d);
    l.w_down = matrix(rng, d, cfg.ffn_dim);
  }
  w.final_norm = norm_vec(rng, d);
  if (!cfg.tied_embeddings) w.lm_head = matrix(rng, cfg.vocab, d);
  return w;
}

}  // namespace pf::engine
