#include "vmm/mapped_range.h"

#include <string>

namespace pf::vmm {

Result<std::unique_ptr<MappedRange>> MappedRange::create(Backend& backend,
                                                         std::size_t capacity_bytes) {
  void* base = nullptr;
  PF_TRY(backend.reserve(capacity_bytes, &base));
  return std::unique_ptr<MappedRange>(new MappedRange(backend, base, capacity_bytes));
}

MappedRange::~MappedRange() {
  // Nothing to report to from a destructor: on a failing unmap, leave the rest mapped (and
  // the reservation held) rather than loop; the backend's stats show the leak.
  while (!chunks_.empty()) {
    if (!shrink().is_ok()) return;
  }
  backend_.free_reservation(base_, capacity_).ignore();
}

Status MappedRange::grow(std::size_t chunk_bytes) {
  ChunkHandle chunk;
  PF_TRY(backend_.create_chunk(chunk_bytes, &chunk));
  PF_TRY(map_at_end(chunk));
  return Status::ok();
}

Status MappedRange::grow_imported(int fd, std::size_t chunk_bytes) {
  ChunkHandle chunk;
  PF_TRY(backend_.import_chunk(fd, chunk_bytes, &chunk));
  PF_TRY(map_at_end(chunk));
  return Status::ok();
}

Status MappedRange::map_at_end(const ChunkHandle& chunk) {
  if (chunk.bytes > capacity_ - mapped_) {
    backend_.release_chunk(chunk).ignore();
    return PF_ERROR(Code::kOutOfMemory, "reservation full: " + std::to_string(mapped_) + " of " +
                                            std::to_string(capacity_) +
                                            " bytes mapped, chunk needs " +
                                            std::to_string(chunk.bytes));
  }
  void* at = static_cast<char*>(base_) + mapped_;
  if (Status s = backend_.map(at, chunk.bytes, chunk, 0); !s.is_ok()) {
    backend_.release_chunk(chunk).ignore();
    return s.add_frame(__FILE__, __LINE__);
  }
  // Access on the new mapping only: the chunks mapped before keep theirs, and setting it
  // again over the whole range would make every growth cost O(mapped) (one synchronizing
  // cuMemSetAccess over all chunks) and the growth of a pool O(n^2).
  if (Status s = backend_.set_access(at, chunk.bytes, Access::kReadWrite); !s.is_ok()) {
    backend_.unmap(at, chunk.bytes).ignore();
    backend_.release_chunk(chunk).ignore();
    return s.add_frame(__FILE__, __LINE__);
  }
  chunks_.push_back(chunk);
  mapped_ += chunk.bytes;
  return Status::ok();
}

Status MappedRange::shrink() {
  if (chunks_.empty()) return PF_ERROR(Code::kInvalidArgument, "shrink: no chunk is mapped");
  const ChunkHandle last = chunks_.back();
  void* at = static_cast<char*>(base_) + (mapped_ - last.bytes);
  PF_TRY(backend_.unmap(at, last.bytes));
  chunks_.pop_back();
  mapped_ -= last.bytes;
  PF_TRY(backend_.release_chunk(last));
  return Status::ok();
}

Result<UniqueFd> MappedRange::export_chunk(std::size_t index) const {
  if (index >= chunks_.size()) {
    return PF_ERROR(Code::kInvalidArgument, "export_chunk: no chunk " + std::to_string(index) +
                                                " (have " + std::to_string(chunks_.size()) + ")");
  }
  int fd = -1;
  PF_TRY(backend_.export_chunk(chunks_[index], &fd));
  return UniqueFd(fd);
}

}  // namespace pf::vmm
