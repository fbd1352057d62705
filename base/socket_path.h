// Where the daemon's Unix socket lives by default (DESIGN §3 ipc/): one rule for the daemon,
// the client library, the CLI and the Python package.
#pragma once

#include <string>

namespace pf {

// $XDG_RUNTIME_DIR/processfork.sock, else /tmp/processfork-$UID.sock.
std::string default_socket_path();
// What a client connects to when told nothing: $PROCESSFORK_SOCKET when set and non-empty,
// else default_socket_path().
std::string client_socket_path();

}  // namespace pf
