#include "shims/client/pool_mapping.h"

#include <algorithm>
#include <string>

#include "vmm/registry.h"

namespace pf::client {

PoolMapping::PoolMapping(std::unique_ptr<vmm::Backend> backend, void* base, std::size_t reserved,
                         std::size_t chunk_bytes, std::size_t page_bytes)
    : backend_(std::move(backend)),
      base_(base),
      reserved_(reserved),
      chunk_bytes_(chunk_bytes),
      page_bytes_(page_bytes),
      slots_(reserved / chunk_bytes) {}

Result<std::unique_ptr<PoolMapping>> PoolMapping::create(std::string_view device,
                                                         std::size_t capacity_bytes,
                                                         std::size_t chunk_bytes,
                                                         std::size_t page_bytes) {
  if (chunk_bytes == 0 || capacity_bytes == 0) {
    return PF_ERROR(Code::kProtocol, "daemon announced a pool of " +
                                         std::to_string(capacity_bytes) + " bytes in chunks of " +
                                         std::to_string(chunk_bytes) + " bytes");
  }
  PF_ASSIGN_OR_RETURN(vmm::BackendChoice choice, vmm::open_backend(device));
  const std::size_t granularity = choice.backend->granularity();
  if (chunk_bytes % granularity != 0) {
    return PF_ERROR(Code::kProtocol, "daemon's chunk size " + std::to_string(chunk_bytes) +
                                         " is not a multiple of this backend's granularity " +
                                         std::to_string(granularity));
  }
  const std::size_t chunks = (capacity_bytes + chunk_bytes - 1) / chunk_bytes;
  if (chunks > (std::size_t{1} << 24)) {
    return PF_ERROR(Code::kProtocol, "daemon announced an implausible capacity of " +
                                         std::to_string(capacity_bytes) + " bytes");
  }
  const std::size_t reserved = chunks * chunk_bytes;
  void* base = nullptr;
  PF_TRY(choice.backend->reserve(reserved, &base));
  return std::unique_ptr<PoolMapping>(
      new PoolMapping(std::move(choice.backend), base, reserved, chunk_bytes, page_bytes));
}

PoolMapping::~PoolMapping() {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].mapped) unmap_index(i).ignore();  // nothing to do about a failure here
  }
  backend_->free_reservation(base_, reserved_).ignore();
}

std::size_t PoolMapping::chunk_span() const {
  for (std::size_t i = slots_.size(); i > 0; --i) {
    if (slots_[i - 1].mapped) return i;
  }
  return 0;
}

Status PoolMapping::unmap_index(std::size_t index) {
  PF_TRY(backend_->unmap(base() + index * chunk_bytes_, chunk_bytes_));
  slots_[index] = Slot{};
  --mapped_count_;
  return Status::ok();
}

Status PoolMapping::apply(std::uint32_t first, std::span<const UniqueFd> fds,
                          std::span<const std::uint64_t> serials,
                          std::span<const std::uint32_t> writable) {
  if (fds.size() != serials.size()) {
    return PF_ERROR(Code::kProtocol, "attach reply carries " + std::to_string(fds.size()) +
                                         " fds but " + std::to_string(serials.size()) + " serials");
  }
  if (std::size_t{first} + fds.size() > slots_.size()) {
    return PF_ERROR(Code::kProtocol,
                    "attach reply names chunks up to " + std::to_string(first + fds.size()) +
                        " but the pool's capacity holds " + std::to_string(slots_.size()));
  }
  // Map every changed chunk inaccessible first, then open access over runs of adjacent
  // new mappings of the same kind (one set_access per run: one cuMemSetAccess on CUDA):
  // read-only for guarded chunks, read-write for the others.
  std::size_t run_start = 0;
  std::size_t run_len = 0;
  bool run_guarded = false;
  bool opened_guarded = false;
  auto flush_run = [&]() -> Status {
    if (run_len == 0) return Status::ok();
    const Status s =
        backend_->set_access(base() + run_start * chunk_bytes_, run_len * chunk_bytes_,
                             run_guarded ? vmm::Access::kRead : vmm::Access::kReadWrite);
    if (!s.is_ok()) {
      for (std::size_t i = run_start; i < run_start + run_len; ++i) unmap_index(i).ignore();
    } else if (run_guarded) {
      opened_guarded = true;
    }
    run_len = 0;
    return s;
  };
  for (std::size_t k = 0; k < fds.size(); ++k) {
    const std::size_t index = first + k;
    Slot& slot = slots_[index];
    if (slot.mapped && slot.serial == serials[k]) {
      PF_TRY(flush_run());
      continue;
    }
    if (slot.mapped) {
      const Status s = unmap_index(index);
      if (!s.is_ok()) {
        flush_run().ignore();
        return s;
      }
    }
    vmm::ChunkHandle handle;
    bool guard = false;
    Status s = backend_->import_chunk(fds[k].get(), chunk_bytes_, &handle);
    if (s.is_ok()) {
      const std::size_t unit = backend_->protect_granularity(handle);
      guard = page_bytes_ != 0 && unit != 0 && page_bytes_ % unit == 0;
      s = backend_->map(base() + index * chunk_bytes_, chunk_bytes_, handle, 0);
      // The mapping holds the memory from here on; the handle is not needed.
      backend_->release_chunk(handle).ignore();
    }
    if (!s.is_ok()) {
      flush_run().ignore();
      return s;
    }
    slot.mapped = true;
    slot.guarded = guard;
    slot.serial = serials[k];
    ++mapped_count_;
    if (run_len != 0 && guard != run_guarded) {
      if (Status f = flush_run(); !f.is_ok()) {
        unmap_index(index).ignore();
        return f;
      }
    }
    if (run_len == 0) {
      run_start = index;
      run_guarded = guard;
    }
    ++run_len;
  }
  PF_TRY(flush_run());
  // Pages this session may write that lie in newly guarded chunks (rare: a chunk is new
  // before the daemon hands out its pages) are opened again.
  return opened_guarded ? set_writable(writable, true) : Status::ok();
}

Status PoolMapping::unguard(std::size_t index) {
  PF_TRY(
      backend_->set_access(base() + index * chunk_bytes_, chunk_bytes_, vmm::Access::kReadWrite));
  slots_[index].guarded = false;
  return Status::ok();
}

Status PoolMapping::protect_pages(std::uint32_t first, std::uint32_t count, vmm::Access access) {
  const std::size_t begin = std::size_t{first} * page_bytes_;
  const std::size_t end = std::min(begin + std::size_t{count} * page_bytes_, reserved_);
  if (begin >= end) return Status::ok();
  for (std::size_t i = begin / chunk_bytes_; i <= (end - 1) / chunk_bytes_; ++i) {
    if (!slots_[i].mapped || !slots_[i].guarded) continue;
    const std::size_t lo = std::max(begin, i * chunk_bytes_);
    const std::size_t hi = std::min(end, (i + 1) * chunk_bytes_);
    if (!backend_->protect(base() + lo, hi - lo, access).is_ok()) {
      // Out of mapping entries (vm.max_map_count) or refused: stop guarding this chunk,
      // so that every page the session may write stays writable.
      PF_TRY(unguard(i));
    }
  }
  return Status::ok();
}

Status PoolMapping::set_writable(std::span<const std::uint32_t> pages, bool writable) {
  if (page_bytes_ == 0) return Status::ok();
  const vmm::Access access = writable ? vmm::Access::kReadWrite : vmm::Access::kRead;
  Status result = Status::ok();
  // Coalesce runs of consecutive page ids: one call (and at most one mapping split) each.
  for (std::size_t k = 0; k < pages.size();) {
    std::size_t n = 1;
    while (k + n < pages.size() && pages[k + n] == pages[k] + n) ++n;
    if (Status s = protect_pages(pages[k], static_cast<std::uint32_t>(n), access);
        !s.is_ok() && result.is_ok()) {
      result = s;
    }
    k += n;
  }
  return result;
}

bool PoolMapping::guarded(std::uint32_t page) const {
  const std::size_t begin = std::size_t{page} * page_bytes_;
  if (page_bytes_ == 0 || begin >= reserved_ || page_bytes_ > reserved_ - begin) return false;
  for (std::size_t i = begin / chunk_bytes_; i <= (begin + page_bytes_ - 1) / chunk_bytes_; ++i) {
    if (!slots_[i].mapped || !slots_[i].guarded) return false;
  }
  return true;
}

Status PoolMapping::truncate_to(std::uint32_t total_chunks) {
  for (std::size_t i = total_chunks; i < slots_.size(); ++i) {
    if (slots_[i].mapped) PF_TRY(unmap_index(i));
  }
  return Status::ok();
}

bool PoolMapping::covers(std::size_t offset, std::size_t bytes) const {
  if (bytes == 0 || offset >= reserved_ || bytes > reserved_ - offset) return false;
  const std::size_t first = offset / chunk_bytes_;
  const std::size_t last = (offset + bytes - 1) / chunk_bytes_;
  for (std::size_t i = first; i <= last; ++i) {
    if (!slots_[i].mapped) return false;
  }
  return true;
}

}  // namespace pf::client
