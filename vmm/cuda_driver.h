// The CUDA driver API, loaded at run time (DESIGN §3 vmm/, §9).
//
// DESIGN: nothing in ProcessFork links libcuda. Every binary must start on a machine with
// no GPU and no driver, so the driver is dlopen()ed on first use and each entry point is
// resolved by its exact ABI symbol name into a table of typed function pointers (the
// approach of NCCL's cudawrap.h). cuda.h is used for types, enums and prototypes only.
//
//   load_driver()        once per process (std::call_once); the outcome is cached, an
//                        error is kUnavailable and names libcuda.so.1 and dlerror().
//   api().pfn_cuXxx      the resolved pointer; valid only after load_driver() succeeded.
//   PF_CU_TRY(cuXxx(..)) calls through the table; a failure returns a Status from the
//                        enclosing function (kDriver, kOutOfMemory for out-of-memory).
//
// Versioned names: cuda.h #defines some API names to versioned ABI symbols
// (cuDevicePrimaryCtxRelease -> cuDevicePrimaryCtxRelease_v2, cuMemcpyHtoD ->
// cuMemcpyHtoD_v2, ...). The loader stringifies each name *after* macro expansion, so it
// asks dlsym() for exactly the symbol the prototype in cuda.h describes, and the pointer's
// type is decltype(&thatPrototype). The library is never dlclose()d: the table stays valid
// until the process exits, including during static destruction.
//
// This header includes cuda.h and is meant for the vmm/ sources of CUDA builds (and their
// tests); code outside vmm/ uses vmm/cuda_backend.h, which does not.
#pragma once

#include <cuda.h>

#include <string>
#include <string_view>

#include "base/status.h"

#if defined(CUDA_API_PER_THREAD_DEFAULT_STREAM)
#error \
    "vmm/cuda_driver.h resolves the legacy-stream ABI symbols; do not build it with per-thread default streams"
#endif
#if CUDA_VERSION < 12000
#error "ProcessFork's CUDA backend needs the CUDA 12 or newer cuda.h"
#endif

// Entry points every CUDA backend needs: loading fails (kUnavailable) if one is missing.
#define PF_CU_REQUIRED_ENTRY_POINTS(X) \
  X(cuGetErrorName)                    \
  X(cuGetErrorString)                  \
  X(cuInit)                            \
  X(cuDriverGetVersion)                \
  X(cuDeviceGetCount)                  \
  X(cuDeviceGet)                       \
  X(cuDeviceGetAttribute)              \
  X(cuDeviceGetName)                   \
  X(cuDeviceGetUuid)                   \
  X(cuDeviceGetPCIBusId)               \
  X(cuDevicePrimaryCtxRetain)          \
  X(cuDevicePrimaryCtxRelease)         \
  X(cuCtxSetCurrent)                   \
  X(cuCtxGetCurrent)                   \
  X(cuMemGetAllocationGranularity)     \
  X(cuMemCreate)                       \
  X(cuMemRelease)                      \
  X(cuMemExportToShareableHandle)      \
  X(cuMemImportFromShareableHandle)    \
  X(cuMemAddressReserve)               \
  X(cuMemAddressFree)                  \
  X(cuMemMap)                          \
  X(cuMemUnmap)                        \
  X(cuMemSetAccess)                    \
  X(cuMemGetAccess)                    \
  X(cuMemcpyHtoD)                      \
  X(cuMemcpyDtoH)                      \
  X(cuStreamSynchronize)

// Entry points used when present (the pointer stays null otherwise); callers check.
#define PF_CU_OPTIONAL_ENTRY_POINTS(X) X(cuMemGetAllocationPropertiesFromHandle)

// "name" after macro expansion: PF_CU_SYMBOL(cuMemcpyHtoD) is "cuMemcpyHtoD_v2".
#define PF_CU_SYMBOL_INNER(name) #name
#define PF_CU_SYMBOL(name) PF_CU_SYMBOL_INNER(name)

namespace pf::vmm::cuda {

// The resolved driver entry points. `pfn_cuXxx` has the type of cuda.h's cuXxx prototype.
struct DriverApi {
#define PF_CU_DECLARE_PFN(name) decltype(&::name) pfn_##name = nullptr;
  PF_CU_REQUIRED_ENTRY_POINTS(PF_CU_DECLARE_PFN)
  PF_CU_OPTIONAL_ENTRY_POINTS(PF_CU_DECLARE_PFN)
#undef PF_CU_DECLARE_PFN
  // cuDriverGetVersion() at load time, e.g. 13000 for CUDA 13.0.
  int driver_version = 0;
};

// Loads libcuda.so.1 and resolves every entry point, once per process; later calls return
// the cached outcome. Thread-safe and blocking. Does not call cuInit().
// Errors: kUnavailable "CUDA driver (libcuda.so.1) not found: <dlerror>", or kUnavailable
// naming the first missing symbol (a driver too old for this build).
Status load_driver();

// The table. Precondition: load_driver() returned ok (otherwise every pointer is null).
const DriverApi& api();

// Tests only: replaces the table with `fake` (pointers to test doubles) and makes
// load_driver() succeed from now on without touching libcuda. Lets the backend's logic
// (refusal classification, device lookup, refcounts) run on machines without a GPU. Call it
// before any backend exists, in a test binary that never uses the real driver: the table is
// process-wide and is not restored.
void install_driver_for_testing(const DriverApi& fake);

// A Status for a failed driver call: "<function> failed: CUDA_ERROR_X (description)".
// `call` is the call's source text (only its function name is kept). The code is
// kOutOfMemory for CUDA_ERROR_OUT_OF_MEMORY and kDriver otherwise; `file`/`line` start the
// trail.
Status driver_error(CUresult result, const char* call, const char* file, int line);

// The same with a caller-chosen code and a prefix that says what was being done.
Status driver_error(Code code, std::string_view context, CUresult result, const char* call,
                    const char* file, int line);

// "CUDA_ERROR_X (description)" for `result`, or "CUresult N" if the driver does not know it.
std::string result_text(CUresult result);

}  // namespace pf::vmm::cuda

// Calls a driver entry point through the table and yields its CUresult:
// `CUresult r = PF_CU_CALL(cuMemUnmap(ptr, size));`.
#define PF_CU_CALL(call) (::pf::vmm::cuda::api().pfn_##call)

// Calls a driver entry point; on failure returns the error Status from the enclosing
// function (which must return Status or Result<T>). In the style of NCCL's CUCHECK.
// (It pastes `pfn_` itself rather than using PF_CU_CALL: a nested macro would expand
// cuMemcpyHtoD to cuMemcpyHtoD_v2 before the paste.)
#define PF_CU_TRY(call)                                                               \
  do {                                                                                \
    const CUresult pf_cu_result_ = ::pf::vmm::cuda::api().pfn_##call;                 \
    if (pf_cu_result_ != CUDA_SUCCESS) {                                              \
      return ::pf::vmm::cuda::driver_error(pf_cu_result_, #call, __FILE__, __LINE__); \
    }                                                                                 \
  } while (0)
