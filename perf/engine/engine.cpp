// Engine pieces shared by both implementations: PageArena, geometry checks, the factory,
// sampling and prompt tokens.
#include "perf/engine/engine.h"

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "base/device_name.h"

namespace pf::engine {

PageArena& PageArena::operator=(PageArena&& o) noexcept {
  if (this != &o) {
    reset();
    base_ = std::exchange(o.base_, nullptr);
    n_pages_ = std::exchange(o.n_pages_, 0);
    page_bytes_ = std::exchange(o.page_bytes_, 0);
    free_ = std::exchange(o.free_, nullptr);
  }
  return *this;
}

void PageArena::reset() {
  if (base_ != nullptr && free_ != nullptr) free_(base_);
  base_ = nullptr;
  n_pages_ = 0;
  page_bytes_ = 0;
  free_ = nullptr;
}

Status Engine::check_forward(const PagedKv& kv, std::span<const rt::Token> tokens,
                             std::span<const float> logits) const {
  PF_TRY(check_geometry(kv.geometry()));
  const ModelConfig& cfg = config();
  if (kv.n_tokens() + tokens.size() > kv.capacity_tokens()) {
    return PF_ERROR(Code::kInvalidArgument,
                    "forward of " + std::to_string(tokens.size()) + " tokens at position " +
                        std::to_string(kv.n_tokens()) + ": the page table holds only " +
                        std::to_string(kv.capacity_tokens()) + " tokens");
  }
  if (!logits.empty() && logits.size() != cfg.vocab) {
    return PF_ERROR(Code::kInvalidArgument, "logits span must hold vocab floats");
  }
  for (rt::Token t : tokens) {
    if (t >= cfg.vocab) {
      return PF_ERROR(
          Code::kInvalidArgument,
          "token " + std::to_string(t) + " outside the vocabulary of " + std::to_string(cfg.vocab));
    }
  }
  return Status::ok();
}

Status Engine::check_geometry(const rt::Geometry& g) const {
  const ModelConfig& c = config();
  if (g.layers != c.layers || g.kv_heads != c.n_kv_heads || g.head_dim != c.head_dim ||
      (g.dtype != rt::DType::kFP32 && g.dtype != rt::DType::kBF16) || g.page_tokens == 0) {
    return PF_ERROR(Code::kInvalidArgument,
                    "KV geometry " + g.to_string() + " does not fit the model (" + c.to_string() +
                        "): needs layers=" + std::to_string(c.layers) +
                        ", kv_heads=" + std::to_string(c.n_kv_heads) +
                        ", head_dim=" + std::to_string(c.head_dim) + ", dtype fp32 or bf16");
  }
  return Status::ok();
}

Result<std::unique_ptr<Engine>> make_engine(const ModelConfig& cfg, std::string_view device) {
  PF_TRY(cfg.validate());
  if (device == "auto") {
    Result<std::unique_ptr<Engine>> cuda = make_cuda_engine(cfg, 0);
    if (cuda.is_ok()) return cuda;
    return make_host_engine(cfg);
  }
  Result<DeviceName> parsed = parse_device_name(device, /*allow_bare_cuda=*/true);
  if (!parsed.is_ok()) {
    return PF_ERROR(Code::kInvalidArgument,
                    "unknown engine device '" + std::string(device) + "' (host, cuda[:N], auto)");
  }
  if (parsed->kind == DeviceName::Kind::kHost) return make_host_engine(cfg);
  return make_cuda_engine(cfg, parsed->ordinal);
}

rt::Token sample_greedy(std::span<const float> logits) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<rt::Token>(best);
}

rt::Token sample(std::span<const float> logits, float temperature, Rng& rng) {
  if (!(temperature > 0.0f) || logits.empty()) return sample_greedy(logits);
  const double max = logits[sample_greedy(logits)];
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp((static_cast<double>(logits[i]) - max) / temperature);
    sum += p[i];
  }
  const double u = rng.uniform_double() * sum;
  double acc = 0.0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    acc += p[i];
    if (u < acc) return static_cast<rt::Token>(i);
  }
  return static_cast<rt::Token>(p.size() - 1);
}

std::vector<rt::Token> random_tokens(std::uint64_t seed, std::size_t n, std::uint32_t vocab) {
  Rng rng(seed ^ 0x70726f6d7074ull);  // "prompt"
  std::vector<rt::Token> out(n);
  for (rt::Token& t : out) t = static_cast<rt::Token>(rng.next() % vocab);
  return out;
}

}  // namespace pf::engine
