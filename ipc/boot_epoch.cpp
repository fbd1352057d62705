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

// Replaces the counter file with `epoch` (temporary file, fsync, rename); false with `why`.
bool write_counter(const std::string& path, std::uint32_t epoch, std::string* why) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    *why = "cannot create " + tmp + ": " + std::strerror(errno);
    return false;
  }
  const std::string text = std::to_string(epoch) + "\n";
  const bool ok = write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  fsync(fd.get()) == 0 && rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) {
    *why = "cannot write " + path + ": " + std::strerror(errno);
    unlink(tmp.c_str());
  }
  return ok;
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
  std::string write_why;
  if (!write_counter(path, out.epoch, &write_why)) {
    // The file still holds the old value: a counter epoch would repeat at the next start.
    out.epoch = random_epoch();
    out.source = "random (" + write_why + ")";
  }
  return out;
}

}  // namespace pf::ipc
