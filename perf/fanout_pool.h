// The reference engine on the daemon's pool, as the fan-out demo's parent and children use
// it: the engine for the pool's memory, the pool/model geometry check, a pool branch that
// makes room for the engine's KV, and the interrupt flag every long loop checks.
#pragma once

#include <csignal>
#include <cstdint>
#include <memory>
#include <span>

#include "perf/engine/engine.h"
#include "processfork.hpp"
#include "base/page_format.h"
#include "base/status.h"

namespace pf::demo {

// The signal that interrupted the run (SIGINT/SIGTERM), 0 while none did.
extern volatile std::sig_atomic_t g_interrupted;
// Installs the SIGINT/SIGTERM handler that sets g_interrupted.
void catch_interrupts();

// The engine for the pool's memory: the CUDA engine on a CUDA pool, else the host engine.
Result<std::unique_ptr<engine::Engine>> engine_for(const engine::ModelConfig& cfg,
                                                   const processfork::PoolInfo& p);

// kInvalidArgument unless the daemon's pool geometry is the model's KV geometry g.
Status check_pool(const processfork::PoolInfo& p, const rt::Geometry& g);

// A branch of the pool as the engine sees it: appends make room and hand the write runs
// to the PagedKv. Counts pages taken and copy-on-write copies.
struct PoolSeq {
  processfork::Client* client;
  processfork::Branch* branch;
  engine::PagedKv* kv;
  std::uint32_t pages_added = 0;
  std::uint32_t cow_copies = 0;

  // kUnavailable once interrupted; a client error as its code ("append: ...").
  Status append(std::span<const rt::Token> tokens);
};

// The branch's current pages as a PagedKv holding its n_tokens.
Status kv_from_branch(processfork::Client& client, processfork::Branch& branch,
                      engine::PagedKv* kv);

}  // namespace pf::demo
