#include "ipc/frame_io.h"

#include <cstring>
#include <string>

#include "ipc/fd_passing.h"
#include "ipc/frame_check.h"

namespace pf::ipc {

Status send_frame(int sock, wire::MsgType type, std::uint16_t flags, std::uint32_t request_id,
                  std::span<const std::byte> payload, std::span<const int> fds) {
  if (payload.size() > wire::kMaxPayload) {
    return PF_ERROR(Code::kInvalidArgument, "frame payload of " + std::to_string(payload.size()) +
                                                " bytes exceeds " +
                                                std::to_string(wire::kMaxPayload));
  }
  wire::FrameHeader header;
  header.type = static_cast<std::uint16_t>(type);
  header.flags = flags;
  header.request_id = request_id;
  header.payload_bytes = static_cast<std::uint32_t>(payload.size());
  // Header and payload in one buffer: one syscall for small frames, fds on the first byte.
  std::vector<std::byte> buffer(sizeof header + payload.size());
  std::memcpy(buffer.data(), &header, sizeof header);
  if (!payload.empty()) std::memcpy(buffer.data() + sizeof header, payload.data(), payload.size());
  PF_TRY(send_with_fds(sock, buffer, fds));
  return Status::ok();
}

Status recv_frame(int sock, Frame* out, std::uint32_t max_payload, std::size_t max_fds) {
  Frame frame;
  PF_TRY(recv_with_fds(sock, std::as_writable_bytes(std::span(&frame.header, 1)), max_fds,
                       &frame.fds));
  PF_TRY(check_frame_header(frame.header, max_payload));
  frame.payload.resize(frame.header.payload_bytes);
  if (!frame.payload.empty()) {
    std::vector<UniqueFd> late;
    PF_TRY(recv_with_fds(sock, frame.payload, 0, &late));
  }
  *out = std::move(frame);
  return Status::ok();
}

}  // namespace pf::ipc
