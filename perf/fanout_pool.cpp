#include "perf/fanout_pool.h"

#include <signal.h>

#include <string>
#include <vector>

namespace pf::demo {

volatile std::sig_atomic_t g_interrupted = 0;

namespace {
void on_signal(int sig) {
  g_interrupted = sig;
}

rt::WriteRun to_rt(const processfork::WriteRun& r) {
  return rt::WriteRun{r.page, r.first_slot, r.count, r.first_token};
}
}  // namespace

void catch_interrupts() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

Result<std::unique_ptr<engine::Engine>> engine_for(const engine::ModelConfig& cfg,
                                                   const processfork::PoolInfo& p) {
  if (p.device_memory != 0) return engine::make_engine(cfg, p.device);
  return engine::make_host_engine(cfg);
}

Status check_pool(const processfork::PoolInfo& p, const rt::Geometry& g) {
  const std::uint32_t want_dtype = g.dtype == rt::DType::kBF16 ? PF_DTYPE_BF16 : PF_DTYPE_FP32;
  if (p.layers != g.layers || p.kv_heads != g.kv_heads || p.head_dim != g.head_dim ||
      p.page_tokens != g.page_tokens || p.dtype != want_dtype || p.page_bytes != g.page_bytes()) {
    return PF_ERROR(Code::kInvalidArgument,
                    "the daemon's pool geometry does not match the model's KV: " + g.to_string());
  }
  return Status::ok();
}

Status PoolSeq::append(std::span<const rt::Token> tokens) {
  if (g_interrupted != 0) return PF_ERROR(Code::kUnavailable, "interrupted");
  try {
    const processfork::AppendResult ar = branch->append(tokens);
    pages_added += ar.pages_added;
    cow_copies += ar.copied_page ? 1 : 0;
    std::vector<rt::WriteRun> runs;
    for (const processfork::WriteRun& r : ar.runs) runs.push_back(to_rt(r));
    return kv->add_write_runs(runs, [this](rt::PageId id) -> Result<std::byte*> {
      return static_cast<std::byte*>(client->page_ptr(id));
    });
  } catch (const processfork::Error& e) {
    return PF_ERROR(static_cast<Code>(e.code()), std::string("append: ") + e.what());
  }
}

Status kv_from_branch(processfork::Client& client, processfork::Branch& branch,
                      engine::PagedKv* kv) {
  const processfork::View view = branch.view();
  for (std::uint32_t page : view.pages)
    kv->push_page(static_cast<std::byte*>(client.page_ptr(page)));
  return kv->set_n_tokens(view.info.n_tokens);
}

}  // namespace pf::demo
