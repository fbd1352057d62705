// Host backend. DESIGN:
//  - A chunk is a memfd sized once and sealed against shrinking and growing
//    (F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL), so a peer holding the fd can never make our
//    mapping fault (SIGBUS) by truncating it. import_chunk refuses fds without those seals.
//  - A reservation is an anonymous PROT_NONE MAP_NORESERVE mapping. map() replaces a part
//    of it with MAP_SHARED|MAP_FIXED of the memfd (PROT_NONE until set_access); unmap()
//    puts the PROT_NONE placeholder back, so the range stays reserved and nothing else
//    can be mapped there by the process in the meantime.
//  - The ChunkHandle value is the memfd itself, owned by the handle.
#include "vmm/host_backend.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "vmm/resource_tracker.h"

namespace pf::vmm {
namespace {

constexpr unsigned kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW;

// Free huge pages of the default size, from /proc/meminfo; 0 when unknown.
std::size_t free_huge_pages() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::size_t value = 0;
  while (meminfo >> key >> value) {
    if (key == "HugePages_Free:") return value;
    meminfo.ignore(256, '\n');
  }
  return 0;
}

int prot_for(Access access) {
  switch (access) {
    case Access::kNone:
      return PROT_NONE;
    case Access::kRead:
      return PROT_READ;
    case Access::kReadWrite:
      return PROT_READ | PROT_WRITE;
  }
  return PROT_NONE;
}

std::size_t os_page_bytes() {
  static const std::size_t bytes = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return bytes;
}

int handle_fd(const ChunkHandle& chunk) {
  return static_cast<int>(chunk.value);
}

class HostBackend final : public Backend {
 public:
  explicit HostBackend(HostBackendOptions options)
      : options_(options), tracker_(kHostGranularity) {}

  std::string_view name() const override { return "host"; }
  std::string device() const override { return "host"; }
  MemoryKind memory_kind() const override { return MemoryKind::kHost; }
  std::size_t granularity() const override { return kHostGranularity; }

  Status create_chunk(std::size_t bytes, ChunkHandle* out) override {
    if (out == nullptr) return PF_ERROR(Code::kInvalidArgument, "create_chunk: out is null");
    PF_TRY(tracker_.check_size(bytes, "chunk"));
    int fd = -1;
    if (options_.huge_pages == HugePages::kAuto && free_huge_pages() * kHostGranularity >= bytes) {
      fd = memfd_create("processfork-chunk", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
      if (fd >= 0 && ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
        close(fd);  // the huge page pool ran dry between the check and now: use plain pages
        fd = -1;
      }
    }
    if (fd < 0) {
      fd = memfd_create("processfork-chunk", MFD_CLOEXEC | MFD_ALLOW_SEALING);
      if (fd < 0) return PF_ERRNO("memfd_create for a new chunk");
      if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
        const int err = errno;
        close(fd);
        return PF_ERRNO_OF("ftruncate of a new chunk", err);
      }
    }
    if (fcntl(fd, F_ADD_SEALS, kRequiredSeals | F_SEAL_SEAL) != 0) {
      const int err = errno;
      close(fd);
      return PF_ERRNO_OF("sealing a new chunk", err);
    }
    *out = ChunkHandle{static_cast<std::uint64_t>(fd), bytes};
    auto lock = tracker_.lock();
    tracker_.add_chunk(*out);
    return Status::ok();
  }

  Status export_chunk(const ChunkHandle& chunk, int* fd_out) override {
    if (fd_out == nullptr) return PF_ERROR(Code::kInvalidArgument, "export_chunk: fd_out is null");
    auto lock = tracker_.lock();
    PF_TRY(tracker_.check_chunk(chunk));
    const int fd = fcntl(handle_fd(chunk), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return PF_ERRNO("exporting a chunk (dup)");
    *fd_out = fd;
    return Status::ok();
  }

  Status import_chunk(int fd, std::size_t bytes, ChunkHandle* out) override {
    if (out == nullptr) return PF_ERROR(Code::kInvalidArgument, "import_chunk: out is null");
    PF_TRY(tracker_.check_size(bytes, "imported chunk"));
    struct stat st {};
    if (fd < 0 || fstat(fd, &st) != 0) {
      return PF_ERROR(Code::kInvalidArgument,
                      "import_chunk: fd " + std::to_string(fd) + " is not an open file descriptor");
    }
    if (!S_ISREG(st.st_mode)) {
      return PF_ERROR(Code::kInvalidArgument, "import_chunk: fd is not a memory file");
    }
    if (static_cast<std::size_t>(st.st_size) != bytes) {
      return PF_ERROR(Code::kInvalidArgument, "import_chunk: fd holds " +
                                                  std::to_string(st.st_size) + " bytes, expected " +
                                                  std::to_string(bytes));
    }
    const int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (static_cast<unsigned>(seals) & kRequiredSeals) != kRequiredSeals) {
      return PF_ERROR(Code::kInvalidArgument,
                      "import_chunk: fd is not a sealed ProcessFork chunk (size could change)");
    }
    const int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0) return PF_ERRNO("importing a chunk (dup)");
    *out = ChunkHandle{static_cast<std::uint64_t>(own), bytes};
    auto lock = tracker_.lock();
    tracker_.add_chunk(*out);
    return Status::ok();
  }

  Status release_chunk(const ChunkHandle& chunk) override {
    auto lock = tracker_.lock();
    PF_TRY(tracker_.check_chunk(chunk));
    // The fd is the handle and every create/import makes its own, so this was its only
    // reference. Mappings keep the memory alive on their own.
    if (tracker_.remove_chunk(chunk) == 0) close(handle_fd(chunk));
    return Status::ok();
  }

  Status reserve(std::size_t bytes, void** va_out) override {
    if (va_out == nullptr) return PF_ERROR(Code::kInvalidArgument, "reserve: va_out is null");
    PF_TRY(tracker_.check_size(bytes, "reservation"));
    // Over-reserve by one granule and trim, so the start is granularity-aligned.
    const std::size_t span = bytes + kHostGranularity;
    void* raw = mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
      return PF_ERRNO("reserving " + std::to_string(bytes) + " bytes of address space");
    }
    const auto start = reinterpret_cast<std::uintptr_t>(raw);
    const auto aligned = (start + kHostGranularity - 1) & ~(kHostGranularity - 1);
    if (aligned > start) munmap(raw, aligned - start);
    const std::uintptr_t tail = aligned + bytes;
    if (start + span > tail) munmap(reinterpret_cast<void*>(tail), start + span - tail);
    *va_out = reinterpret_cast<void*>(aligned);
    auto lock = tracker_.lock();
    tracker_.add_reservation(*va_out, bytes);
    return Status::ok();
  }

  Status free_reservation(void* va, std::size_t bytes) override {
    auto lock = tracker_.lock();
    PF_TRY(tracker_.check_free_reservation(va, bytes));
    if (munmap(va, bytes) != 0) {
      return PF_ERRNO("freeing a reservation");
    }
    tracker_.remove_reservation(va);
    return Status::ok();
  }

  Status map(void* va, std::size_t bytes, const ChunkHandle& chunk,
             std::size_t chunk_offset) override {
    auto lock = tracker_.lock();
    PF_TRY(tracker_.check_map(va, bytes, chunk, chunk_offset));
    void* got = mmap(va, bytes, PROT_NONE, MAP_SHARED | MAP_FIXED, handle_fd(chunk),
                     static_cast<off_t>(chunk_offset));
    if (got == MAP_FAILED) {
      const int err = errno;
      restore_placeholder(va, bytes);  // MAP_FIXED may have replaced part of the range
      return PF_ERRNO_OF("mapping a chunk", err);
    }
    // Transparent huge pages for plain memfds where shmem THP is set to "advise".
    madvise(va, bytes, MADV_HUGEPAGE);
    tracker_.add_mapping(va, bytes);
    return Status::ok();
  }

  Status set_access(void* va, std::size_t bytes, Access access) override {
    auto lock = tracker_.lock();
    PF_TRY(tracker_.check_mapped_range(va, bytes, "set_access"));
    if (mprotect(va, bytes, prot_for(access)) != 0) {
      return PF_ERRNO("setting access on a mapped range");
    }
    return Status::ok();
  }

  std::size_t protect_granularity(const ChunkHandle& chunk) const override {
    // A hugetlbfs memfd reports its huge page size as st_blksize: mprotect works in those.
    struct stat st {};
    if (fstat(handle_fd(chunk), &st) != 0) return 0;
    const std::size_t unit = std::max(os_page_bytes(), static_cast<std::size_t>(st.st_blksize));
    if ((unit & (unit - 1)) != 0 || kHostGranularity % unit != 0) return 0;
    return unit;
  }

  Status protect(void* va, std::size_t bytes, Access access) override {
    auto lock = tracker_.lock();
    PF_TRY(tracker_.check_within_mappings(va, bytes, "protect"));
    const std::size_t page = os_page_bytes();
    if (reinterpret_cast<std::uintptr_t>(va) % page != 0 || bytes % page != 0) {
      return PF_ERROR(Code::kInvalidArgument, "protect: range is not aligned to the " +
                                                  std::to_string(page) + "-byte OS page");
    }
    if (mprotect(va, bytes, prot_for(access)) != 0) {
      const int err = errno;
      if (err == ENOMEM) {
        return PF_ERROR(Code::kOutOfMemory,
                        "protect: mprotect needs more mapping entries than the process may "
                        "have (vm.max_map_count)");
      }
      return PF_ERRNO_OF("protect: mprotect of part of a mapping", err);
    }
    return Status::ok();
  }

  Status unmap(void* va, std::size_t bytes) override {
    auto lock = tracker_.lock();
    PF_TRY(tracker_.check_mapped_range(va, bytes, "unmap"));
    if (!restore_placeholder(va, bytes)) {
      return PF_ERRNO("unmapping a range");
    }
    tracker_.remove_mappings(va, bytes);
    return Status::ok();
  }

  Status copy_to_mapped(void* dst, const void* src, std::size_t bytes) override {
    if (bytes != 0 && (dst == nullptr || src == nullptr)) {
      return PF_ERROR(Code::kInvalidArgument, "copy_to_mapped: null pointer");
    }
    if (bytes != 0) std::memcpy(dst, src, bytes);
    return Status::ok();
  }

  Status copy_from_mapped(void* dst, const void* src, std::size_t bytes) override {
    return copy_to_mapped(dst, src, bytes);
  }

  BackendStats stats() const override {
    auto lock = tracker_.lock();
    return tracker_.stats();
  }

 private:
  // Puts an inaccessible anonymous placeholder over [va, va+bytes); true on success.
  static bool restore_placeholder(void* va, std::size_t bytes) {
    return mmap(va, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
                0) != MAP_FAILED;
  }

  const HostBackendOptions options_;
  ResourceTracker tracker_;
};

}  // namespace

std::unique_ptr<Backend> make_host_backend(HostBackendOptions options) {
  return std::make_unique<HostBackend>(options);
}

}  // namespace pf::vmm
