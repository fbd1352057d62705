// The checking macros of the project's CUDA runtime calls (CUDA translation units only).
//
// PF_CUDA_TRY(expr): evaluates a cudaError_t expression; on failure returns a
// Code::kDriver Status naming the expression and CUDA's error name and text, from the
// enclosing function (which must return Status or Result<T>). PF_CUDA_LAUNCHED(): checks
// the last kernel launch (configuration errors appear here, faults at the next sync).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "base/status.h"

#define PF_CUDA_TRY(expr)                                                                     \
  do {                                                                                        \
    const cudaError_t pf_cuda_err_ = (expr);                                                  \
    if (pf_cuda_err_ != cudaSuccess) {                                                        \
      return PF_ERROR(::pf::Code::kDriver, std::string(#expr) +                               \
                                               " failed: " + cudaGetErrorName(pf_cuda_err_) + \
                                               ": " + cudaGetErrorString(pf_cuda_err_));      \
    }                                                                                         \
  } while (0)

#define PF_CUDA_LAUNCHED() PF_CUDA_TRY(cudaGetLastError())
