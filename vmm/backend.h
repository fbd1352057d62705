// The physical-memory backend interface (DESIGN §3 vmm/).
//
// DESIGN: a backend owns nothing but what its handles name. Physical memory comes in
// *chunks* (exportable as POSIX fds so other processes can import them); virtual address
// space comes in *reservations*; a *mapping* places a range of a chunk into a reservation.
// The same sequence works on every backend and mirrors CUDA VMM:
//
//   create_chunk -> reserve -> map -> set_access -> ... -> unmap -> release_chunk
//                                                        -> free_reservation
//
// Threading: every method may be called from any thread; implementations serialize their
// own bookkeeping. Methods are blocking and return when the OS / driver call completed.
// Validation: sizes, offsets and addresses must be multiples of granularity(); a map must
// land inside a reservation made by this backend and not overlap a live mapping; a failed
// call changes nothing and leaks nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace pf::vmm {

// Where mapped memory lives: ordinary CPU loads/stores work on kHost only.
enum class MemoryKind { kHost, kDevice };

enum class Access { kNone, kRead, kReadWrite };

// A backend's handle to one physical chunk. `value` is backend-specific (host: the memfd;
// cuda: the CUmemGenericAllocationHandle). Plain data: ownership is by convention, see
// create_chunk / import_chunk / release_chunk.
struct ChunkHandle {
  std::uint64_t value = 0;
  std::size_t bytes = 0;
};

// Live resources held through this backend, for leak checks and /metrics.
struct BackendStats {
  std::size_t live_chunks = 0;
  std::size_t live_reservations = 0;
  std::size_t live_mappings = 0;
  std::size_t mapped_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "host", "cuda" or "fault"; stable, used in logs and /v1/health.
  virtual std::string_view name() const = 0;
  // "host" or "cuda:N". N is this process's ordinal, which depends on its
  // CUDA_VISIBLE_DEVICES: never hand it to another process as a device's name.
  virtual std::string device() const = 0;
  // The device's name that every process on the machine shares, whatever its
  // CUDA_VISIBLE_DEVICES: "GPU-<uuid>" (cuDeviceGetUuid, as nvidia-smi -L prints it) for a
  // CUDA device, "" for host memory. Another process finds the device by it
  // (find_cuda_device in vmm/cuda_backend.h).
  virtual std::string device_uuid() const { return {}; }
  // The device's PCI bus id ("0000:3b:00.0", cuDeviceGetPCIBusId), "" for host memory.
  virtual std::string device_pci_bus_id() const { return {}; }
  virtual MemoryKind memory_kind() const = 0;
  // Unit of chunk sizes, mapping sizes and offsets, and reservation sizes and alignment.
  virtual std::size_t granularity() const = 0;

  // Creates a physical chunk of `bytes` (a non-zero multiple of granularity()).
  // Ownership: the caller owns the handle and ends it with release_chunk().
  virtual Status create_chunk(std::size_t bytes, ChunkHandle* out) = 0;
  // Exports `chunk` as a POSIX fd (O_CLOEXEC). The caller owns the returned fd and closes
  // it; closing it does not affect the chunk.
  virtual Status export_chunk(const ChunkHandle& chunk, int* fd_out) = 0;
  // Imports a chunk of `bytes` from an fd made by export_chunk (here or in another process).
  // Does not take ownership of `fd`: the caller may close it as soon as this returns. The
  // fd is checked (kind, size) before anything is mapped. Release the handle with
  // release_chunk().
  virtual Status import_chunk(int fd, std::size_t bytes, ChunkHandle* out) = 0;
  // Ends a handle. The memory itself lives on while any mapping or other process holds it.
  virtual Status release_chunk(const ChunkHandle& chunk) = 0;

  // Reserves `bytes` of virtual address space, aligned to granularity(), inaccessible.
  virtual Status reserve(std::size_t bytes, void** va_out) = 0;
  // Frees a whole reservation; it must hold no live mapping.
  virtual Status free_reservation(void* va, std::size_t bytes) = 0;
  // Maps [chunk_offset, chunk_offset + bytes) of `chunk` at `va`, inaccessible until
  // set_access(). The mapping keeps the physical memory alive after release_chunk().
  virtual Status map(void* va, std::size_t bytes, const ChunkHandle& chunk,
                     std::size_t chunk_offset) = 0;
  // Sets access on a fully mapped range (it may span several mappings).
  virtual Status set_access(void* va, std::size_t bytes, Access access) = 0;
  // The finest unit (a power of two dividing granularity()) at which protect() changes
  // access inside a mapping of `chunk`; 0 when this backend cannot change access inside a
  // mapping (then only set_access over whole mappings does).
  virtual std::size_t protect_granularity(const ChunkHandle& /*chunk*/) const { return 0; }
  // Sets access on [va, va + bytes): it must lie inside live mappings (it may start and end
  // inside one) and be aligned to the protect_granularity() of their chunks. Each call may
  // split the process's mapping entries; the OS bounds their number (Linux:
  // vm.max_map_count), beyond which this fails with kOutOfMemory and changes nothing.
  // kUnsupported where protect_granularity() is 0.
  virtual Status protect(void* /*va*/, std::size_t /*bytes*/, Access /*access*/) {
    return PF_ERROR(Code::kUnsupported,
                    std::string(name()) + " backend cannot change access inside a mapping");
  }
  // Unmaps a range made of whole mappings; the address range stays reserved.
  virtual Status unmap(void* va, std::size_t bytes) = 0;

  // Blocking copies between ordinary host memory and mapped, accessible memory of this
  // backend (a plain memcpy on host memory, a driver copy on device memory).
  virtual Status copy_to_mapped(void* dst, const void* src, std::size_t bytes) = 0;
  virtual Status copy_from_mapped(void* dst, const void* src, std::size_t bytes) = 0;

  virtual BackendStats stats() const = 0;
};

}  // namespace pf::vmm
