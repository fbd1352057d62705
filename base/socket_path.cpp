#include "base/socket_path.h"

#include <unistd.h>

#include <cstdlib>

namespace pf {

std::string default_socket_path() {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && xdg[0] != '\0') return std::string(xdg) + "/processfork.sock";
  return "/tmp/processfork-" + std::to_string(getuid()) + ".sock";
}

std::string client_socket_path() {
  const char* env = std::getenv("PROCESSFORK_SOCKET");
  if (env != nullptr && env[0] != '\0') return env;
  return default_socket_path();
}

}  // namespace pf
