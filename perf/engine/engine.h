// The reference engine: runs ModelConfig's transformer over tokens, keeping the KV cache
// in ProcessFork pages reached through a PagedKv (docs/engine.md).
//
// DESIGN
//  - One interface, two implementations: `host` (CPU, always built) and `cuda` (one CUDA
//    translation unit, built only with PF_HAVE_CUDA; pages and weights in device memory).
//    make_engine("auto") picks cuda:0 when usable, else host, and name() says which.
//  - forward() runs the tokens at positions kv.n_tokens() onwards: for each token and layer
//    it writes the token's K and V rows into its slot of its page (page-first layout, the
//    geometry's dtype), then attends over every earlier row of the sequence by reading the
//    pages through the table — the current token's own K/V included, read back from the
//    page, so the KV in the pages alone determines every later result.
//  - Determinism: every reduction has a fixed order that depends only on the sizes (dot
//    products with eight interleaved partial sums combined pairwise; softmax sums in
//    position order), never on threads, timing, addresses or batch boundaries. So the same
//    calls give the same logits bit for bit in any process, whichever physical pages hold
//    the KV and in whatever order they sit in memory; and one forward() of T tokens gives
//    the same KV and logits as T calls of one token. (The CUDA engine is deterministic in
//    the same sense on one GPU; it is not bit-identical to the host engine: libm differs.)
//  - Threading: an Engine is not synchronized; use one per thread. Nothing aborts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "perf/engine/model.h"
#include "perf/engine/paged_kv.h"
#include "base/page_format.h"
#include "runtime/types.h"
#include "base/status.h"

namespace pf::engine {

// Memory for pages that only this process uses (the reference run's private KV, a
// corrupted copy for a negative control), in the engine's memory kind. Owns the memory;
// movable, not copyable. Pages are page_bytes apart, 256-byte aligned.
class PageArena {
 public:
  using Free = void (*)(std::byte*);
  PageArena() = default;
  PageArena(std::byte* base, std::size_t n_pages, std::size_t page_bytes, Free free_fn)
      : base_(base), n_pages_(n_pages), page_bytes_(page_bytes), free_(free_fn) {}
  PageArena(PageArena&& o) noexcept { *this = std::move(o); }
  PageArena& operator=(PageArena&& o) noexcept;
  PageArena(const PageArena&) = delete;
  PageArena& operator=(const PageArena&) = delete;
  ~PageArena() { reset(); }

  std::byte* page(std::size_t i) const { return base_ + i * page_bytes_; }
  std::size_t n_pages() const { return n_pages_; }
  std::size_t page_bytes() const { return page_bytes_; }

 private:
  void reset();
  std::byte* base_ = nullptr;
  std::size_t n_pages_ = 0;
  std::size_t page_bytes_ = 0;
  Free free_ = nullptr;
};

class Engine {
 public:
  virtual ~Engine() = default;

  // "host" or "cuda:N".
  virtual std::string name() const = 0;
  virtual const ModelConfig& config() const = 0;
  // True when the engine's memory is host memory (page addresses are CPU pointers).
  virtual bool host_memory() const = 0;

  // Runs `tokens` at positions kv.n_tokens() .. + tokens.size() - 1, writing their K and V
  // into kv's pages, and advances kv.n_tokens(). When `logits` is not empty (vocab floats,
  // host memory) it receives the last token's logits. Blocking. kInvalidArgument when the
  // page table is too short, a token is outside the vocabulary, or kv's geometry does not
  // match the model (layers, kv_heads, head_dim; dtype fp32 or bf16); nothing is written
  // then.
  virtual Status forward(PagedKv& kv, std::span<const rt::Token> tokens,
                         std::span<float> logits) = 0;

  // Page memory private to this process, uninitialised.
  virtual Result<PageArena> alloc_pages(std::size_t n_pages, std::size_t page_bytes) = 0;
  // Byte copies between engine memory (`dev`) and host memory, or within engine memory.
  virtual Status copy_to_host(void* host, const void* dev, std::size_t n) = 0;
  virtual Status copy_from_host(void* dev, const void* host, std::size_t n) = 0;
  virtual Status copy_within(void* dst, const void* src, std::size_t n) = 0;

  // Checks that kv's geometry can hold this model's KV.
  Status check_geometry(const rt::Geometry& g) const;
  // Every argument check of forward() (geometry, page-table length, logits size,
  // vocabulary), shared by the implementations so they reject the same calls alike.
  Status check_forward(const PagedKv& kv, std::span<const rt::Token> tokens,
                       std::span<const float> logits) const;
};

// The host engine (always available).
std::unique_ptr<Engine> make_host_engine(const ModelConfig& cfg);
// The CUDA engine on device `ordinal`: kUnavailable when built without CUDA or no usable
// device is present.
Result<std::unique_ptr<Engine>> make_cuda_engine(const ModelConfig& cfg, int ordinal);
// "host", "cuda" / "cuda:N", or "auto" (cuda:0 when usable, else host).
Result<std::unique_ptr<Engine>> make_engine(const ModelConfig& cfg, std::string_view device);

// Sampling. Greedy: the arg max (the lowest index on ties). Temperature: softmax of
// logits / temperature in double, summed in index order, and one Rng draw against the
// cumulative sum; deterministic for a given Rng state. temperature <= 0 means greedy.
rt::Token sample_greedy(std::span<const float> logits);
rt::Token sample(std::span<const float> logits, float temperature, Rng& rng);

// Deterministic token streams for prompts: `n` tokens below `vocab` drawn from `seed`.
std::vector<rt::Token> random_tokens(std::uint64_t seed, std::size_t n, std::uint32_t vocab);

}  // namespace pf::engine
