// The reference engine's model: a small decoder-only transformer with random weights drawn
// from a seed (docs/engine.md).
//
// Architecture (Llama-style): token embedding -> `layers` x [RMSNorm -> grouped-query
// attention with rotary positions (n_heads query heads sharing n_kv_heads KV heads) ->
// residual -> RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> LM head (its own matrix, or
// the embedding when tied_embeddings is on) scaled by logit_scale.
//
// Weights are fp32, row-major [out][in], drawn from xoshiro256** seeded by SplitMix64 from
// `seed` in a fixed order, so a config names one model exactly on every machine.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/page_format.h"
#include "base/status.h"

namespace pf::engine {

struct ModelConfig {
  std::uint32_t layers = 4;
  std::uint32_t d_model = 256;
  std::uint32_t n_heads = 8;     // query heads
  std::uint32_t n_kv_heads = 2;  // KV heads; n_heads is a multiple of it
  std::uint32_t head_dim = 32;   // even (RoPE rotates pairs)
  std::uint32_t ffn_dim = 512;
  std::uint32_t vocab = 1024;
  // Separate LM head by default: tied to the embedding, a random model keeps predicting the
  // token it was fed (its own embedding dominates the residual stream).
  bool tied_embeddings = false;
  std::uint64_t seed = 1;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;

  // Positive sizes, n_heads % n_kv_heads == 0, even head_dim. kInvalidArgument otherwise.
  Status validate() const;
  // "layers=4,d_model=256,...,seed=1" (parse_model_config's input).
  std::string to_string() const;
  // The pool geometry whose pages hold this model's KV: layers and kv heads of the model.
  rt::Geometry kv_geometry(std::uint32_t page_tokens, rt::DType dtype) const;
  // The LM head's output scale (4 / sqrt(d_model)): logits of a few units, so temperature
  // sampling has something to choose from.
  float logit_scale() const;
  bool operator==(const ModelConfig&) const = default;
};

// Presets: "tiny" (tests: 2 layers, d_model 64, 4 heads over 2 KV heads of 16, ffn 128,
// vocab 256), "small" (4 layers, d_model 128, 4/2 heads of 32, ffn 256, vocab 512) and
// "demo" (the defaults above). kNotFound otherwise.
Result<ModelConfig> model_preset(std::string_view name);
// A preset name optionally followed by overrides, or overrides alone (on the defaults):
// "demo", "tiny,seed=7", "layers=2,d_model=64,n_heads=4,n_kv_heads=2,head_dim=16". Keys:
// layers, d_model, n_heads, n_kv_heads, head_dim, ffn_dim, vocab, tied (0/1, default 0),
// seed.
Result<ModelConfig> parse_model_config(std::string_view spec);

struct LayerWeights {
  std::vector<float> attn_norm;  // [d_model]
  std::vector<float> wq;         // [n_heads * head_dim][d_model]
  std::vector<float> wk;         // [n_kv_heads * head_dim][d_model]
  std::vector<float> wv;         // [n_kv_heads * head_dim][d_model]
  std::vector<float> wo;         // [d_model][n_heads * head_dim]
  std::vector<float> mlp_norm;   // [d_model]
  std::vector<float> w_gate;     // [ffn_dim][d_model]
  std::vector<float> w_up;       // [ffn_dim][d_model]
  std::vector<float> w_down;     // [d_model][ffn_dim]
};

struct Weights {
  std::vector<float> embed;  // [vocab][d_model]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [d_model]
  std::vector<float> lm_head;     // [vocab][d_model]; empty when tied to `embed`
  // The LM head's rows: lm_head, or embed when tied.
  const std::vector<float>& head() const { return lm_head.empty() ? embed : lm_head; }
};

// Draws every weight from cfg.seed (cfg must be valid). Same config, same bits.
Weights make_weights(const ModelConfig& cfg);

// xoshiro256** seeded through SplitMix64: the one PRNG of the engine (weights, sampling).
class Rng {
 public:
  explicit Rng(std::uint64_t seed);
  std::uint64_t next();
  // Uniform in [0, 1) with 24 random bits (exact in float).
  float uniform();
  // Uniform in [0, 1) with 53 random bits.
  double uniform_double();

 private:
  std::uint64_t s_[4];
};

}  // namespace pf::engine
