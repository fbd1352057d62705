// CudaBackend: vmm::Backend over the CUDA virtual memory management API.
//
// DESIGN: every method follows one shape (see vmm/resource_tracker.h):
//
//   lock the tracker -> validate with the tracker (nothing touched yet on error)
//   -> make the primary context current (ScopedContext) -> one driver call
//   -> record in the tracker; if recording fails, undo the driver call
//
// so a failed call changes nothing and leaks nothing, and concurrent callers see the
// tracker and the driver agree. The primary context of the device is retained for the
// backend's life; each call makes it current on the calling thread and puts back whatever
// the thread had before, so engine threads keep their own context.
//
// IPC: chunks are created with requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
// and exported with cuMemExportToShareableHandle. The exported fd is the caller's; the driver
// keeps nothing of it. cuMemImportFromShareableHandle does not take ownership of the fd it
// is given (unlike cuImportExternalMemory): NCCL closes the fd right after importing
// (src/transport/nvls.cc, nvlsGroupConnect), and cuda.h says an exported allocation is
// freed once "all shareable handles are closed and the allocation is released", i.e. the
// application closes them. import_chunk therefore never closes `fd`.
//
// Re-imports: the driver does not promise that importing an fd in the process that holds
// the allocation yields a new handle; it may hand back the live one. The tracker counts
// references per handle value (vmm/resource_tracker.h): each create/import is one
// reference, each release_chunk ends one, and cuMemRelease runs once, when the last ends.
//
// Imports are checked without touching the GPU's page tables: location and granularity from
// cuMemGetAllocationPropertiesFromHandle; a size larger than the allocation makes the real
// cuMemMap fail (kInvalidArgument, nothing changed). No trial map: cuMemUnmap synchronizes
// the device, and every chunk import of an engine process would pay for it.
//
// Copies vs unmap: copy_to_mapped / copy_from_mapped hold `mapping_users_` shared from
// their range check until the copy returned; unmap and set_access hold it exclusively, so a
// range cannot be unmapped (or lose access) between the check and the DMA. Lock order:
// mapping_users_, then the tracker's mutex.
#include "vmm/cuda_backend.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <string>

#include "vmm/cuda_device.h"
#include "vmm/cuda_driver.h"
#include "vmm/resource_tracker.h"

namespace pf::vmm {
namespace {

CUdeviceptr dptr(const void* va) {
  return static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(va));
}
void* vptr(CUdeviceptr p) {
  return reinterpret_cast<void*>(static_cast<std::uintptr_t>(p));
}

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

const char* access_name(Access a) {
  switch (a) {
    case Access::kNone:
      return "none";
    case Access::kRead:
      return "read-only";
    case Access::kReadWrite:
      return "read-write";
  }
  return "?";
}

// Makes `ctx` current on this thread for the guard's scope and restores the previous one.
class ScopedContext {
 public:
  explicit ScopedContext(CUcontext ctx) : ctx_(ctx) {}
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;
  ~ScopedContext() {
    if (switched_) {
      const CUresult r = PF_CU_CALL(cuCtxSetCurrent(previous_));
      (void)r;  // nothing to report to: the call that used the context already returned
    }
  }

  Status enter() {
    PF_CU_TRY(cuCtxGetCurrent(&previous_));
    if (previous_ != ctx_) {
      PF_CU_TRY(cuCtxSetCurrent(ctx_));
      switched_ = true;
    }
    return Status::ok();
  }

 private:
  CUcontext ctx_;
  CUcontext previous_ = nullptr;
  bool switched_ = false;
};

class CudaBackend final : public Backend {
 public:
  static Result<std::unique_ptr<Backend>> make(int ordinal);

  ~CudaBackend() override {
    const BackendStats s = tracker_.stats();
    if (s.live_chunks || s.live_reservations || s.live_mappings) {
      std::fprintf(stderr,
                   "processfork: cuda:%d (%s) backend destroyed with %zu chunks, %zu "
                   "reservations, %zu mappings still live; they are leaked\n",
                   ordinal_, device_name_.c_str(), s.live_chunks, s.live_reservations,
                   s.live_mappings);
    }
    const CUresult r = PF_CU_CALL(cuDevicePrimaryCtxRelease(device_));
    (void)r;
  }

  std::string_view name() const override { return "cuda"; }
  std::string device() const override { return "cuda:" + std::to_string(ordinal_); }
  std::string device_uuid() const override { return uuid_; }
  std::string device_pci_bus_id() const override { return pci_bus_id_; }
  MemoryKind memory_kind() const override { return MemoryKind::kDevice; }
  std::size_t granularity() const override { return tracker_.granularity(); }

  Status create_chunk(std::size_t bytes, ChunkHandle* out) override;
  Status export_chunk(const ChunkHandle& chunk, int* fd_out) override;
  Status import_chunk(int fd, std::size_t bytes, ChunkHandle* out) override;
  Status release_chunk(const ChunkHandle& chunk) override;
  Status reserve(std::size_t bytes, void** va_out) override;
  Status free_reservation(void* va, std::size_t bytes) override;
  Status map(void* va, std::size_t bytes, const ChunkHandle& chunk,
             std::size_t chunk_offset) override;
  Status set_access(void* va, std::size_t bytes, Access access) override;
  Status unmap(void* va, std::size_t bytes) override;
  Status copy_to_mapped(void* dst, const void* src, std::size_t bytes) override;
  Status copy_from_mapped(void* dst, const void* src, std::size_t bytes) override;

  BackendStats stats() const override {
    auto lock = tracker_.lock();
    return tracker_.stats();
  }

 private:
  CudaBackend(int ordinal, CUdevice device, CUcontext ctx, std::string device_name,
              std::string uuid, std::string pci_bus_id, const CUmemAllocationProp& prop,
              std::size_t granularity)
      : ordinal_(ordinal),
        device_(device),
        ctx_(ctx),
        device_name_(std::move(device_name)),
        uuid_(std::move(uuid)),
        pci_bus_id_(std::move(pci_bus_id)),
        prop_(prop),
        tracker_(granularity) {}

  // Checks an imported allocation before it is handed out, without mapping it: it lives on
  // this device and `bytes` is a multiple of its granularity. Whether it holds `bytes` is
  // left to map() (cuMemMap refuses a larger mapping). Caller holds the lock and the context.
  Status check_imported(int fd, CUmemGenericAllocationHandle handle, std::size_t bytes);
  // Every granule of [va, va + bytes) is mapped with at least `needed` access for this
  // device, so a copy cannot fault the context. Caller holds mapping_users_ (shared or
  // exclusive) until the copy returned, and the context.
  Status check_copy_range(const void* va, std::size_t bytes, bool write, const char* what);
  // Records one more reference to `handle` (new, or a live handle the driver handed out
  // again for an import). On failure, releases the driver handle only when this call was
  // its only holder. Caller holds the lock and the context.
  Status record_chunk(CUmemGenericAllocationHandle handle, std::size_t bytes, bool imported,
                      ChunkHandle* out);

  const int ordinal_;
  const CUdevice device_;
  const CUcontext ctx_;  // the retained primary context
  const std::string device_name_;
  const std::string uuid_;          // "GPU-..." (cuDeviceGetUuid)
  const std::string pci_bus_id_;    // cuDeviceGetPCIBusId
  const CUmemAllocationProp prop_;  // pinned, on device_, exportable as a POSIX fd
  // Shared by copies from range check to completion; exclusive for unmap and set_access
  // (see the DESIGN note). Taken before tracker_'s mutex.
  std::shared_mutex mapping_users_;
  ResourceTracker tracker_;
};

Result<std::unique_ptr<Backend>> CudaBackend::make(int ordinal) {
  PF_ASSIGN_OR_RETURN(const int count, cuda::init_and_count());
  if (ordinal < 0 || ordinal >= count) {
    return PF_ERROR(Code::kUnavailable, "no CUDA device " + std::to_string(ordinal) + " (found " +
                                            std::to_string(count) + ")");
  }
  CUdevice device = 0;
  PF_CU_TRY(cuDeviceGet(&device, ordinal));
  char raw_name[256] = {};
  if (PF_CU_CALL(cuDeviceGetName(raw_name, sizeof raw_name - 1, device)) != CUDA_SUCCESS) {
    raw_name[0] = '\0';
  }
  const std::string label = "cuda:" + std::to_string(ordinal) + " (" + raw_name + ")";
  std::string uuid;
  std::string pci_bus_id;
  PF_TRY(cuda::device_identity(device, &uuid, &pci_bus_id));

  int vmm = 0;
  PF_CU_TRY(
      cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, device));
  if (!vmm) {
    return PF_ERROR(Code::kUnsupported,
                    label +
                        " does not support CUDA virtual memory management "
                        "(CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED is 0)");
  }
  int posix_fd = 0;
  PF_CU_TRY(cuDeviceGetAttribute(
      &posix_fd, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, device));
  if (!posix_fd) {
    return PF_ERROR(Code::kUnsupported,
                    label +
                        " cannot export memory as POSIX file descriptors "
                        "(CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED is 0)");
  }

  CUcontext ctx = nullptr;
  PF_CU_TRY(cuDevicePrimaryCtxRetain(&ctx, device));
  // From here on every error path releases the retained context.
  auto fail = [&](Status s) -> Result<std::unique_ptr<Backend>> {
    const CUresult r = PF_CU_CALL(cuDevicePrimaryCtxRelease(device));
    (void)r;
    return s;
  };

  CUmemAllocationProp prop = {};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;

  std::size_t granularity = 0;
  {
    ScopedContext scope(ctx);
    if (Status s = scope.enter(); !s) return fail(std::move(s.add_frame(__FILE__, __LINE__)));
    const CUresult r = PF_CU_CALL(
        cuMemGetAllocationGranularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
    if (r != CUDA_SUCCESS) {
      return fail(cuda::driver_error(r, "cuMemGetAllocationGranularity", __FILE__, __LINE__));
    }
  }
  if (granularity == 0 || (granularity & (granularity - 1)) != 0) {
    return fail(PF_ERROR(Code::kDriver, label + ": driver reported allocation granularity " +
                                            std::to_string(granularity) + ", not a power of two"));
  }
  try {
    return std::unique_ptr<Backend>(new CudaBackend(ordinal, device, ctx, raw_name, std::move(uuid),
                                                    std::move(pci_bus_id), prop, granularity));
  } catch (const std::bad_alloc&) {
    return fail(PF_ERROR(Code::kOutOfMemory, "out of host memory creating the CUDA backend"));
  }
}

Status CudaBackend::record_chunk(CUmemGenericAllocationHandle handle, std::size_t bytes,
                                 bool imported, ChunkHandle* out) {
  const ChunkHandle chunk{static_cast<std::uint64_t>(handle), bytes};
  if (const std::size_t live = tracker_.chunk_bytes(chunk.value); live != 0) {
    // The driver handed out a handle this backend already holds: for an import, the same
    // allocation again (one more reference, released once: see the DESIGN note). Not
    // released here on failure: the other holders still use it.
    if (!imported) {
      return PF_ERROR(Code::kInternal, "cuMemCreate returned handle " +
                                           std::to_string(chunk.value) +
                                           ", which is already live in this backend");
    }
    if (live != bytes) {
      return PF_ERROR(Code::kInvalidArgument,
                      "import_chunk: the fd names a chunk this process holds (handle " +
                          std::to_string(chunk.value) + ") of " + std::to_string(live) +
                          " bytes, not the " + std::to_string(bytes) + " bytes claimed");
    }
  }
  const bool first = tracker_.chunk_refs(chunk.value) == 0;
  try {
    tracker_.add_chunk(chunk);
  } catch (const std::bad_alloc&) {
    if (first) {
      const CUresult r = PF_CU_CALL(cuMemRelease(handle));
      (void)r;
    }
    return PF_ERROR(Code::kOutOfMemory, "out of host memory recording a chunk");
  }
  *out = chunk;
  return Status::ok();
}

Status CudaBackend::create_chunk(std::size_t bytes, ChunkHandle* out) {
  if (out == nullptr) return PF_ERROR(Code::kInvalidArgument, "create_chunk: null output");
  auto lock = tracker_.lock();
  PF_TRY(tracker_.check_size(bytes, "chunk"));
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  CUmemGenericAllocationHandle handle = 0;
  PF_CU_TRY(cuMemCreate(&handle, bytes, &prop_, 0));
  PF_TRY(record_chunk(handle, bytes, /*imported=*/false, out));
  return Status::ok();
}

Status CudaBackend::export_chunk(const ChunkHandle& chunk, int* fd_out) {
  if (fd_out == nullptr) return PF_ERROR(Code::kInvalidArgument, "export_chunk: null output");
  auto lock = tracker_.lock();
  PF_TRY(tracker_.check_chunk(chunk));
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  int fd = -1;
  PF_CU_TRY(
      cuMemExportToShareableHandle(&fd, chunk.value, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
  // The contract promises O_CLOEXEC; the driver does not document it, so make sure.
  const int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || ((flags & FD_CLOEXEC) == 0 && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)) {
    const int err = errno;
    close(fd);
    return errno_status("export_chunk: setting FD_CLOEXEC on the exported fd", err)
        .add_frame(__FILE__, __LINE__);
  }
  *fd_out = fd;
  return Status::ok();
}

Status CudaBackend::check_imported(int fd, CUmemGenericAllocationHandle handle, std::size_t bytes) {
  // Without cuMemGetAllocationPropertiesFromHandle (an old driver) the real map is the
  // only check; it fails cleanly on a foreign or smaller allocation.
  if (cuda::api().pfn_cuMemGetAllocationPropertiesFromHandle == nullptr) return Status::ok();
  const std::string what = "import_chunk: fd " + std::to_string(fd);
  CUmemAllocationProp prop = {};
  PF_CU_TRY(cuMemGetAllocationPropertiesFromHandle(&prop, handle));
  if (prop.location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop.location.id != device_) {
    return PF_ERROR(Code::kInvalidArgument,
                    what + " holds memory at location type " +
                        std::to_string(static_cast<int>(prop.location.type)) + " id " +
                        std::to_string(prop.location.id) + ", not on " + device());
  }
  // The allocation's size is a multiple of its own granularity; a claim that is not cannot
  // be its size. (Its exact size has no query; map() catches a claim that is too large.)
  std::size_t granularity = 0;
  PF_CU_TRY(cuMemGetAllocationGranularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
  if (granularity != 0 && bytes % granularity != 0) {
    return PF_ERROR(Code::kInvalidArgument, what + ": " + std::to_string(bytes) +
                                                " bytes is not a multiple of the allocation's "
                                                "granularity (" +
                                                std::to_string(granularity) + ")");
  }
  return Status::ok();
}

Status CudaBackend::import_chunk(int fd, std::size_t bytes, ChunkHandle* out) {
  if (out == nullptr) return PF_ERROR(Code::kInvalidArgument, "import_chunk: null output");
  if (fd < 0 || fcntl(fd, F_GETFD) < 0) {
    return PF_ERROR(Code::kInvalidArgument,
                    "import_chunk: fd " + std::to_string(fd) + " is not an open file descriptor");
  }
  auto lock = tracker_.lock();
  PF_TRY(tracker_.check_size(bytes, "imported chunk"));
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  CUmemGenericAllocationHandle handle = 0;
  // The driver does not take ownership of `fd` (see the DESIGN note above): the caller
  // keeps it and may close it as soon as this returns.
  const CUresult r = PF_CU_CALL(cuMemImportFromShareableHandle(
      &handle, reinterpret_cast<void*>(static_cast<std::uintptr_t>(fd)),
      CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
  if (r != CUDA_SUCCESS) {
    const Code code = r == CUDA_ERROR_OUT_OF_MEMORY ? Code::kOutOfMemory
                      : (r == CUDA_ERROR_INVALID_VALUE || r == CUDA_ERROR_INVALID_HANDLE ||
                         r == CUDA_ERROR_NOT_SUPPORTED)
                          ? Code::kInvalidArgument
                          : Code::kDriver;
    return cuda::driver_error(
        code, "import_chunk: fd " + std::to_string(fd) + " is not an importable CUDA allocation", r,
        "cuMemImportFromShareableHandle", __FILE__, __LINE__);
  }
  if (Status s = check_imported(fd, handle, bytes); !s) {
    // A handle this backend already holds stays with its holders.
    if (tracker_.chunk_refs(static_cast<std::uint64_t>(handle)) == 0) {
      const CUresult released = PF_CU_CALL(cuMemRelease(handle));
      (void)released;
    }
    return std::move(s.add_frame(__FILE__, __LINE__));
  }
  PF_TRY(record_chunk(handle, bytes, /*imported=*/true, out));
  return Status::ok();
}

Status CudaBackend::release_chunk(const ChunkHandle& chunk) {
  auto lock = tracker_.lock();
  PF_TRY(tracker_.check_chunk(chunk));
  if (tracker_.chunk_refs(chunk.value) > 1) {  // another create/import holds the same handle
    tracker_.remove_chunk(chunk);
    return Status::ok();
  }
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  PF_CU_TRY(cuMemRelease(chunk.value));
  tracker_.remove_chunk(chunk);
  return Status::ok();
}

Status CudaBackend::reserve(std::size_t bytes, void** va_out) {
  if (va_out == nullptr) return PF_ERROR(Code::kInvalidArgument, "reserve: null output");
  auto lock = tracker_.lock();
  PF_TRY(tracker_.check_size(bytes, "reservation"));
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  CUdeviceptr va = 0;
  PF_CU_TRY(cuMemAddressReserve(&va, bytes, tracker_.granularity(), 0, 0));
  Status s;
  if (va == 0 || va % tracker_.granularity() != 0) {
    s = PF_ERROR(Code::kDriver, "cuMemAddressReserve returned " + hex(vptr(va)) +
                                    ", not aligned to the granularity");
  } else {
    try {
      tracker_.add_reservation(vptr(va), bytes);
    } catch (const std::bad_alloc&) {
      s = PF_ERROR(Code::kOutOfMemory, "out of host memory recording a reservation");
    }
  }
  if (!s) {
    if (va != 0) {
      const CUresult r = PF_CU_CALL(cuMemAddressFree(va, bytes));
      (void)r;
    }
    return s;
  }
  *va_out = vptr(va);
  return Status::ok();
}

Status CudaBackend::free_reservation(void* va, std::size_t bytes) {
  auto lock = tracker_.lock();
  PF_TRY(tracker_.check_free_reservation(va, bytes));
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  PF_CU_TRY(cuMemAddressFree(dptr(va), bytes));
  tracker_.remove_reservation(va);
  return Status::ok();
}

Status CudaBackend::map(void* va, std::size_t bytes, const ChunkHandle& chunk,
                        std::size_t chunk_offset) {
  auto lock = tracker_.lock();
  PF_TRY(tracker_.check_map(va, bytes, chunk, chunk_offset));
  if (chunk_offset != 0) {
    return PF_ERROR(Code::kUnsupported,
                    "map: CUDA maps chunks from offset 0 only (cuMemMap's offset must be zero); "
                    "got offset " +
                        std::to_string(chunk_offset));
  }
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  if (const CUresult r = PF_CU_CALL(cuMemMap(dptr(va), bytes, 0, chunk.value, 0));
      r != CUDA_SUCCESS) {
    // The tracker validated the range and the handle, so an invalid value is the chunk
    // itself: an imported allocation smaller than the size its fd was claimed to have.
    if (r == CUDA_ERROR_INVALID_VALUE) {
      return cuda::driver_error(Code::kInvalidArgument,
                                "map: the chunk does not hold the " + std::to_string(bytes) +
                                    " bytes mapped (an imported fd claimed more than its "
                                    "allocation holds?)",
                                r, "cuMemMap", __FILE__, __LINE__);
    }
    return cuda::driver_error(r, "cuMemMap", __FILE__, __LINE__);
  }
  try {
    tracker_.add_mapping(va, bytes);
  } catch (const std::bad_alloc&) {
    const CUresult r = PF_CU_CALL(cuMemUnmap(dptr(va), bytes));
    (void)r;
    return PF_ERROR(Code::kOutOfMemory, "out of host memory recording a mapping");
  }
  return Status::ok();
}

Status CudaBackend::set_access(void* va, std::size_t bytes, Access access) {
  std::unique_lock users(mapping_users_);  // no copy is between its check and its DMA
  auto lock = tracker_.lock();
  PF_TRY(tracker_.check_mapped_range(va, bytes, "set_access"));
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  CUmemAccessDesc desc = {};
  desc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  desc.location.id = device_;
  switch (access) {
    case Access::kNone:
      desc.flags = CU_MEM_ACCESS_FLAGS_PROT_NONE;
      break;
    case Access::kRead:
      desc.flags = CU_MEM_ACCESS_FLAGS_PROT_READ;
      break;
    case Access::kReadWrite:
      desc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
      break;
  }
  // One call over the whole range, which may span several mappings (DESIGN §3).
  const CUresult r = PF_CU_CALL(cuMemSetAccess(dptr(va), bytes, &desc, 1));
  if (r == CUDA_SUCCESS) return Status::ok();
  if (access != Access::kReadWrite &&
      (r == CUDA_ERROR_NOT_SUPPORTED || r == CUDA_ERROR_INVALID_VALUE ||
       r == CUDA_ERROR_INVALID_DEVICE)) {
    // The range was validated above, so the driver is refusing the access mode itself
    // (revoking access of a mapped range is not allowed on every driver/device; drivers
    // answer NOT_SUPPORTED, INVALID_VALUE or INVALID_DEVICE for a location/flags pair they
    // do not support).
    return cuda::driver_error(Code::kUnsupported,
                              std::string("set_access: the CUDA driver refused ") +
                                  access_name(access) + " access on " + device() +
                                  (access == Access::kNone ? " (unmap the range instead)" : ""),
                              r, "cuMemSetAccess", __FILE__, __LINE__);
  }
  return cuda::driver_error(r, "cuMemSetAccess", __FILE__, __LINE__);
}

Status CudaBackend::unmap(void* va, std::size_t bytes) {
  std::unique_lock users(mapping_users_);  // waits for copies in flight over any mapping
  auto lock = tracker_.lock();
  PF_TRY(tracker_.check_mapped_range(va, bytes, "unmap"));
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  // One call over whole mappings: cuMemUnmap may span several adjacent mappings as long as
  // it splits none (the CUDA samples' vectorAddMMAP does the same).
  PF_CU_TRY(cuMemUnmap(dptr(va), bytes));
  tracker_.remove_mappings(va, bytes);
  return Status::ok();
}

Status CudaBackend::check_copy_range(const void* va, std::size_t bytes, bool write,
                                     const char* what) {
  const std::size_t g = tracker_.granularity();
  CUmemLocation location = {};
  location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  location.id = device_;
  const std::uintptr_t start = reinterpret_cast<std::uintptr_t>(va);
  const std::uintptr_t end = start + bytes;
  if (end < start) return PF_ERROR(Code::kInvalidArgument, std::string(what) + ": range wraps");
  {
    auto lock = tracker_.lock();
    PF_TRY(tracker_.check_within_mappings(const_cast<void*>(va), bytes, what));
  }
  // One query per granule: access is per mapping and a range may span several.
  for (std::uintptr_t p = start; p < end; p = (p / g + 1) * g) {
    unsigned long long flags = 0;
    const CUresult r = PF_CU_CALL(cuMemGetAccess(&flags, &location, static_cast<CUdeviceptr>(p)));
    const bool ok = r == CUDA_SUCCESS && (write ? flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                                                : (flags & CU_MEM_ACCESS_FLAGS_PROT_READ) != 0);
    if (!ok) {
      return PF_ERROR(Code::kInvalidArgument,
                      std::string(what) + ": " + hex(reinterpret_cast<void*>(p)) + " is not " +
                          (write ? "writable" : "readable") + " mapped memory of " + device() +
                          " (map it and set_access first)");
    }
  }
  return Status::ok();
}

Status CudaBackend::copy_to_mapped(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return Status::ok();
  if (dst == nullptr || src == nullptr) {
    return PF_ERROR(Code::kInvalidArgument, "copy_to_mapped: null pointer");
  }
  std::shared_lock users(mapping_users_);  // the range stays mapped until the copy returned
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  PF_TRY(check_copy_range(dst, bytes, /*write=*/true, "copy_to_mapped"));
  PF_CU_TRY(cuMemcpyHtoD(dptr(dst), src, bytes));
  // From pageable memory cuMemcpyHtoD may return before the DMA lands; wait for it so that
  // other processes mapping the chunk see the bytes once this returns.
  PF_CU_TRY(cuStreamSynchronize(CU_STREAM_LEGACY));
  return Status::ok();
}

Status CudaBackend::copy_from_mapped(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return Status::ok();
  if (dst == nullptr || src == nullptr) {
    return PF_ERROR(Code::kInvalidArgument, "copy_from_mapped: null pointer");
  }
  std::shared_lock users(mapping_users_);  // the range stays mapped until the copy returned
  ScopedContext scope(ctx_);
  PF_TRY(scope.enter());
  PF_TRY(check_copy_range(src, bytes, /*write=*/false, "copy_from_mapped"));
  PF_CU_TRY(cuMemcpyDtoH(dst, dptr(src), bytes));  // synchronous for pageable destinations
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<Backend>> make_cuda_backend(int device_ordinal) {
  return CudaBackend::make(device_ordinal);
}

}  // namespace pf::vmm
