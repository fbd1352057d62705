// One Unix-socket connection's session (the protocol half of ipc/uds_server.h): HELLO and
// the lease, then one reply per request, in order, until the connection must end.
//
// Contract: blocking; runs on the connection's own thread and returns when the peer closed,
// broke the framing, timed out mid-frame, or the server shut the socket down. The caller
// owns and closes `fd`; the session ends the lease it opened before returning.
#pragma once

#include <sys/types.h>

#include <chrono>

#include "ipc/idle_spin.h"
#include "ipc/service.h"

namespace pf::ipc {

// frame_timeout: once a frame's first byte arrived, the whole frame must within this long.
// spin: the server's idle spin, used before each wait for a frame; it must outlive the call.
void run_session(Service& service, int fd, pid_t pid, std::chrono::milliseconds frame_timeout,
                 IdleSpin& spin);

}  // namespace pf::ipc
