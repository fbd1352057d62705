#include "ipc/uds_session.h"

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "ipc/fd_passing.h"
#include "ipc/frame_check.h"
#include "ipc/frame_io.h"
#include "ipc/uds_handlers.h"

namespace pf::ipc {
namespace {

using wire::MsgType;

constexpr std::size_t kMaxErrorMessage = 4096;

// Payload bytes read per step: the buffer grows as bytes arrive, never ahead of them by
// more than this (an announced 16 MiB frame costs nothing until it is sent).
constexpr std::size_t kReadStep = 256 << 10;

class Session {
 public:
  Session(Service& service, int fd, std::chrono::milliseconds frame_timeout, IdleSpin& spin)
      : service_(service), fd_(fd), frame_timeout_(frame_timeout), spin_(spin) {}

  void run(pid_t pid);

 private:
  // Reads one frame. Returns false when the connection must end (after answering a framing
  // error when that is still possible).
  bool read_frame(Frame* frame);
  bool send_reply(std::uint16_t type, std::uint32_t request_id, UdsReply reply);
  bool refuse(std::uint16_t type, std::uint32_t request_id, Status why) {
    service_.count_protocol_error();
    send_reply(type, request_id, uds_failure(std::move(why)));
    return false;
  }
  UdsReply handle(rt::LeaseId lease, const Frame& frame);

  Service& service_;
  int fd_;
  std::chrono::milliseconds frame_timeout_;
  IdleSpin& spin_;
};

void Session::run(pid_t pid) {
  Frame hello;
  if (!read_frame(&hello)) return;
  const std::uint16_t hello_type = hello.header.type;
  const std::uint32_t hello_id = hello.header.request_id;
  if (hello_type != static_cast<std::uint16_t>(MsgType::kHello)) {
    refuse(hello_type, hello_id,
           PF_ERROR(Code::kProtocol, "the first frame must be HELLO (type 1), got type " +
                                         std::to_string(hello_type)));
    return;
  }
  // HELLO's layout never changes; a later minor may append fields, which this one ignores.
  Result<msg::Hello> request = read_hello(hello.payload);
  if (!request.is_ok()) {
    refuse(hello_type, hello_id, request.take_status());
    return;
  }
  Result<msg::HelloAnswer> answer = service_.call<Op::kHello>(kHttpLease, *request);
  if (!answer.is_ok()) {
    send_reply(hello_type, hello_id, uds_failure(answer.take_status()));
    return;
  }
  Result<rt::LeaseId> opened = service_.open_lease(pid);
  if (!opened.is_ok()) {
    send_reply(hello_type, hello_id, uds_failure(opened.take_status()));
    return;
  }
  const rt::LeaseId lease = *opened;
  struct LeaseGuard {
    Service& service;
    rt::LeaseId lease;
    ~LeaseGuard() { service.end_lease(lease); }
  } guard{service_, lease};
  answer->head.lease = lease;
  UdsReply reply;
  wire::encode_into(reply.body, *answer);
  if (!send_reply(hello_type, hello_id, std::move(reply))) return;

  for (;;) {
    Frame frame;
    if (!read_frame(&frame)) return;
    UdsReply r;
    try {
      r = handle(lease, frame);
    } catch (const std::exception& e) {
      // Nothing in a handler is meant to throw (allocation failure is the one way); the
      // client gets an error instead of the daemon dying.
      r = uds_failure(PF_ERROR(Code::kInternal, std::string("unexpected exception: ") + e.what()));
    }
    if (!send_reply(frame.header.type, frame.header.request_id, std::move(r))) return;
  }
}

UdsReply Session::handle(rt::LeaseId lease, const Frame& frame) {
  if (UdsHandler handler = uds_handler(frame.header.type)) {
    return handler(service_, lease, frame.payload);
  }
  service_.count_protocol_error();
  return uds_failure(PF_ERROR(Code::kUnsupported, "unknown message type " +
                                                      std::to_string(frame.header.type) +
                                                      " (this daemon speaks protocol " +
                                                      std::to_string(wire::kVersionMajor) + "." +
                                                      std::to_string(wire::kVersionMinor) + ")"));
}

bool Session::read_frame(Frame* frame) {
  // Idle between frames for as long as the client likes; stop() wakes this with shutdown().
  // A short busy-poll first (ipc/idle_spin.h): the next request of a burst is then answered
  // without a wake-up. Its outcome needs no handling: the poll below returns at once when
  // the socket is readable or hung up.
  spin_.wait_readable(fd_);
  for (;;) {
    pollfd p{fd_, POLLIN, 0};
    const int n = poll(&p, 1, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (p.revents & POLLIN) break;
    return false;  // POLLHUP / POLLERR without data
  }
  // A client never hands the daemon a descriptor: the first one that arrives ends the
  // connection, and every descriptor received is closed at once (recv_with_fds with 0).
  // From the first byte on, the whole frame must arrive within the frame timeout.
  const auto deadline = std::chrono::steady_clock::now() + frame_timeout_;
  std::vector<UniqueFd> fds;
  Status s =
      recv_with_fds(fd_, std::as_writable_bytes(std::span(&frame->header, 1)), 0, &fds, deadline);
  if (!s.is_ok()) {
    // Descriptors, a control message the kernel truncated or one that was not SCM_RIGHTS:
    // the header may not have arrived whole, so answer with request id 0.
    if (s.code() == Code::kProtocol) {
      refuse(0, 0,
             PF_ERROR(Code::kProtocol,
                      "clients must not send file descriptors (" + s.message() + ")"));
    }
    return false;  // peer closed, timed out mid-header, or the framing broke
  }
  const wire::FrameHeader& h = frame->header;
  if (Status bad = check_frame_header(h, wire::kMaxPayload); !bad.is_ok()) {
    return refuse(h.type, h.request_id, std::move(bad));
  }
  frame->payload.clear();
  while (frame->payload.size() < h.payload_bytes) {
    const std::size_t got = frame->payload.size();
    const std::size_t step = std::min<std::size_t>(h.payload_bytes - got, kReadStep);
    frame->payload.resize(got + step);
    std::vector<UniqueFd> late;
    Status p = recv_with_fds(fd_, std::span(frame->payload).subspan(got, step), 0, &late, deadline);
    if (!p.is_ok()) {
      if (p.code() == Code::kProtocol) refuse(h.type, h.request_id, std::move(p));
      return false;
    }
  }
  return true;
}

bool Session::send_reply(std::uint16_t type, std::uint32_t request_id, UdsReply reply) {
  // The epoch is read after the operation: page ids in the body lie inside its chunks.
  const Service::PoolEpoch pool = service_.pool_epoch();
  wire::ReplyHeader rh;
  rh.code = static_cast<std::int32_t>(reply.status.code());
  rh.pool_epoch = pool.epoch;
  rh.pool_chunks = pool.chunks;
  wire::PayloadWriter out;
  std::vector<int> raw_fds;
  if (reply.status.is_ok()) {
    out.put(rh);
    out.put_array(reply.body.bytes());
    for (const UniqueFd& f : reply.fds) raw_fds.push_back(f.get());
  } else {
    std::string message = reply.status.message();
    if (message.size() > kMaxErrorMessage) message.resize(kMaxErrorMessage);
    rh.message_bytes = static_cast<std::uint32_t>(message.size());
    out.put(rh);
    out.put_text(message);
  }
  Status s = send_frame(fd_, static_cast<MsgType>(type), wire::kFlagReply, request_id, out.bytes(),
                        raw_fds);
  // The daemon's copies of exported fds close here (reply.fds): the client owns its own.
  return s.is_ok();
}

}  // namespace

void run_session(Service& service, int fd, pid_t pid, std::chrono::milliseconds frame_timeout,
                 IdleSpin& spin) {
  Session(service, fd, frame_timeout, spin).run(pid);
}

}  // namespace pf::ipc
