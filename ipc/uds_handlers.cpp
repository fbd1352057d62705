#include "ipc/uds_handlers.h"

#include <array>
#include <utility>

namespace pf::ipc {

UdsReply uds_failure(Status status) {
  UdsReply r;
  r.status = std::move(status);
  return r;
}

namespace {

template <Op op>
UdsReply handle(Service& service, rt::LeaseId lease, std::span<const std::byte> payload) {
  if constexpr (op == Op::kHello) {
    service.count_protocol_error();
    return uds_failure(PF_ERROR(Code::kProtocol, "HELLO was already received on this connection"));
  } else {
    RequestOf<op> request;
    if (Status s = wire::decode(payload, &request, OpTraits<op>::name.data()); !s.is_ok()) {
      if (s.code() == Code::kProtocol) service.count_protocol_error();
      service.count_failed(op);
      return uds_failure(std::move(s));
    }
    Result<ReplyOf<op>> reply = service.call<op>(lease, request);
    if (!reply.is_ok()) return uds_failure(reply.take_status());
    UdsReply out;
    wire::encode_into(out.body, *reply);
    if constexpr (op == Op::kAttach) out.fds = std::move(reply->fds);
    return out;
  }
}

struct Entry {
  std::uint16_t type;
  UdsHandler handler;
};

constexpr std::array<Entry, kOpCount> kHandlers = {{
#define PF_OP(op, name, msg, ...) {msg, &handle<Op::k##op>},
#include "ipc/ops.def"
#undef PF_OP
}};

}  // namespace

UdsHandler uds_handler(std::uint16_t type) {
  for (const Entry& e : kHandlers) {
    if (e.type == type) return e.handler;
  }
  return nullptr;
}

}  // namespace pf::ipc
