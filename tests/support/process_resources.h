// Counts of what this process holds, read from /proc: open fds and memory mappings.
// Tests take a count before an operation and compare after, to prove nothing leaked.
#pragma once

#include <dirent.h>

#include <cstddef>
#include <fstream>
#include <string>

namespace pf::testing {

inline std::size_t open_fd_count() {
  std::size_t n = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] != '.') ++n;
    }
    closedir(dir);
  }
  return n - 1;  // the directory's own fd
}

// Under AddressSanitizer the allocator splits its own regions as the heap grows, so the
// count is not stable there; sanitizer builds compare fds and the backends' own books only.
inline std::size_t mapping_count() {
#if defined(__SANITIZE_ADDRESS__)
  return 0;
#endif
  std::ifstream maps("/proc/self/maps");
  std::size_t n = 0;
  for (std::string line; std::getline(maps, line);) ++n;
  return n;
}

struct ProcessResources {
  std::size_t fds = open_fd_count();
  std::size_t mappings = mapping_count();
  bool operator==(const ProcessResources&) const = default;
};

}  // namespace pf::testing
