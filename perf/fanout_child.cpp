#include "perf/fanout_child.h"

#include <cstdio>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "perf/engine/engine.h"
#include "perf/fanout_pool.h"
#include "perf/fanout_stream.h"
#include "perf/fanout_units.h"
#include "processfork.hpp"

namespace pf::demo {
namespace {

using engine::Engine;
using engine::PagedKv;

// A worker: decodes `spec` on the branch's pool pages in `kv` (appending to the branch).
// Fills rep's stream, spawn_to_first_token_us, pages_added, cow_copies and final_tokens,
// then releases the branch (it stays, detached, for the parent's page count).
Status decode_worker(const Options& o, Engine& e, processfork::Client& client,
                     processfork::Branch& branch, PagedKv& kv, const StreamSpec& spec,
                     ChildReport* rep) {
  PoolSeq seq{&client, &branch, &kv};
  const std::int64_t decode_start_ns = now_ns();
  PF_TRY(decode(
      e, kv, spec, [&](std::span<const rt::Token> toks) { return seq.append(toks); },
      &rep->stream));
  rep->spawn_to_first_token_us =
      static_cast<double>(decode_start_ns - o.t0_ns) / 1e3 + rep->stream.first_token_us;
  rep->pages_added = seq.pages_added;
  rep->cow_copies = seq.cow_copies;
  rep->final_tokens = kv.n_tokens();
  branch.release();  // stays (detached) for the parent's page count; the parent frees it
  return Status::ok();
}

// The negative control: private copies of the branch's shared pages in `kv`; the pool is
// never written. Decodes `spec` from an exact copy (rep->stream) and from a copy with one
// byte altered (rep->altered, at altered_page/altered_offset), then frees the branch.
Status decode_control(const Options& o, Engine& e, processfork::Branch& branch, PagedKv& kv,
                      const StreamSpec& spec, ChildReport* rep) {
  const rt::Geometry& g = kv.geometry();
  const std::uint64_t context = kv.n_tokens();
  const std::size_t ctx_pages = kv.pages().size();
  const std::size_t total_pages =
      static_cast<std::size_t>((context + o.suffix + o.steps + g.page_tokens - 1) / g.page_tokens);
  PF_ASSIGN_OR_RETURN(engine::PageArena arena, e.alloc_pages(total_pages, g.page_bytes()));
  const std::vector<std::byte*> shared(kv.pages().begin(), kv.pages().end());
  auto private_copy = [&](PagedKv* priv) -> Status {
    for (std::size_t i = 0; i < total_pages; ++i) {
      if (i < ctx_pages) PF_TRY(e.copy_within(arena.page(i), shared[i], g.page_bytes()));
      priv->push_page(arena.page(i));
    }
    return priv->set_n_tokens(context);
  };
  const MakeRoom no_room = [](std::span<const rt::Token>) { return Status::ok(); };
  PagedKv clean(g);
  PF_TRY(private_copy(&clean));
  PF_TRY(decode(e, clean, spec, no_room, &rep->stream));
  // One byte of one shared page: the high byte of element 1 of a middle token's K row
  // in layer 0 of the middle context page; flipping its lowest bit scales that element
  // by 4 or 1/4 (fp32: exponent bit 1; bf16: exponent bit 1 as well).
  PagedKv altered(g);
  PF_TRY(private_copy(&altered));
  const std::size_t esize = rt::dtype_bytes(g.dtype);
  rep->altered_page = static_cast<std::uint32_t>(ctx_pages / 2);
  rep->altered_offset = g.offset(0, rt::Half::kK, g.page_tokens / 2) + esize + (esize - 1);
  std::byte* at = arena.page(rep->altered_page) + rep->altered_offset;
  std::byte b{};
  PF_TRY(e.copy_to_host(&b, at, 1));
  b ^= std::byte{0x01};
  PF_TRY(e.copy_from_host(at, &b, 1));
  PF_TRY(decode(e, altered, spec, no_room, &rep->altered));
  rep->spawn_to_first_token_us = static_cast<double>(now_ns() - o.t0_ns) / 1e3;
  rep->final_tokens = context;
  branch.free();
  return Status::ok();
}

// Connects, takes the branch and decodes on it as a worker or the control (fills `rep`).
// Errors as a Status; client errors throw processfork::Error.
Status run_branch(const Options& o, const engine::ModelConfig& cfg, ChildReport* rep) {
  const rt::Geometry g = cfg.kv_geometry(o.page_tokens, dtype_of(o));
  Clock::time_point t = Clock::now();
  processfork::ConnectOptions co;
  co.socket_path = o.socket;
  processfork::Client client(co);
  rep->connect_us = us_since(t);
  const processfork::PoolInfo info = client.pool();
  PF_TRY(check_pool(info, g));
  PF_ASSIGN_OR_RETURN(std::unique_ptr<Engine> eng, engine_for(cfg, info));

  t = Clock::now();
  processfork::Branch branch = client.adopt(o.branch);
  PagedKv kv(g);
  PF_TRY(kv_from_branch(client, branch, &kv));
  rep->adopt_us = us_since(t);

  StreamSpec spec = stream_spec(o.seed, o.index, o.suffix, o.steps, o.temperature, cfg.vocab);
  if (o.fault == "child-seed") spec.seed += 1;  // a wrong sampler seed: must be caught
  if (!o.is_control) return decode_worker(o, *eng, client, branch, kv, spec, rep);
  return decode_control(o, *eng, branch, kv, spec, rep);
}

}  // namespace

int run_child(const Options& o) {
  ChildReport rep;
  rep.index = o.index;
  rep.control = o.is_control;
  Result<engine::ModelConfig> cfg = engine::parse_model_config(o.model);
  if (!cfg.is_ok()) {
    std::fprintf(stderr, "fanout_demo child %u: %s\n", o.index, cfg.status().to_string().c_str());
    return 1;
  }
  const std::uint32_t vocab = cfg->vocab;
  auto fail = [&](const std::string& what) {
    rep.error = what;
    std::fprintf(stderr, "fanout_demo child %u: %s\n", o.index, what.c_str());
    write_report(o.report, rep, vocab).ignore();
    return 1;
  };
  try {
    const Status s = run_branch(o, *cfg, &rep);
    if (!s.is_ok()) return fail(s.to_string());
  } catch (const std::exception& e) {
    return fail(std::string("client: ") + e.what());
  }
  const Status s = write_report(o.report, rep, vocab);
  if (!s.is_ok()) {
    std::fprintf(stderr, "fanout_demo child %u: %s\n", o.index, s.to_string().c_str());
    return 1;
  }
  return 0;
}

}  // namespace pf::demo
