// The Unix socket's {message type -> handler} table, generated from ipc/ops.def: each
// handler decodes its request message, runs Service::call<op> and encodes the reply.
//
// Contract: handlers never throw on a client's mistake and never touch the socket; a
// decode error is answered (kProtocol for a short or long payload, kInvalidArgument for a
// count over its limit) and counted as a protocol error when it is kProtocol.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "ipc/payload.h"
#include "ipc/service.h"

namespace pf::ipc {

// What a handler produces: a status, and on success the reply body (after the ReplyHeader)
// and any fds to attach.
struct UdsReply {
  Status status;
  wire::PayloadWriter body;
  std::vector<UniqueFd> fds;
};

UdsReply uds_failure(Status status);

using UdsHandler = UdsReply (*)(Service& service, rt::LeaseId lease,
                                std::span<const std::byte> payload);

// The handler of a message type; nullptr for a type no row of ops.def has.
UdsHandler uds_handler(std::uint16_t type);

}  // namespace pf::ipc
