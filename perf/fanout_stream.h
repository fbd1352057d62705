// What one branch of the fan-out demo decodes, the one routine that decodes it (used by the
// child processes on pool pages and by the reference run on private pages, so both make
// exactly the same engine calls), and the report a child hands back to the parent.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "perf/engine/engine.h"
#include "runtime/types.h"
#include "base/status.h"

namespace pf::demo {

// Branch i's continuation: its own task suffix (suffix_tokens tokens drawn from its seed),
// then `steps` tokens sampled at `temperature` with an Rng seeded by `seed`.
struct StreamSpec {
  std::vector<rt::Token> suffix;
  std::uint32_t steps = 0;
  float temperature = 0.8f;
  std::uint64_t seed = 0;
};
StreamSpec stream_spec(std::uint64_t base_seed, std::uint32_t index, std::uint32_t suffix_tokens,
                       std::uint32_t steps, float temperature, std::uint32_t vocab);

struct Stream {
  std::vector<rt::Token> tokens;  // the `steps` sampled tokens
  std::vector<float> logits;      // steps x vocab: the logits each token was sampled from
  double first_token_us = 0;      // decode() start to the first sampled token
  double total_us = 0;            // decode() start to the end
};

// Called before each forward() with the tokens about to run: makes room for their KV (a
// pool branch appends them and takes in the write runs; a private arena has room already).
using MakeRoom = std::function<Status(std::span<const rt::Token>)>;

// forward(suffix) -> logits[0] -> token[0] = sample; then forward(token[s-1]) -> logits[s]
// -> token[s] for s < steps. kv holds the context already.
Status decode(engine::Engine& engine, engine::PagedKv& kv, const StreamSpec& spec,
              const MakeRoom& make_room, Stream* out);

// Index of the first step whose token or logits differ ("" -> -1 when equal); compares
// logits bit for bit.
int first_difference(const Stream& a, const Stream& b, std::uint32_t vocab);

// A child's report, written to a file the parent names.
struct ChildReport {
  std::uint32_t index = 0;
  bool control = false;
  std::string error;                   // non-empty: the child failed (nothing else valid)
  double spawn_to_first_token_us = 0;  // from the parent's spawn call to the first token
  double connect_us = 0;               // connect + HELLO + mapping the pool
  double adopt_us = 0;                 // taking the branch: view + page addresses
  std::uint32_t pages_added = 0;       // pool pages its appends took
  std::uint32_t cow_copies = 0;        // appends that copied a shared last page
  std::uint64_t final_tokens = 0;      // the branch length when done
  Stream stream;                       // worker: its stream; control: from an exact private copy
  Stream altered;                      // control only: from the copy with one byte altered
  std::uint32_t altered_page = 0;      // control only: which page index, which byte
  std::uint64_t altered_offset = 0;
};

Status write_report(const std::string& path, const ChildReport& report, std::uint32_t vocab);
Result<ChildReport> read_report(const std::string& path, std::uint32_t vocab);

}  // namespace pf::demo
