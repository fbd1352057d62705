// The checks a peer's bytes pass before anything else reads them (DESIGN §8): the frame
// header (ipc/wire.h) and the HELLO request. One copy, used by the daemon's sessions
// (ipc/uds_session.cpp, ipc/service_session.cpp), the client's recv_frame
// (ipc/frame_io.cpp) and the protocol fuzz target (tests/fuzz/fuzz_uds_frames.cpp).
//
// Contract: pure functions of their arguments; no I/O, no allocation beyond error text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/status.h"
#include "ipc/messages.h"
#include "ipc/wire.h"

namespace pf::ipc {

// A header whose payload may be read: kProtocol for a bad magic or payload_bytes over
// max_payload. The type is not checked here (an unknown type is answered, not fatal).
Status check_frame_header(const wire::FrameHeader& header, std::uint32_t max_payload);

// HELLO's payload: its fixed head; bytes after it (fields of a later minor) are ignored.
// kProtocol when the head is short.
Result<msg::Hello> read_hello(std::span<const std::byte> payload);

// kUnsupported unless the client speaks this daemon's major version.
Status check_hello_version(const wire::HelloRequest& hello);

}  // namespace pf::ipc
