#include "ipc/boot_epoch.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "base/replace_file.h"
#include "base/unique_fd.h"
#include "runtime/ids.h"

namespace pf::ipc {

namespace {

constexpr std::uint32_t kMax = rt::kMaxBootEpoch;

std::uint32_t random_epoch() {
  std::uint32_t v = 0;
  if (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    v = static_cast<std::uint32_t>(ts.tv_nsec) ^ static_cast<std::uint32_t>(ts.tv_sec) ^
        static_cast<std::uint32_t>(getpid()) << 12;
  }
  return v % kMax + 1;
}

// The previous epoch from the counter file; 0 with `why` set when there is none to use.
std::uint32_t read_counter(const std::string& path, std::string* why) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    *why = errno == ENOENT ? "no " + path + " yet" : path + ": " + std::strerror(errno);
    return 0;
  }
  // A file someone else planted (a shared /tmp) could replay an old epoch.
  struct stat st {};
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    *why = path + " is not a regular file of this user";
    return 0;
  }
  char buf[32];
  const ssize_t n = read(fd.get(), buf, sizeof buf);
  std::size_t len = n > 0 ? static_cast<std::size_t>(n) : 0;
  if (len > 0 && buf[len - 1] == '\n') --len;
  std::uint32_t v = 0;
  auto [ptr, ec] = std::from_chars(buf, buf + len, v);
  if (n < 0 || len == 0 || ec != std::errc() || ptr != buf + len || v == 0 || v > kMax) {
    *why = path + " does not hold an epoch in 1.." + std::to_string(kMax);
    return 0;
  }
  return v;
}

}  // namespace

BootEpoch choose_boot_epoch(const std::string& socket_path) {
  const std::string path = socket_path + ".epoch";
  std::string why;
  const std::uint32_t previous = read_counter(path, &why);
  BootEpoch out;
  if (previous != 0) {
    out.epoch = previous == kMax ? 1 : previous + 1;
    out.source = "counter " + path;
  } else {
    out.epoch = random_epoch();
    out.source = "random (" + why + ")";
  }
  if (Status s = replace_file(path, std::to_string(out.epoch) + "\n", /*owner_only=*/true);
      !s.is_ok()) {
    // The file still holds the old value: a counter epoch would repeat at the next start.
    out.epoch = random_epoch();
    out.source = "random (" + s.message() + ")";
  }
  return out;
}

}  // namespace pf::ipc
