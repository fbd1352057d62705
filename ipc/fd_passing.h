// File-descriptor passing over Unix-domain sockets (SCM_RIGHTS) — the primitive the
// daemon uses to hand chunk fds to clients on attach and when the pool grows.
//
// Contract:
//  - Works on SOCK_STREAM and SOCK_SEQPACKET AF_UNIX sockets. Blocking; EINTR is retried;
//    honours the socket's SO_SNDTIMEO / SO_RCVTIMEO (a timeout is a kUnavailable error).
//  - send_with_fds sends the whole payload; the fds ride with its first byte. The sender
//    keeps ownership of its fds (the kernel duplicates them into the message).
//  - recv_with_fds reads exactly payload.size() bytes and returns the fds that came with
//    them, owned by the caller and marked O_CLOEXEC. Any malformed control data (a
//    truncated control message, more fds than `max_fds`, a control message that is not
//    SCM_RIGHTS) is a kProtocol error, returned as soon as it shows (not when the payload
//    completes), and every fd that did arrive is closed: a failed receive never leaks, nor
//    holds, a descriptor.
//  - A peer that closes before the full payload arrived gives kUnavailable ("peer closed").
//  - With a deadline, the whole payload must arrive by then (kUnavailable otherwise),
//    however the peer spaces its bytes.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"

namespace pf::ipc {

// The kernel's per-message limit (SCM_MAX_FD).
inline constexpr std::size_t kMaxFdsPerMessage = 253;

Status send_with_fds(int sock, std::span<const std::byte> payload, std::span<const int> fds);

Status recv_with_fds(int sock, std::span<std::byte> payload, std::size_t max_fds,
                     std::vector<UniqueFd>* fds,
                     std::optional<std::chrono::steady_clock::time_point> deadline = {});

}  // namespace pf::ipc
