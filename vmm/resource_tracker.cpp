#include "vmm/resource_tracker.h"

#include <cstdio>
#include <string>

namespace pf::vmm {
namespace {

std::string hex(std::uintptr_t a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%zx", static_cast<std::size_t>(a));
  return buf;
}

}  // namespace

Status ResourceTracker::check_size(std::size_t bytes, const char* what) const {
  if (bytes == 0 || bytes % granularity_ != 0) {
    return PF_ERROR(Code::kInvalidArgument,
                    std::string(what) + " of " + std::to_string(bytes) +
                        " bytes is not a non-zero multiple of the granularity (" +
                        std::to_string(granularity_) + ")");
  }
  return Status::ok();
}

Status ResourceTracker::check_chunk(const ChunkHandle& chunk) const {
  auto it = chunks_.find(chunk.value);
  if (it == chunks_.end()) {
    return PF_ERROR(Code::kNotFound,
                    "chunk handle " + std::to_string(chunk.value) + " is not live in this backend");
  }
  return Status::ok();
}

void ResourceTracker::add_chunk(const ChunkHandle& chunk) {
  Chunk& c = chunks_[chunk.value];
  if (c.refs == 0) c.bytes = chunk.bytes;
  ++c.refs;
}

std::size_t ResourceTracker::remove_chunk(const ChunkHandle& chunk) {
  auto it = chunks_.find(chunk.value);
  if (it == chunks_.end()) return 0;
  if (--it->second.refs != 0) return it->second.refs;
  chunks_.erase(it);
  return 0;
}

std::size_t ResourceTracker::chunk_bytes(std::uint64_t value) const {
  auto it = chunks_.find(value);
  return it == chunks_.end() ? 0 : it->second.bytes;
}

std::size_t ResourceTracker::chunk_refs(std::uint64_t value) const {
  auto it = chunks_.find(value);
  return it == chunks_.end() ? 0 : it->second.refs;
}

void ResourceTracker::add_reservation(void* va, std::size_t bytes) {
  reservations_[reinterpret_cast<Addr>(va)] = bytes;
}

Status ResourceTracker::check_free_reservation(void* va, std::size_t bytes) const {
  const Addr start = reinterpret_cast<Addr>(va);
  auto it = reservations_.find(start);
  if (it == reservations_.end() || it->second != bytes) {
    return PF_ERROR(Code::kInvalidArgument, "no reservation of " + std::to_string(bytes) +
                                                " bytes starts at " + hex(start));
  }
  auto m = mappings_.lower_bound(start);
  if (m != mappings_.end() && m->first < start + bytes) {
    return PF_ERROR(Code::kInvalidArgument,
                    "reservation at " + hex(start) + " still holds a mapping at " + hex(m->first));
  }
  return Status::ok();
}

void ResourceTracker::remove_reservation(void* va) {
  reservations_.erase(reinterpret_cast<Addr>(va));
}

Status ResourceTracker::check_map(void* va, std::size_t bytes, const ChunkHandle& chunk,
                                  std::size_t chunk_offset) const {
  PF_TRY(check_size(bytes, "mapping"));
  const Addr start = reinterpret_cast<Addr>(va);
  if (start % granularity_ != 0 || chunk_offset % granularity_ != 0) {
    return PF_ERROR(Code::kInvalidArgument, "mapping address " + hex(start) + " or chunk offset " +
                                                std::to_string(chunk_offset) +
                                                " is not aligned to the granularity");
  }
  auto c = chunks_.find(chunk.value);
  if (c == chunks_.end()) {
    return PF_ERROR(Code::kNotFound,
                    "chunk handle " + std::to_string(chunk.value) + " is not live in this backend");
  }
  const std::size_t chunk_size = c->second.bytes;
  if (chunk_offset > chunk_size || bytes > chunk_size - chunk_offset) {
    return PF_ERROR(Code::kInvalidArgument, "mapping [" + std::to_string(chunk_offset) + ", +" +
                                                std::to_string(bytes) + ") exceeds the chunk's " +
                                                std::to_string(chunk_size) + " bytes");
  }
  // Inside one reservation: the last reservation starting at or before `start`.
  auto r = reservations_.upper_bound(start);
  if (r == reservations_.begin()) {
    return PF_ERROR(Code::kInvalidArgument, hex(start) + " is not inside a reservation");
  }
  --r;
  if (start + bytes > r->first + r->second || start < r->first) {
    return PF_ERROR(Code::kInvalidArgument,
                    "mapping at " + hex(start) + " of " + std::to_string(bytes) +
                        " bytes does not fit inside the reservation at " + hex(r->first));
  }
  // No overlap with a live mapping.
  auto m = mappings_.lower_bound(start);
  if (m != mappings_.end() && m->first < start + bytes) {
    return PF_ERROR(Code::kAlreadyExists,
                    "mapping at " + hex(start) + " overlaps " + hex(m->first));
  }
  if (m != mappings_.begin()) {
    --m;
    if (m->first + m->second > start) {
      return PF_ERROR(Code::kAlreadyExists,
                      "mapping at " + hex(start) + " overlaps " + hex(m->first));
    }
  }
  return Status::ok();
}

void ResourceTracker::add_mapping(void* va, std::size_t bytes) {
  mappings_[reinterpret_cast<Addr>(va)] = bytes;
}

Status ResourceTracker::check_mapped_range(void* va, std::size_t bytes, const char* what) const {
  PF_TRY(check_size(bytes, what));
  Addr cursor = reinterpret_cast<Addr>(va);
  const Addr end = cursor + bytes;
  while (cursor < end) {
    auto m = mappings_.find(cursor);
    if (m == mappings_.end()) {
      return PF_ERROR(Code::kInvalidArgument, std::string(what) + ": no mapping starts at " +
                                                  hex(cursor) + " (range must be whole mappings)");
    }
    cursor += m->second;
  }
  if (cursor != end) {
    return PF_ERROR(Code::kInvalidArgument,
                    std::string(what) + ": range ends inside a mapping (must be whole mappings)");
  }
  return Status::ok();
}

Status ResourceTracker::check_within_mappings(void* va, std::size_t bytes, const char* what) const {
  if (bytes == 0) return PF_ERROR(Code::kInvalidArgument, std::string(what) + ": empty range");
  Addr cursor = reinterpret_cast<Addr>(va);
  const Addr end = cursor + bytes;
  if (end < cursor) return PF_ERROR(Code::kInvalidArgument, std::string(what) + ": range wraps");
  while (cursor < end) {
    auto m = mappings_.upper_bound(cursor);
    if (m == mappings_.begin() || (--m, cursor >= m->first + m->second)) {
      return PF_ERROR(Code::kInvalidArgument,
                      std::string(what) + ": " + hex(cursor) + " is not inside a live mapping");
    }
    cursor = m->first + m->second;
  }
  return Status::ok();
}

void ResourceTracker::remove_mappings(void* va, std::size_t bytes) {
  Addr cursor = reinterpret_cast<Addr>(va);
  const Addr end = cursor + bytes;
  while (cursor < end) {
    auto m = mappings_.find(cursor);
    if (m == mappings_.end()) return;
    cursor += m->second;
    mappings_.erase(m);
  }
}

BackendStats ResourceTracker::stats() const {
  BackendStats s;
  for (const auto& [value, c] : chunks_) s.live_chunks += c.refs;
  s.live_reservations = reservations_.size();
  s.live_mappings = mappings_.size();
  for (const auto& [start, bytes] : mappings_) s.mapped_bytes += bytes;
  return s;
}

}  // namespace pf::vmm
