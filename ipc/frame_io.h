// Sending and receiving whole frames (ipc/wire.h) over a Unix stream socket.
//
// Contract: blocking; honours SO_RCVTIMEO / SO_SNDTIMEO. recv_frame validates the header
// (magic, payload size <= max_payload) before reading the payload, accepts at most
// `max_fds` fds and only with the frame's first bytes (fds arriving with the payload are a
// protocol error), and closes every received fd on any error. kUnavailable when the peer
// closed or timed out, kProtocol when it broke the framing; after either the connection
// is no longer usable.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "ipc/wire.h"

namespace pf::ipc {

struct Frame {
  wire::FrameHeader header;
  std::vector<std::byte> payload;
  std::vector<UniqueFd> fds;
};

Status send_frame(int sock, wire::MsgType type, std::uint16_t flags, std::uint32_t request_id,
                  std::span<const std::byte> payload, std::span<const int> fds = {});

Status recv_frame(int sock, Frame* out, std::uint32_t max_payload, std::size_t max_fds);

}  // namespace pf::ipc
