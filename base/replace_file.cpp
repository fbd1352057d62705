#include "base/replace_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "base/unique_fd.h"

namespace pf {

Status replace_file(const std::string& path, std::string_view text, bool owner_only) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  std::remove(tmp.c_str());  // a leftover of an earlier run with this pid
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                   owner_only ? 0600 : 0666));
  if (!fd.valid()) return PF_ERRNO("create " + tmp);
  int err = 0;
  if (owner_only && fchmod(fd.get(), 0600) != 0) err = errno;
  std::size_t done = 0;
  while (err == 0 && done < text.size()) {
    const ssize_t n = write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    if (n > 0) done += static_cast<std::size_t>(n);
  }
  if (err == 0 && fsync(fd.get()) != 0) err = errno;
  if (err == 0 && close(fd.release()) != 0) err = errno;
  if (err == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    std::remove(tmp.c_str());
    return PF_ERRNO_OF("write " + path, err);
  }
  return Status::ok();
}

}  // namespace pf
