#include "runtime/page_pool.h"

#include <algorithm>
#include <cassert>
#include <cstdio>

namespace pf::rt {

std::string_view page_state_name(PageState state) {
  switch (state) {
    case PageState::kFree:
      return "free";
    case PageState::kExclusive:
      return "exclusive";
    case PageState::kSealed:
      return "sealed";
    case PageState::kQuarantined:
      return "quarantined";
  }
  return "?";
}

Result<std::unique_ptr<PagePool>> PagePool::create(vmm::Backend& backend, const Geometry& geometry,
                                                   PoolOptions options) {
  PF_TRY(geometry.validate());
  const std::size_t gran = backend.granularity();
  const std::size_t page_bytes = geometry.page_bytes();
  std::size_t chunk = options.chunk_bytes;
  if (chunk == 0) chunk = std::max<std::size_t>(std::size_t{32} << 20, page_bytes);
  chunk = (chunk + gran - 1) / gran * gran;
  if (options.chunk_bytes != 0 && options.chunk_bytes % gran != 0) {
    return PF_ERROR(Code::kInvalidArgument, "chunk_bytes " + std::to_string(options.chunk_bytes) +
                                                " is not a multiple of the backend granularity " +
                                                std::to_string(gran));
  }
  const std::size_t capacity_pages = options.capacity_bytes / page_bytes;
  if (capacity_pages == 0) {
    return PF_ERROR(Code::kInvalidArgument, "capacity " + std::to_string(options.capacity_bytes) +
                                                " bytes holds no page of " +
                                                std::to_string(page_bytes) + " bytes");
  }
  if (capacity_pages > (std::size_t{1} << 31)) {
    return PF_ERROR(Code::kInvalidArgument, "capacity exceeds 2^31 pages");
  }
  const std::size_t reserve = (options.capacity_bytes + chunk - 1) / chunk * chunk;
  PF_ASSIGN_OR_RETURN(auto range, vmm::MappedRange::create(backend, reserve));
  return std::unique_ptr<PagePool>(new PagePool(geometry, std::move(range), chunk, capacity_pages));
}

PagePool::PagePool(const Geometry& g, std::unique_ptr<vmm::MappedRange> range,
                   std::size_t chunk_bytes, std::size_t capacity_pages)
    : geometry_(g),
      page_bytes_(g.page_bytes()),
      range_(std::move(range)),
      chunk_bytes_(chunk_bytes),
      capacity_pages_(capacity_pages) {}

PagePool::~PagePool() = default;  // the range unmaps and releases every chunk

std::size_t PagePool::pages_in(std::size_t bytes) const {
  return std::min(bytes / page_bytes_, capacity_pages_);
}

void PagePool::resize_to_mapped() {
  const std::size_t n = pages_in(range_->mapped_bytes());
  const std::size_t old = metas_.size();
  if (n > old) {
    metas_.resize(n);
    for (std::size_t i = old; i < n; ++i) free_.insert(free_.end(), static_cast<PageId>(i));
  } else {
    for (std::size_t i = n; i < old; ++i) free_.erase(static_cast<PageId>(i));
    metas_.resize(n);
  }
}

Status PagePool::grow_for(std::size_t pages) {
  if (pages == 0) return Status::ok();
  if (pages > growable_pages()) {
    return PF_ERROR(Code::kOutOfMemory, "out of pages: need " + std::to_string(pages) +
                                            " more, the pool can grow by " +
                                            std::to_string(growable_pages()) + " (capacity " +
                                            std::to_string(capacity_pages_) + " pages)");
  }
  const std::size_t target = metas_.size() + pages;
  const std::size_t chunks_before = range_->chunk_count();
  while (pages_in(range_->mapped_bytes()) < target) {
    if (Status s = range_->grow(chunk_bytes_); !s.is_ok()) {
      while (range_->chunk_count() > chunks_before) range_->shrink().ignore();
      return s.add_frame(__FILE__, __LINE__);
    }
  }
  if (range_->chunk_count() > chunks_before) ++epoch_;
  while (chunk_serials_.size() < range_->chunk_count()) chunk_serials_.push_back(next_serial_++);
  resize_to_mapped();
  return Status::ok();
}

Result<std::vector<PageId>> PagePool::allocate(std::size_t n) {
  if (n > free_.size()) {
    return PF_ERROR(Code::kOutOfMemory, "out of pages: need " + std::to_string(n) + ", " +
                                            std::to_string(free_.size()) + " free");
  }
  std::vector<PageId> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const PageId id = *free_.begin();
    free_.erase(free_.begin());
    PageMeta& m = metas_[id];
    m = PageMeta{};
    m.state = PageState::kExclusive;
    m.refs = 1;
    out.push_back(id);
  }
  return out;
}

std::size_t PagePool::trim() {
  std::size_t released = 0;
  while (range_->chunk_count() > 0) {
    const std::size_t last = range_->chunk_count() - 1;
    const std::size_t start = range_->mapped_bytes() - range_->chunk_bytes(last);
    // Every page that overlaps the last chunk must be free.
    bool empty = true;
    for (std::size_t id = start / page_bytes_; id < metas_.size(); ++id) {
      if (metas_[id].state != PageState::kFree) {
        empty = false;
        break;
      }
    }
    if (!empty) break;
    if (!range_->shrink().is_ok()) break;
    ++released;
    chunk_serials_.pop_back();
    resize_to_mapped();
  }
  if (released > 0) ++epoch_;
  return released;
}

void PagePool::note_violation(std::string what) {
  if (integrity_error_.empty()) integrity_error_ = std::move(what);
  std::fprintf(stderr, "processfork runtime integrity violation: %s\n", integrity_error_.c_str());
  assert(false && "page reference count violation");
}

void PagePool::ref(PageId id) {
  if (id >= metas_.size() || metas_[id].refs == 0) {
    note_violation("ref of free, quarantined or unmapped page " + std::to_string(id));
    return;
  }
  ++metas_[id].refs;
}

void PagePool::unref(PageId id) {
  if (id >= metas_.size() || metas_[id].refs == 0) {
    note_violation("reference count underflow on page " + std::to_string(id));
    return;
  }
  PageMeta& m = metas_[id];
  if (--m.refs == 0) {
    const bool retire = m.quarantined;
    m = PageMeta{};
    if (retire) {
      m.state = PageState::kQuarantined;  // never handed out again
      m.quarantined = true;
    } else {
      free_.insert(id);
    }
  }
}

bool PagePool::quarantine(PageId id) {
  PageMeta& m = metas_[id];
  if (m.state != PageState::kSealed || m.quarantined) return false;
  m.quarantined = true;
  ++quarantined_;
  return true;
}

void PagePool::seal(PageId id) {
  PageMeta& m = metas_[id];
  if (m.state != PageState::kExclusive) return;
  m.state = PageState::kSealed;
  m.seal_serial = ++seal_clock_;
}

}  // namespace pf::rt
