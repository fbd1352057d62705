#include "ipc/http_token.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <utility>

namespace pf::ipc {

std::string token_file_path(const std::string& socket_path) {
  return socket_path + ".token";
}

Result<std::string> random_token() {
  unsigned char bytes[32];
  std::size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return PF_ERRNO("getrandom");
    got += static_cast<std::size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token;
  for (const unsigned char b : bytes) {
    token.push_back(kHex[b >> 4]);
    token.push_back(kHex[b & 15]);
  }
  return token;
}

Status write_token_file(const std::string& path, const std::string& token) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  std::remove(tmp.c_str());  // a leftover of an earlier run with this pid
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return PF_ERRNO("create " + tmp);
  const std::string text = token + "\n";
  std::size_t done = 0;
  int err = 0;
  // fchmod: the mode must be 0600 whatever the umask.
  if (fchmod(fd, 0600) != 0) err = errno;
  while (err == 0 && done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    if (n > 0) done += static_cast<std::size_t>(n);
  }
  if (close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    std::remove(tmp.c_str());
    return PF_ERRNO_OF("write the token file " + path, err);
  }
  return Status::ok();
}

TokenFile::TokenFile(std::string path) : path_(std::move(path)) {
  std::remove(path_.c_str());
}

TokenFile::~TokenFile() {
  if (!published_.empty()) std::remove(published_.c_str());
}

Status TokenFile::publish(const std::string& token) {
  PF_TRY(write_token_file(path_, token));
  published_ = path_;
  return Status::ok();
}

}  // namespace pf::ipc
