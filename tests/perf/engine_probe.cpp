// engine_probe: prints the logits of one fixed run of the tiny reference model as hex
// words ("LOGITS xxxxxxxx ..."), with its KV pages in a shuffled order. engine_test
// compares them, bit for bit, with its own in-process run (pages in order).
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "perf/engine/engine.h"

int main() {
  using namespace pf;
  using namespace pf::engine;
  const ModelConfig cfg = model_preset("tiny").value();
  std::unique_ptr<Engine> e = make_host_engine(cfg);
  const rt::Geometry g = cfg.kv_geometry(8, rt::DType::kFP32);
  Result<PageArena> arena = e->alloc_pages(10, g.page_bytes());
  if (!arena.is_ok()) {
    std::fprintf(stderr, "engine_probe: %s\n", arena.status().to_string().c_str());
    return 1;
  }
  PagedKv kv(g);
  for (std::size_t i : {7, 2, 9, 0, 4, 1, 8, 3, 6, 5}) kv.push_page(arena->page(i));
  std::vector<float> logits(cfg.vocab);
  std::vector<float> all;
  Status s = e->forward(kv, random_tokens(8, 60, cfg.vocab), logits);
  all.insert(all.end(), logits.begin(), logits.end());
  for (int step = 0; step < 5 && s.is_ok(); ++step) {
    const rt::Token next = sample_greedy(logits);
    s = e->forward(kv, std::span<const rt::Token>(&next, 1), logits);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  if (!s.is_ok()) {
    std::fprintf(stderr, "engine_probe: %s\n", s.to_string().c_str());
    return 1;
  }
  std::string line = "LOGITS";
  for (float f : all) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    char w[12];
    std::snprintf(w, sizeof w, " %08x", u);
    line += w;
  }
  std::printf("%s\n", line.c_str());
  return 0;
}
