#include "ipc/http_token.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <utility>

#include "base/replace_file.h"

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
  return replace_file(path, token + "\n", /*owner_only=*/true);
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
