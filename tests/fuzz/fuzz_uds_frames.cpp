// libFuzzer target: the Unix-socket protocol (ipc/wire.h, ipc/messages.h) as bytes a peer
// sends. docs/fuzzing.md.
//
// The input is a byte stream of frames back to back, as one connection carries them. Each
// frame goes through what the daemon and the client library run on it:
//  - check_frame_header (magic, payload limit): a refused header ends the stream, as it
//    ends the connection; a frame cut short ends it too (the peer closed mid-frame);
//  - a request (flags without kFlagReply): HELLO through read_hello + check_hello_version,
//    every other type through op_of_message and wire::decode of its op's request message
//    (what uds_handlers.cpp runs before the op); an unknown type is skipped (answered);
//  - a reply (kFlagReply): the ReplyHeader, then wire::decode of the op's reply message
//    (what libprocessfork runs on an ok reply).
// A message that decodes must encode back to exactly the bytes it came from (one io()
// describes both directions, ipc/codec.h); a difference aborts, as would any crash, leak or
// undefined behaviour the sanitizers see.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "ipc/frame_check.h"
#include "ipc/ops.h"
#include "ipc/payload.h"

namespace {

using pf::Status;
using pf::ipc::Op;
using Bytes = std::span<const std::byte>;

// Decodes a message of type M from `payload`; when it decodes, checks the round trip.
template <typename M>
void decode_and_reencode(Bytes payload, const char* what) {
  M message;
  if (!pf::wire::decode(payload, &message, what).is_ok()) return;
  const std::vector<std::byte> again = pf::wire::encode(message);
  if (again.size() != payload.size() ||
      (!again.empty() && std::memcmp(again.data(), payload.data(), again.size()) != 0)) {
    std::fprintf(stderr, "%s: decoded %zu bytes but encodes back to %zu different bytes\n", what,
                 payload.size(), again.size());
    std::abort();
  }
}

void request(std::uint16_t type, Bytes payload) {
  if (type == static_cast<std::uint16_t>(pf::wire::MsgType::kHello)) {
    pf::Result<pf::msg::Hello> hello = pf::ipc::read_hello(payload);
    if (hello.is_ok()) pf::ipc::check_hello_version(hello->head).ignore();
    return;
  }
  const std::optional<Op> op = pf::ipc::op_of_message(type);
  if (!op) return;
  pf::ipc::for_each_op([&]<Op o>() {
    if (o == *op)
      decode_and_reencode<pf::ipc::RequestOf<o>>(payload, pf::ipc::OpTraits<o>::name.data());
  });
}

void reply(std::uint16_t type, Bytes payload) {
  pf::wire::PayloadReader in(payload);
  pf::wire::ReplyHeader header;
  if (!in.read(&header, "reply header").is_ok() || header.code != 0) return;
  const std::optional<Op> op = pf::ipc::op_of_message(type);
  if (!op) return;
  const Bytes body = payload.subspan(sizeof header);
  pf::ipc::for_each_op([&]<Op o>() {
    if (o == *op) decode_and_reencode<pf::ipc::ReplyOf<o>>(body, pf::ipc::OpTraits<o>::name.data());
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Bytes in(reinterpret_cast<const std::byte*>(data), size);
  while (in.size() >= sizeof(pf::wire::FrameHeader)) {
    pf::wire::FrameHeader header;
    std::memcpy(&header, in.data(), sizeof header);
    in = in.subspan(sizeof header);
    if (!pf::ipc::check_frame_header(header, pf::wire::kMaxPayload).is_ok()) break;
    if (header.payload_bytes > in.size()) break;
    const Bytes payload = in.first(header.payload_bytes);
    in = in.subspan(header.payload_bytes);
    if (header.flags & pf::wire::kFlagReply) {
      reply(header.type, payload);
    } else {
      request(header.type, payload);
    }
  }
  return 0;
}
