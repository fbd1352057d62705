// make_cuda_engine() for builds without CUDA (PF_HAVE_CUDA off): always kUnavailable, so
// callers and tests take the same path as on a machine without a GPU.
#include <string>

#include "perf/engine/engine.h"

namespace pf::engine {

Result<std::unique_ptr<Engine>> make_cuda_engine(const ModelConfig& cfg, int ordinal) {
  PF_TRY(cfg.validate());
  if (ordinal < 0) {
    return PF_ERROR(Code::kInvalidArgument,
                    "invalid CUDA device ordinal " + std::to_string(ordinal));
  }
  return PF_ERROR(Code::kUnavailable,
                  "the CUDA reference engine on cuda:" + std::to_string(ordinal) +
                      " is unavailable: built without CUDA");
}

}  // namespace pf::engine
