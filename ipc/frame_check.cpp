#include "ipc/frame_check.h"

#include <string>

#include "ipc/payload.h"

namespace pf::ipc {

Status check_frame_header(const wire::FrameHeader& header, std::uint32_t max_payload) {
  if (header.magic != wire::kMagic) {
    return PF_ERROR(Code::kProtocol, "bad frame magic (not a ProcessFork peer?)");
  }
  if (header.payload_bytes > max_payload) {
    return PF_ERROR(Code::kProtocol, "frame payload of " + std::to_string(header.payload_bytes) +
                                         " bytes exceeds the limit of " +
                                         std::to_string(max_payload));
  }
  return Status::ok();
}

Result<msg::Hello> read_hello(std::span<const std::byte> payload) {
  msg::Hello hello;
  wire::PayloadReader in(payload);
  PF_TRY(in.read(&hello.head, "HelloRequest"));
  return hello;
}

Status check_hello_version(const wire::HelloRequest& hello) {
  if (hello.major != wire::kVersionMajor) {
    return PF_ERROR(Code::kUnsupported, "protocol version " + std::to_string(hello.major) + "." +
                                            std::to_string(hello.minor) +
                                            " is not supported; this daemon speaks " +
                                            std::to_string(wire::kVersionMajor) + "." +
                                            std::to_string(wire::kVersionMinor));
  }
  return Status::ok();
}

}  // namespace pf::ipc
