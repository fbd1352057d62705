// make_cuda_kernels() for builds without CUDA (PF_HAVE_CUDA off): always kUnavailable, so
// callers and tests take the same path as on a machine without a GPU.
#include <string>

#include "kernels/page_kernels.h"

namespace pf::kernels {

Result<std::unique_ptr<PageKernels>> make_cuda_kernels(int device_ordinal) {
  if (device_ordinal < 0) {
    return PF_ERROR(Code::kInvalidArgument,
                    "invalid CUDA device ordinal cuda:" + std::to_string(device_ordinal));
  }
  return PF_ERROR(Code::kUnavailable,
                  "CUDA page kernels for cuda:" + std::to_string(device_ordinal) +
                      " are unavailable: built without CUDA");
}

}  // namespace pf::kernels
