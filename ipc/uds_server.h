// The Unix-socket server: the engines' fast path (DESIGN §3 ipc/, §8; ipc/wire.h).
//
// DESIGN
//  - Socket: AF_UNIX SOCK_STREAM at the configured path, created with mode 0600 (umask
//    during bind, then chmod). Before binding, an existing path is probed: a daemon that
//    answers a connect means "refuse to start" (kAlreadyExists); ECONNREFUSED means a stale
//    socket left by a dead daemon, which is unlinked; a path that is not a socket is never
//    touched (kAlreadyExists). On stop the path is unlinked only if it is still the socket
//    this server bound (same device and inode).
//  - Peers: SO_PEERCRED is read on accept; a peer whose uid is neither the daemon's nor
//    root's is closed at once, before a single byte is read or written.
//  - Threads: one accept thread plus one thread per connection, at most max_clients
//    connections (more are closed on accept). A connection's requests are served in order
//    on its own thread with blocking I/O, so a slow or hostile client can only stall itself;
//    engines keep few, long-lived connections, for which this is the lowest-latency design
//    (no hand-off between threads on the fast path).
//  - Idle spin: between frames a connection's thread first polls for the next frame for up
//    to spin_us (yielding between polls; at most max_spinners threads at once), then sleeps
//    in poll(): a client's burst of requests is answered without a wake-up per request.
//  - Timeouts: a connection may stay idle for ever (poll without timeout between frames),
//    but once a frame has started all of it must arrive within frame_timeout (one deadline
//    for the frame, not per read), and a reply must be taken within frame_timeout;
//    otherwise the connection is dropped. Payload buffers grow as bytes arrive.
//  - Errors: framing errors (bad magic, payload over the limit, fds from the client, a
//    malformed control message) are answered with a kProtocol reply where possible and then
//    the connection is dropped. Errors inside a well-framed request (unknown type, short or
//    long payload, bogus ids, bad arguments) are answered and the connection goes on. A
//    HELLO with another major version, or a first frame that is not HELLO, is answered and
//    the connection dropped.
//  - Leases: each connection gets one lease at HELLO; when the connection ends for any
//    reason (EOF, error, the client killed mid-request, daemon shutdown) the lease ends and
//    the runtime frees every branch it still owns.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "base/status.h"
#include "ipc/idle_spin.h"
#include "ipc/service.h"

namespace pf::ipc {

struct UdsOptions {
  std::string path;
  std::size_t max_clients = 256;
  std::chrono::milliseconds frame_timeout{10000};
  // Between frames a session thread busy-polls for up to spin_us before it sleeps, at most
  // max_spinners threads at once (ipc/idle_spin.h); 0 disables it.
  std::uint32_t spin_us = 50;
  unsigned max_spinners = default_max_spinners();
};

class UdsServer {
 public:
  // Prepares the path (see DESIGN above), binds, listens and starts the accept thread.
  // Errors: kInvalidArgument (path too long), kAlreadyExists (a live daemon or a non-socket
  // at the path), kPermissionDenied / kSystem (the OS refused).
  static Result<std::unique_ptr<UdsServer>> start(Service& service, UdsOptions options);
  ~UdsServer();
  UdsServer(const UdsServer&) = delete;
  UdsServer& operator=(const UdsServer&) = delete;

  // Stops accepting, unlinks the socket path, shuts every connection down (clients see
  // EOF), waits for the connection threads (each ends its lease) and returns. Idempotent.
  void stop();

  const std::string& path() const;

  struct Impl;

 private:
  explicit UdsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf::ipc
