#include "vmm/fault_backend.h"

#include <array>
#include <mutex>
#include <random>
#include <string>
#include <thread>

namespace pf::vmm {

std::string_view fault_op_name(FaultOp op) {
  static constexpr std::array<std::string_view, static_cast<int>(FaultOp::kCount)> kNames = {
      "create_chunk",     "export_chunk", "import_chunk", "release_chunk", "reserve",
      "free_reservation", "map",          "set_access",   "unmap",         "copy"};
  const int i = static_cast<int>(op);
  return (i >= 0 && i < static_cast<int>(kNames.size())) ? kNames[i] : "unknown";
}

struct FaultBackend::State {
  struct PerOp {
    bool has_rule = false;
    FaultRule rule;
    std::uint64_t since_rule = 0;  // calls since the rule was set
    std::uint64_t failed_under_rule = 0;
    std::mt19937_64 rng;
    std::uint64_t calls = 0;
    std::uint64_t injected = 0;
  };
  mutable std::mutex mutex;
  std::array<PerOp, static_cast<int>(FaultOp::kCount)> ops;
};

FaultBackend::FaultBackend(std::unique_ptr<Backend> inner)
    : inner_(std::move(inner)), state_(std::make_unique<State>()) {}

FaultBackend::~FaultBackend() = default;

void FaultBackend::set_rule(FaultOp op, FaultRule rule) {
  std::lock_guard lock(state_->mutex);
  auto& p = state_->ops[static_cast<int>(op)];
  p.has_rule = true;
  p.rule = rule;
  p.since_rule = 0;
  p.failed_under_rule = 0;
  p.rng.seed(rule.seed);
}

void FaultBackend::clear_rules() {
  std::lock_guard lock(state_->mutex);
  for (auto& p : state_->ops) p.has_rule = false;
}

std::uint64_t FaultBackend::calls(FaultOp op) const {
  std::lock_guard lock(state_->mutex);
  return state_->ops[static_cast<int>(op)].calls;
}

std::uint64_t FaultBackend::injected(FaultOp op) const {
  std::lock_guard lock(state_->mutex);
  return state_->ops[static_cast<int>(op)].injected;
}

Status FaultBackend::before(FaultOp op) {
  std::chrono::microseconds latency{0};
  bool fail = false;
  Code code = Code::kOk;
  {
    std::lock_guard lock(state_->mutex);
    auto& p = state_->ops[static_cast<int>(op)];
    ++p.calls;
    if (p.has_rule) {
      const FaultRule& r = p.rule;
      latency = r.latency;
      const std::uint64_t index = p.since_rule++;
      if (index >= r.fail_after && p.failed_under_rule < r.fail_count) fail = true;
      if (!fail && r.fail_rate > 0.0) {
        fail = std::uniform_real_distribution<double>(0.0, 1.0)(p.rng) < r.fail_rate;
      }
      if (fail) {
        ++p.failed_under_rule;
        ++p.injected;
        code = r.code;
      }
    }
  }
  if (latency.count() > 0) std::this_thread::sleep_for(latency);
  if (!fail) return Status::ok();
  return Status(code, "injected fault in " + std::string(fault_op_name(op)) + " (fault backend)");
}

Status FaultBackend::create_chunk(std::size_t bytes, ChunkHandle* out) {
  PF_TRY(before(FaultOp::kCreateChunk));
  return inner_->create_chunk(bytes, out);
}
Status FaultBackend::export_chunk(const ChunkHandle& chunk, int* fd_out) {
  PF_TRY(before(FaultOp::kExportChunk));
  return inner_->export_chunk(chunk, fd_out);
}
Status FaultBackend::import_chunk(int fd, std::size_t bytes, ChunkHandle* out) {
  PF_TRY(before(FaultOp::kImportChunk));
  return inner_->import_chunk(fd, bytes, out);
}
Status FaultBackend::release_chunk(const ChunkHandle& chunk) {
  PF_TRY(before(FaultOp::kReleaseChunk));
  return inner_->release_chunk(chunk);
}
Status FaultBackend::reserve(std::size_t bytes, void** va_out) {
  PF_TRY(before(FaultOp::kReserve));
  return inner_->reserve(bytes, va_out);
}
Status FaultBackend::free_reservation(void* va, std::size_t bytes) {
  PF_TRY(before(FaultOp::kFreeReservation));
  return inner_->free_reservation(va, bytes);
}
Status FaultBackend::map(void* va, std::size_t bytes, const ChunkHandle& chunk,
                         std::size_t chunk_offset) {
  PF_TRY(before(FaultOp::kMap));
  return inner_->map(va, bytes, chunk, chunk_offset);
}
Status FaultBackend::set_access(void* va, std::size_t bytes, Access access) {
  PF_TRY(before(FaultOp::kSetAccess));
  return inner_->set_access(va, bytes, access);
}
Status FaultBackend::protect(void* va, std::size_t bytes, Access access) {
  PF_TRY(before(FaultOp::kSetAccess));
  return inner_->protect(va, bytes, access);
}
Status FaultBackend::unmap(void* va, std::size_t bytes) {
  PF_TRY(before(FaultOp::kUnmap));
  return inner_->unmap(va, bytes);
}
Status FaultBackend::copy_to_mapped(void* dst, const void* src, std::size_t bytes) {
  PF_TRY(before(FaultOp::kCopy));
  return inner_->copy_to_mapped(dst, src, bytes);
}
Status FaultBackend::copy_from_mapped(void* dst, const void* src, std::size_t bytes) {
  PF_TRY(before(FaultOp::kCopy));
  return inner_->copy_from_mapped(dst, src, bytes);
}

}  // namespace pf::vmm
