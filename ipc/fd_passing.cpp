#include "ipc/fd_passing.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace pf::ipc {
namespace {

Status io_error(const char* what, int err) {
  if (err == EAGAIN || err == EWOULDBLOCK) {
    return Status(Code::kUnavailable, std::string(what) + ": timed out");
  }
  if (err == EPIPE || err == ECONNRESET) {
    return Status(Code::kUnavailable, std::string(what) + ": peer closed the connection");
  }
  return errno_status(what, err);
}

}  // namespace

Status send_with_fds(int sock, std::span<const std::byte> payload, std::span<const int> fds) {
  if (payload.empty()) {
    return PF_ERROR(Code::kInvalidArgument, "send_with_fds: fds need at least one payload byte");
  }
  if (fds.size() > kMaxFdsPerMessage) {
    return PF_ERROR(Code::kInvalidArgument, "send_with_fds: " + std::to_string(fds.size()) +
                                                " fds exceed the per-message limit of " +
                                                std::to_string(kMaxFdsPerMessage));
  }
  std::vector<char> control(fds.empty() ? 0 : CMSG_SPACE(fds.size() * sizeof(int)));
  std::size_t sent = 0;
  while (sent < payload.size()) {
    iovec iov{const_cast<std::byte*>(payload.data() + sent), payload.size() - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (sent == 0 && !fds.empty()) {
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
      std::memcpy(CMSG_DATA(cmsg), fds.data(), fds.size() * sizeof(int));
    }
    const ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("send_with_fds", errno).add_frame(__FILE__, __LINE__);
    }
    sent += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Status recv_with_fds(int sock, std::span<std::byte> payload, std::size_t max_fds,
                     std::vector<UniqueFd>* fds,
                     std::optional<std::chrono::steady_clock::time_point> deadline) {
  if (fds == nullptr) return PF_ERROR(Code::kInvalidArgument, "recv_with_fds: fds is null");
  if (payload.empty()) return PF_ERROR(Code::kInvalidArgument, "recv_with_fds: empty payload");
  max_fds = std::min(max_fds, kMaxFdsPerMessage);
  std::vector<UniqueFd> received;  // closed on every error return
  // Room for one more fd than allowed, so an excess shows up as a count, not only as a
  // truncation; plus slack for a second control message a hostile peer might attach.
  std::vector<char> control(CMSG_SPACE((max_fds + 1) * sizeof(int)) + CMSG_SPACE(sizeof(int)));
  std::size_t got = 0;
  bool protocol_error = false;
  std::string why;
  while (got < payload.size()) {
    if (deadline) {
      // Wait for bytes no later than the deadline: a trickle cannot stretch it.
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          *deadline - std::chrono::steady_clock::now());
      pollfd p{sock, POLLIN, 0};
      const int ready = left.count() > 0 ? poll(&p, 1, static_cast<int>(left.count())) : 0;
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) return io_error("recv_with_fds: poll", errno).add_frame(__FILE__, __LINE__);
      if (ready == 0) {
        return PF_ERROR(Code::kUnavailable, "recv_with_fds: " + std::to_string(got) + " of " +
                                                std::to_string(payload.size()) +
                                                " bytes arrived before the deadline");
      }
    }
    iovec iov{payload.data() + got, payload.size() - got};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    const ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("recv_with_fds", errno).add_frame(__FILE__, __LINE__);
    }
    // Take ownership of every fd that arrived before judging the message.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
          received.emplace_back(fd);
        }
      } else {
        protocol_error = true;
        why = "unexpected control message (level " + std::to_string(c->cmsg_level) + ", type " +
              std::to_string(c->cmsg_type) + ")";
      }
    }
    if (msg.msg_flags & MSG_TRUNC) {
      protocol_error = true;
      why = "datagram longer than the expected " + std::to_string(payload.size()) + " bytes";
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      protocol_error = true;
      why = "control message truncated: the peer sent more fds than fit";
    }
    if (!protocol_error && received.size() > max_fds) {
      protocol_error = true;
      why = std::to_string(received.size()) + " fds arrived, at most " + std::to_string(max_fds) +
            " expected";
    }
    // Refuse at once, closing what arrived: a peer that trickles the rest of the message
    // must not make us hold its descriptors meanwhile.
    if (protocol_error) return PF_ERROR(Code::kProtocol, "recv_with_fds: " + why);
    if (n == 0) {
      return PF_ERROR(Code::kUnavailable, "recv_with_fds: peer closed the connection after " +
                                              std::to_string(got) + " of " +
                                              std::to_string(payload.size()) + " bytes");
    }
    got += static_cast<std::size_t>(n);
  }
  *fds = std::move(received);
  return Status::ok();
}

}  // namespace pf::ipc
