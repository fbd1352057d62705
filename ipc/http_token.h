// The HTTP port's bearer token file (DESIGN §8: mutating routes authenticated by default).
//
// Contract: the daemon writes its token to token_file_path(socket) before its ready file, mode
// 0600 from creation (a temporary file made with O_EXCL, then renamed over the path, so no
// reader ever sees a partial or wider-readable file), and removes it at a clean shutdown. A
// local client reads it (or PROCESSFORK_TOKEN) and sends "Authorization: Bearer <token>".
#pragma once

#include <string>

#include "base/status.h"

namespace pf::ipc {

// "<socket path>.token".
std::string token_file_path(const std::string& socket_path);
// 32 bytes from getrandom(2), as 64 lowercase hex digits. kSystem when the kernel has none.
Result<std::string> random_token();
// Writes `token` and a newline to `path` as described above. kSystem on failure (nothing
// left behind).
Status write_token_file(const std::string& path, const std::string& token);

// The token file of a serving daemon: publish() writes it, the destructor removes it (so
// every way out of serve_main cleans up). Construction removes a stale file at `path`.
class TokenFile {
 public:
  explicit TokenFile(std::string path);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  Status publish(const std::string& token);
  // The path once published; "" before.
  const std::string& published() const { return published_; }

 private:
  std::string path_, published_;
};

}  // namespace pf::ipc
