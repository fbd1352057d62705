// The fault backend: a decorator over any backend that fails chosen calls or slows them
// down (DESIGN §3 vmm/ `fault`), so out-of-memory, failed exports and slow drivers are
// tested without a GPU (in the spirit of Mooncake's fault proxy transport).
//
// A rule per operation decides, for each call, whether to fail it before the inner backend
// is touched (so an injected failure changes nothing, exactly like a real failing driver
// call that is checked first), and how long to sleep first. Rules can change at any time,
// from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>

#include "vmm/backend.h"

namespace pf::vmm {

enum class FaultOp : int {
  kCreateChunk,
  kExportChunk,
  kImportChunk,
  kReleaseChunk,
  kReserve,
  kFreeReservation,
  kMap,
  kSetAccess,
  kUnmap,
  kCopy,
  kCount,
};

std::string_view fault_op_name(FaultOp op);

struct FaultRule {
  static constexpr std::uint64_t kNever = std::numeric_limits<std::uint64_t>::max();
  // Calls that succeed before failures start (counted from when the rule is set).
  std::uint64_t fail_after = kNever;
  // Failures injected once they started; kNever = every later call fails.
  std::uint64_t fail_count = kNever;
  // Independent chance in [0, 1] that any call fails (deterministic from `seed`).
  double fail_rate = 0.0;
  std::uint64_t seed = 1;
  // Sleep added before every call (failed or not).
  std::chrono::microseconds latency{0};
  // The code an injected failure carries.
  Code code = Code::kOutOfMemory;
};

class FaultBackend final : public Backend {
 public:
  // Takes ownership of `inner`; every call goes through to it unless a rule fails it.
  explicit FaultBackend(std::unique_ptr<Backend> inner);
  ~FaultBackend() override;

  void set_rule(FaultOp op, FaultRule rule);
  void clear_rules();
  // Calls seen and failures injected for `op` since construction.
  std::uint64_t calls(FaultOp op) const;
  std::uint64_t injected(FaultOp op) const;
  Backend& inner() { return *inner_; }

  std::string_view name() const override { return "fault"; }
  std::string device() const override { return inner_->device(); }
  std::string device_uuid() const override { return inner_->device_uuid(); }
  std::string device_pci_bus_id() const override { return inner_->device_pci_bus_id(); }
  MemoryKind memory_kind() const override { return inner_->memory_kind(); }
  std::size_t granularity() const override { return inner_->granularity(); }
  Status create_chunk(std::size_t bytes, ChunkHandle* out) override;
  Status export_chunk(const ChunkHandle& chunk, int* fd_out) override;
  Status import_chunk(int fd, std::size_t bytes, ChunkHandle* out) override;
  Status release_chunk(const ChunkHandle& chunk) override;
  Status reserve(std::size_t bytes, void** va_out) override;
  Status free_reservation(void* va, std::size_t bytes) override;
  Status map(void* va, std::size_t bytes, const ChunkHandle& chunk,
             std::size_t chunk_offset) override;
  Status set_access(void* va, std::size_t bytes, Access access) override;
  std::size_t protect_granularity(const ChunkHandle& chunk) const override {
    return inner_->protect_granularity(chunk);
  }
  // Counted and failed as set_access (FaultOp::kSetAccess).
  Status protect(void* va, std::size_t bytes, Access access) override;
  Status unmap(void* va, std::size_t bytes) override;
  Status copy_to_mapped(void* dst, const void* src, std::size_t bytes) override;
  Status copy_from_mapped(void* dst, const void* src, std::size_t bytes) override;
  BackendStats stats() const override { return inner_->stats(); }

 private:
  struct State;
  // Applies latency, then decides; an error Status when this call must fail.
  Status before(FaultOp op);

  std::unique_ptr<Backend> inner_;
  std::unique_ptr<State> state_;
};

}  // namespace pf::vmm
