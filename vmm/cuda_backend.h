// The CUDA VMM backend (DESIGN §3 vmm/): physical chunks from cuMemCreate, shared between
// processes as POSIX file descriptors, mapped into reservations made by cuMemAddressReserve.
//
// This header does not include cuda.h and compiles in every build. The factory exists only
// in CUDA builds (PF_HAVE_CUDA); test kCudaBackendBuilt or PF_HAVE_CUDA before calling it.
// Even in a CUDA build nothing is linked against libcuda: the driver is loaded at run time
// on the first call (vmm/cuda_driver.h), so a machine without a GPU or driver gets a
// kUnavailable error, not a failed start.
//
// Backend semantics beyond vmm/backend.h (see docs/cuda.md):
//  - memory_kind() is kDevice: mapped addresses are GPU virtual addresses; the CPU cannot
//    load or store through them, use copy_to_mapped / copy_from_mapped.
//  - map() takes chunk_offset == 0 only (cuMemMap's offset must currently be zero); a map
//    may cover a prefix of the chunk. A non-zero offset is kUnsupported.
//  - set_access() grants the access to this backend's device, with one cuMemSetAccess over
//    the whole range. Access::kNone (revoking access while mapped) is passed to the driver;
//    if the driver refuses it the call fails with kUnsupported and changes nothing: unmap
//    the range instead.
//  - copy_to_mapped() returns after the bytes have reached device memory (it synchronizes
//    the legacy default stream of the device's primary context), so another process that
//    maps the same chunk sees them.
//  - Every call makes the device's primary context current on the calling thread for its
//    duration and restores the thread's previous context before returning.
//  - import_chunk() maps nothing (no synchronizing trial map): a size claim larger than the
//    allocation fails at map() with kInvalidArgument. An import that the driver answers with
//    a handle this backend already holds is one more reference to it; cuMemRelease runs
//    once, when release_chunk() ended the last reference.
//  - copy_to_mapped / copy_from_mapped keep their range mapped until they return: unmap()
//    and set_access() wait for copies in flight.
//  - device_uuid() / device_pci_bus_id() name the device across processes; device()'s
//    ordinal does not (find_cuda_device below, docs/cuda.md "Device identity").
//  - Driver failures are kDriver, except CUDA_ERROR_OUT_OF_MEMORY, which is kOutOfMemory
//    (so the runtime can evict and retry).
#pragma once

#include <memory>
#include <string_view>

#include "base/status.h"
#include "vmm/backend.h"

namespace pf::vmm {

#if defined(PF_HAVE_CUDA)

inline constexpr bool kCudaBackendBuilt = true;

// Opens CUDA device `device_ordinal` (0-based, as in CUDA_VISIBLE_DEVICES order).
// Blocking: loads the driver on first use, calls cuInit, retains the device's primary
// context (released when the backend is destroyed) and queries the granularity.
// Errors: kUnavailable when libcuda.so.1 is missing or too old, cuInit fails (no device, no
// kernel module) or the ordinal is out of range ("no CUDA device N (found M)");
// kUnsupported when the device lacks virtual memory management or POSIX-fd export.
// The backend must outlive every handle, mapping and reservation made through it; destroy
// it only after releasing them (leftovers are reported on stderr and leaked).
Result<std::unique_ptr<Backend>> make_cuda_backend(int device_ordinal);

// Number of CUDA devices the driver sees (0 is possible). Loads the driver and calls cuInit.
// Errors: kUnavailable when the driver is missing or cuInit fails.
Result<int> cuda_device_count();

// Finds the ordinal, in this process, of the device another process named by its UUID
// ("GPU-...", Backend::device_uuid) or, when `uuid` is empty, its PCI bus id (compared as
// numbers, so "0000:3B:00.0" matches "00000000:3b:00.0"). Ordinals differ between processes
// whose CUDA_VISIBLE_DEVICES differ; the UUID and the bus id do not (NCCL identifies peers'
// GPUs by bus id the same way). Blocking: loads the driver, calls cuInit, then queries each
// visible device (cuDeviceGet over cuDeviceGetCount).
// Errors: kUnavailable when the driver is unusable or no visible device matches (the
// message names the device sought, the devices this process sees and its
// CUDA_VISIBLE_DEVICES); kInvalidArgument when both names are empty.
Result<int> find_cuda_device(std::string_view uuid, std::string_view pci_bus_id);

#else

inline constexpr bool kCudaBackendBuilt = false;

#endif  // PF_HAVE_CUDA

}  // namespace pf::vmm
