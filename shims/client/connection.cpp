#include "shims/client/connection.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "ipc/payload.h"

namespace pf::client {
namespace {

using nlohmann::json;
using wire::MsgType;

template <typename T>
std::span<const std::byte> as_bytes_of(const T& value) {
  return std::as_bytes(std::span(&value, 1));
}

std::string fixed_text(const char* text, std::size_t capacity) {
  return std::string(text, strnlen(text, capacity));
}

json source_json(const Source& s) {
  if (s.is_branch) return json(s.branch);
  return json(s.name);
}

Status check_text(std::string_view text, std::uint32_t limit, const char* what) {
  if (text.size() > limit) {
    return PF_ERROR(Code::kInvalidArgument,
                    std::string(what) + " is " + std::to_string(text.size()) +
                        " bytes long; the limit is " + std::to_string(limit));
  }
  return Status::ok();
}

Result<json> parse_json(const std::string& text, const char* op) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return PF_ERROR(Code::kProtocol, std::string("daemon answered ") + op + " with malformed JSON");
  }
  return j;
}

// A field of a JSON answer as uint64 (0 when absent); kProtocol when of the wrong type.
Result<std::uint64_t> json_u64(const json& j, const char* key, const char* op) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::uint64_t{0};
  if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<std::int64_t>() >= 0)) {
    return PF_ERROR(Code::kProtocol,
                    std::string("daemon's ") + op + " answer has a non-integer '" + key + "'");
  }
  return it->get<std::uint64_t>();
}

Result<std::string> json_str(const json& j, const char* key, const char* op) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::string();
  if (!it->is_string()) {
    return PF_ERROR(Code::kProtocol,
                    std::string("daemon's ") + op + " answer has a non-string '" + key + "'");
  }
  return it->get<std::string>();
}

}  // namespace

std::string default_socket_path() {
  if (const char* env = std::getenv("PROCESSFORK_SOCKET"); env != nullptr && *env != '\0') {
    return env;
  }
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    return std::string(xdg) + "/processfork.sock";
  }
  return "/tmp/processfork-" + std::to_string(getuid()) + ".sock";
}

std::string_view dtype_name(std::uint8_t dtype) {
  switch (dtype) {
    case 0:
      return "bf16";
    case 1:
      return "fp16";
    case 2:
      return "fp32";
    case 3:
      return "fp8_e4m3";
    case 4:
      return "fp8_e5m2";
    default:
      return "unknown";
  }
}

Connection::Connection(UniqueFd sock, std::string socket_path)
    : sock_(std::move(sock)), socket_path_(std::move(socket_path)) {}

Connection::~Connection() {
  // Close the session first: the daemon then drops this lease while we unmap.
  sock_.reset();
  std::lock_guard lock(map_mu_);
  mapping_.reset();
}

Result<std::unique_ptr<Connection>> Connection::connect(const ConnectOptions& options) {
  std::string path = options.socket_path.empty() ? default_socket_path() : options.socket_path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return PF_ERROR(Code::kInvalidArgument, "socket path '" + path + "' is longer than " +
                                                std::to_string(sizeof addr.sun_path - 1) +
                                                " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return PF_ERRNO("socket(AF_UNIX)");
  if (options.timeout_ms != 0) {
    timeval tv{};
    tv.tv_sec = options.timeout_ms / 1000;
    tv.tv_usec = static_cast<suseconds_t>(options.timeout_ms % 1000) * 1000;
    if (setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
      return PF_ERRNO("setting socket timeouts");
    }
  }
  int rc;
  do {
    rc = ::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    if (err == ENOENT || err == ECONNREFUSED || err == EAGAIN || err == ETIMEDOUT ||
        err == ENOTDIR) {
      return PF_ERROR(Code::kUnavailable,
                      "no ProcessFork daemon at " + path + " (" + std::strerror(err) + ")");
    }
    if (err == EACCES || err == EPERM) {
      return PF_ERROR(Code::kPermissionDenied,
                      "cannot connect to " + path + ": " + std::strerror(err));
    }
    return PF_ERRNO_OF("connect to " + path, err);
  }
  std::unique_ptr<Connection> conn(new Connection(std::move(sock), std::move(path)));
  conn->spin_us_ = options.spin_us;
  PF_TRY(conn->hello());
  if (options.attach) PF_TRY(conn->attach());
  return conn;
}

Status Connection::broken(Status why) {
  if (broken_.is_ok()) broken_ = why;
  sock_.reset();
  return why;
}

Result<Connection::Reply> Connection::call_locked(MsgType type, std::span<const std::byte> payload,
                                                  std::size_t max_fds) {
  if (!broken_.is_ok()) {
    return PF_ERROR(Code::kUnavailable,
                    "connection to the daemon is no longer usable: " + broken_.message());
  }
  const std::uint32_t id = next_id_++;
  if (Status s = ipc::send_frame(sock_.get(), type, 0, id, payload); !s.is_ok()) {
    if (s.code() == Code::kInvalidArgument) return s;  // over-long request; nothing was sent
    return broken(PF_ERROR(Code::kUnavailable, "sending to the daemon: " + s.message()));
  }
  if (spin_us_ != 0) wait_for_reply();
  ipc::Frame frame;
  if (Status s = ipc::recv_frame(sock_.get(), &frame, wire::kMaxPayload, max_fds); !s.is_ok()) {
    const Code code = s.code() == Code::kProtocol ? Code::kProtocol : Code::kUnavailable;
    return broken(PF_ERROR(code, "reading the daemon's reply: " + s.message()));
  }
  if ((frame.header.flags & wire::kFlagReply) == 0 || frame.header.request_id != id ||
      frame.header.type != static_cast<std::uint16_t>(type)) {
    return broken(PF_ERROR(Code::kProtocol, "daemon's reply does not match request " +
                                                std::to_string(id) + " (type " +
                                                std::to_string(frame.header.type) + ", id " +
                                                std::to_string(frame.header.request_id) + ")"));
  }
  Reply reply;
  wire::PayloadReader reader(frame.payload);
  if (Status s = reader.read(&reply.header, "reply header"); !s.is_ok()) return broken(s);
  {
    std::lock_guard lock(map_mu_);
    latest_epoch_ = reply.header.pool_epoch;
  }
  if (reply.header.code != 0) {
    std::string message;
    if (Status s = reader.read_text(reply.header.message_bytes, &message, "error message");
        !s.is_ok()) {
      return broken(s);
    }
    if (reply.header.code < 0 || reply.header.code > static_cast<int>(Code::kInternal)) {
      return broken(PF_ERROR(Code::kProtocol, "daemon answered with unknown status code " +
                                                  std::to_string(reply.header.code) + ": " +
                                                  message));
    }
    if (!frame.fds.empty()) return broken(PF_ERROR(Code::kProtocol, "error reply carried fds"));
    return PF_ERROR(static_cast<Code>(reply.header.code), message);
  }
  reply.payload.assign(frame.payload.begin() + sizeof(wire::ReplyHeader), frame.payload.end());
  reply.fds = std::move(frame.fds);
  if (type != MsgType::kAttach && type != MsgType::kHello && mapping_ != nullptr &&
      reply.header.pool_epoch != mapped_epoch_) {
    // Bring the mapping up to date before the caller sees page ids from this reply. A
    // failure does not fail the op (it happened): page_ptr() reports it.
    const Status s = attach_locked();
    if (!s.is_ok() && !broken_.is_ok()) return broken_;
  }
  return reply;
}

void Connection::wait_for_reply() const {
  // Busy-wait briefly for the reply so that a quick answer finds this thread running
  // instead of waking it (one scheduler wake-up less per round trip). Bounded; the
  // blocking receive that follows handles everything else.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
  char byte;
  do {
    if (::recv(sock_.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) != -1 || errno != EAGAIN) return;
  } while (std::chrono::steady_clock::now() < deadline);
}

Result<Connection::Reply> Connection::call(MsgType type, std::span<const std::byte> payload) {
  std::lock_guard lock(mu_);
  return call_locked(type, payload);
}

Status Connection::hello() {
  std::lock_guard lock(mu_);
  wire::HelloRequest req;
  req.client_pid = static_cast<std::uint32_t>(getpid());
  PF_ASSIGN_OR_RETURN(Reply reply, call_locked(MsgType::kHello, as_bytes_of(req)));
  wire::PayloadReader reader(reply.payload);
  wire::HelloReply hr;
  PF_TRY(reader.read(&hr, "HelloReply"));
  if (hr.major != wire::kVersionMajor) {
    return broken(PF_ERROR(Code::kUnsupported, "daemon speaks protocol " +
                                                   std::to_string(hr.major) + "." +
                                                   std::to_string(hr.minor) + ", this library " +
                                                   std::to_string(wire::kVersionMajor) + "." +
                                                   std::to_string(wire::kVersionMinor)));
  }
  if (hr.page_bytes == 0 || hr.chunk_bytes == 0 || hr.geometry.page_tokens == 0) {
    return broken(PF_ERROR(Code::kProtocol, "daemon's HELLO describes an empty pool geometry"));
  }
  pool_.protocol_major = hr.major;
  pool_.protocol_minor = std::min(hr.minor, wire::kVersionMinor);
  pool_.daemon_pid = hr.daemon_pid;
  pool_.lease = hr.lease;
  pool_.layers = hr.geometry.layers;
  pool_.kv_heads = hr.geometry.kv_heads;
  pool_.head_dim = hr.geometry.head_dim;
  pool_.page_tokens = hr.geometry.page_tokens;
  pool_.dtype = hr.geometry.dtype;
  pool_.page_bytes = hr.page_bytes;
  pool_.chunk_bytes = hr.chunk_bytes;
  pool_.capacity_bytes = hr.capacity_bytes;
  pool_.capacity_pages = hr.capacity_pages;
  pool_.backend = fixed_text(hr.backend, sizeof hr.backend);
  pool_.device = fixed_text(hr.device, sizeof hr.device);
  return Status::ok();
}

Status Connection::attach() {
  std::lock_guard lock(mu_);
  return attach_locked();
}

Status Connection::attach_locked() {
  if (mapping_ == nullptr) {
    PF_ASSIGN_OR_RETURN(auto mapping,
                        PoolMapping::create(pool_.device, pool_.capacity_bytes, pool_.chunk_bytes));
    std::lock_guard lock(map_mu_);
    mapping_ = std::move(mapping);
    stale_ = true;
  }
  // Windows of at most 253 chunks; if the pool changes between windows, start over.
  constexpr int kAttempts = 16;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::uint32_t first = 0;
    std::uint32_t total = 0;
    std::uint64_t epoch = 0;
    bool restart = false;
    do {
      wire::AttachRequest req;
      req.first_chunk = first;
      req.max_chunks = wire::kMaxChunksPerAttachReply;
      auto reply = call_locked(MsgType::kAttach, as_bytes_of(req), wire::kMaxChunksPerAttachReply);
      if (!reply.is_ok()) {
        if (first > 0) {  // earlier windows of this attach were applied
          std::lock_guard lock(map_mu_);
          stale_ = true;
        }
        return reply.take_status();
      }
      wire::PayloadReader reader(reply->payload);
      wire::AttachReply ar;
      std::vector<std::uint64_t> serials;
      Status s = reader.read(&ar, "AttachReply");
      if (s.is_ok()) s = reader.read_array(ar.n_fds, &serials, "chunk serials");
      if (s.is_ok()) s = reader.finish("AttachReply");
      if (s.is_ok() && (ar.first_chunk != first || ar.n_fds != reply->fds.size() ||
                        std::size_t{ar.first_chunk} + ar.n_fds > ar.total_chunks ||
                        (ar.n_fds == 0 && first < ar.total_chunks))) {
        s = PF_ERROR(Code::kProtocol, "inconsistent attach reply (asked from chunk " +
                                          std::to_string(first) + ", got first " +
                                          std::to_string(ar.first_chunk) + ", " +
                                          std::to_string(ar.n_fds) + " announced, " +
                                          std::to_string(reply->fds.size()) + " fds, total " +
                                          std::to_string(ar.total_chunks) + ")");
      }
      if (!s.is_ok()) return broken(s);
      if (first == 0) {
        epoch = ar.pool_epoch;
      } else if (ar.pool_epoch != epoch) {
        restart = true;
        break;
      }
      total = ar.total_chunks;
      {
        std::lock_guard lock(map_mu_);
        s = mapping_->apply(first, reply->fds, serials);
        if (!s.is_ok()) {
          stale_ = true;
          return s;
        }
      }
      first += ar.n_fds;
    } while (first < total);
    if (restart) continue;
    std::lock_guard lock(map_mu_);
    if (Status s = mapping_->truncate_to(total); !s.is_ok()) {
      stale_ = true;
      return s;
    }
    mapped_epoch_ = epoch;
    stale_ = false;
    return Status::ok();
  }
  // Every window applied was consistent in itself but the set may mix epochs.
  const Status s =
      PF_ERROR(Code::kUnavailable, "the pool kept changing while attaching; try again");
  std::lock_guard lock(map_mu_);
  stale_ = true;
  return s;
}

MappingInfo Connection::mapping_info() const {
  std::lock_guard lock(map_mu_);
  MappingInfo info;
  info.attached = mapping_ != nullptr;
  info.epoch = mapped_epoch_;
  info.latest_epoch = latest_epoch_;
  if (mapping_ != nullptr) {
    info.mapped_chunks = mapping_->mapped_chunks();
    info.mapped_bytes = mapping_->mapped_chunks() * mapping_->chunk_bytes();
    info.base = mapping_->base();
  }
  return info;
}

Result<std::byte*> Connection::page_ptr(std::uint32_t page) {
  if (page >= pool_.capacity_pages) {
    return PF_ERROR(Code::kInvalidArgument, "page " + std::to_string(page) +
                                                " is beyond the pool's capacity of " +
                                                std::to_string(pool_.capacity_pages) + " pages");
  }
  const std::size_t offset = std::size_t{page} * pool_.page_bytes;
  {
    std::lock_guard lock(map_mu_);
    if (mapping_ != nullptr && !stale_ && mapping_->covers(offset, pool_.page_bytes)) {
      return mapping_->base() + offset;
    }
  }
  // Not mapped (yet): catch up with the daemon's pool and look again.
  std::lock_guard lock(mu_);
  PF_TRY(attach_locked());
  std::lock_guard map_lock(map_mu_);
  if (!mapping_->covers(offset, pool_.page_bytes)) {
    return PF_ERROR(Code::kNotFound, "page " + std::to_string(page) +
                                         " is not in any chunk of the daemon's pool (epoch " +
                                         std::to_string(mapped_epoch_) + ", " +
                                         std::to_string(mapping_->mapped_chunks()) + " chunks)");
  }
  return mapping_->base() + offset;
}

std::size_t Connection::max_runs(std::size_t n_tokens) const {
  // The tokens start somewhere in the last page and cover consecutive slots: at most one
  // run for the partial page, one per whole page, one for the remainder.
  return n_tokens == 0 ? 0 : n_tokens / pool_.page_tokens + 2;
}

// --- fast path ------------------------------------------------------------------------

Result<NewBranch> Connection::branch_create(std::span<const std::uint32_t> tokens) {
  if (tokens.size() > wire::kMaxTokensPerRequest) {
    return PF_ERROR(Code::kInvalidArgument, std::to_string(tokens.size()) +
                                                " tokens in one request; the limit is " +
                                                std::to_string(wire::kMaxTokensPerRequest));
  }
  wire::BranchCreateRequest req;
  req.n_tokens = static_cast<std::uint32_t>(tokens.size());
  wire::PayloadWriter w;
  w.put(req).put_array(tokens);
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kBranchCreate, w.bytes()));
  wire::PayloadReader reader(reply.payload);
  wire::BranchCreateReply r;
  PF_TRY(reader.read(&r, "BranchCreateReply"));
  PF_TRY(reader.finish("BranchCreateReply"));
  return NewBranch{r.branch, r.n_tokens, r.reused_tokens};
}

Result<AppendResult> Connection::append(std::uint64_t branch,
                                        std::span<const std::uint32_t> tokens) {
  if (tokens.size() > wire::kMaxTokensPerRequest) {
    return PF_ERROR(Code::kInvalidArgument, std::to_string(tokens.size()) +
                                                " tokens in one request; the limit is " +
                                                std::to_string(wire::kMaxTokensPerRequest));
  }
  wire::AppendRequest req;
  req.branch = branch;
  req.n_tokens = static_cast<std::uint32_t>(tokens.size());
  wire::PayloadWriter w;
  w.put(req).put_array(tokens);
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kAppend, w.bytes()));
  wire::PayloadReader reader(reply.payload);
  wire::AppendReply r;
  std::vector<wire::WriteRunWire> runs;
  PF_TRY(reader.read(&r, "AppendReply"));
  PF_TRY(reader.read_array(r.n_runs, &runs, "write runs"));
  PF_TRY(reader.finish("AppendReply"));
  if (runs.size() > max_runs(tokens.size())) {
    return PF_ERROR(Code::kProtocol, "daemon returned " + std::to_string(runs.size()) +
                                         " write runs for " + std::to_string(tokens.size()) +
                                         " tokens");
  }
  AppendResult out;
  out.first_token = r.first_token;
  out.pages_added = r.pages_added;
  out.copied_page = r.copied_page != 0;
  out.runs.reserve(runs.size());
  for (const auto& run : runs) {
    out.runs.push_back(WriteRun{run.page, run.first_slot, run.count, run.first_token});
  }
  return out;
}

namespace {
Status expect_empty(const std::vector<std::byte>& payload, const char* op) {
  if (!payload.empty()) {
    return PF_ERROR(Code::kProtocol, std::string("unexpected ") + std::to_string(payload.size()) +
                                         " bytes in the " + op + " reply");
  }
  return Status::ok();
}
}  // namespace

Status Connection::commit(std::uint64_t branch) {
  wire::BranchRequest req{branch};
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kCommit, as_bytes_of(req)));
  return expect_empty(reply.payload, "commit");
}

Status Connection::truncate(std::uint64_t branch, std::uint64_t n_tokens) {
  wire::TruncateRequest req{branch, n_tokens};
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kTruncate, as_bytes_of(req)));
  return expect_empty(reply.payload, "truncate");
}

Status Connection::branch_free(std::uint64_t branch) {
  wire::BranchRequest req{branch};
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kBranchFree, as_bytes_of(req)));
  return expect_empty(reply.payload, "branch free");
}

Status Connection::detach(std::uint64_t branch) {
  wire::BranchRequest req{branch};
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kDetach, as_bytes_of(req)));
  return expect_empty(reply.payload, "detach");
}

Result<BranchView> Connection::branch_view(std::uint64_t branch, bool with_tokens) {
  wire::BranchViewRequest req;
  req.branch = branch;
  req.with_tokens = with_tokens ? 1 : 0;
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kBranchView, as_bytes_of(req)));
  wire::PayloadReader reader(reply.payload);
  wire::BranchViewReply r;
  BranchView out;
  PF_TRY(reader.read(&r, "BranchViewReply"));
  PF_TRY(reader.read_array(r.n_pages, &out.pages, "branch pages"));
  if (r.with_tokens != 0) {
    if (r.n_tokens > wire::kMaxPayload / sizeof(std::uint32_t)) {
      return PF_ERROR(Code::kProtocol, "branch view announces too many tokens");
    }
    PF_TRY(reader.read_array(static_cast<std::size_t>(r.n_tokens), &out.tokens, "branch tokens"));
  } else if (with_tokens) {
    return PF_ERROR(Code::kProtocol, "daemon left out the tokens a branch view asked for");
  }
  PF_TRY(reader.finish("BranchViewReply"));
  out.branch = r.branch;
  out.owner = r.owner;
  out.n_tokens = r.n_tokens;
  out.fill_in_last_page = r.fill_in_last_page;
  return out;
}

Result<SnapshotResult> Connection::snapshot(std::uint64_t branch, std::string_view name) {
  PF_TRY(check_text(name, wire::kMaxNameBytes, "snapshot name"));
  wire::SnapshotRequest req;
  req.branch = branch;
  req.name_bytes = static_cast<std::uint32_t>(name.size());
  wire::PayloadWriter w;
  w.put(req).put_text(name);
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kSnapshot, w.bytes()));
  wire::PayloadReader reader(reply.payload);
  wire::SnapshotReply r;
  PF_TRY(reader.read(&r, "SnapshotReply"));
  PF_TRY(reader.finish("SnapshotReply"));
  return SnapshotResult{fixed_text(r.cid, sizeof r.cid), r.n_tokens, r.n_pages, r.created != 0};
}

Result<ForkResult> Connection::fork(const Source& source, std::uint32_t n) {
  if (!source.is_branch) PF_TRY(check_text(source.name, wire::kMaxNameBytes, "CID or ref"));
  wire::ForkRequest req;
  req.n = n;
  wire::SourceWire src;
  src.kind = source.is_branch ? 0 : 1;
  src.branch = source.branch;
  src.name_bytes = source.is_branch ? 0 : static_cast<std::uint32_t>(source.name.size());
  wire::PayloadWriter w;
  w.put(req).put(src);
  if (!source.is_branch) w.put_text(source.name);
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kFork, w.bytes()));
  wire::PayloadReader reader(reply.payload);
  wire::ForkReply r;
  ForkResult out;
  PF_TRY(reader.read(&r, "ForkReply"));
  if (r.n != n) {
    return PF_ERROR(Code::kProtocol, "asked for " + std::to_string(n) + " forks, daemon made " +
                                         std::to_string(r.n));
  }
  PF_TRY(reader.read_array(r.n, &out.branches, "forked branch ids"));
  PF_TRY(reader.finish("ForkReply"));
  out.source = fixed_text(r.source, sizeof r.source);
  return out;
}

Result<CheckoutResult> Connection::checkout(std::string_view cid_or_ref) {
  PF_TRY(check_text(cid_or_ref, wire::kMaxNameBytes, "CID or ref"));
  wire::CheckoutRequest req;
  req.name_bytes = static_cast<std::uint32_t>(cid_or_ref.size());
  wire::PayloadWriter w;
  w.put(req).put_text(cid_or_ref);
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kCheckout, w.bytes()));
  wire::PayloadReader reader(reply.payload);
  wire::CheckoutReply r;
  PF_TRY(reader.read(&r, "CheckoutReply"));
  PF_TRY(reader.finish("CheckoutReply"));
  return CheckoutResult{r.branch, fixed_text(r.cid, sizeof r.cid)};
}

// --- JSON ops -------------------------------------------------------------------------

Result<std::string> Connection::json_op(MsgType type, std::string_view request_json) {
  PF_ASSIGN_OR_RETURN(
      Reply reply, call(type, std::as_bytes(std::span(request_json.data(), request_json.size()))));
  return std::string(reinterpret_cast<const char*>(reply.payload.data()), reply.payload.size());
}

Result<std::string> Connection::merge_json(const Source& from, const Source& into) {
  const json req = {{"from", source_json(from)}, {"into", source_json(into)}};
  return json_op(MsgType::kMerge, req.dump());
}

Result<MergeResult> Connection::merge(const Source& from, const Source& into) {
  PF_ASSIGN_OR_RETURN(std::string text, merge_json(from, into));
  PF_ASSIGN_OR_RETURN(json j, parse_json(text, "merge"));
  MergeResult out;
  PF_ASSIGN_OR_RETURN(std::string outcome, json_str(j, "outcome", "merge"));
  if (outcome != "fast-forward" && outcome != "three-way") {
    return PF_ERROR(Code::kProtocol, "daemon's merge answer has outcome '" + outcome + "'");
  }
  out.fast_forward = outcome == "fast-forward";
  PF_ASSIGN_OR_RETURN(out.branch, json_u64(j, "branch", "merge"));
  PF_ASSIGN_OR_RETURN(out.cid, json_str(j, "cid", "merge"));
  PF_ASSIGN_OR_RETURN(out.base, json_str(j, "base", "merge"));
  PF_ASSIGN_OR_RETURN(out.common_tokens, json_u64(j, "common_tokens", "merge"));
  if (auto it = j.find("recompute_tokens"); it != j.end()) {
    if (!it->is_array()) return PF_ERROR(Code::kProtocol, "merge: recompute_tokens not a list");
    for (const auto& t : *it) {
      if (!t.is_number_unsigned() || t.get<std::uint64_t>() > UINT32_MAX) {
        return PF_ERROR(Code::kProtocol, "merge: recompute_tokens holds a non-token");
      }
      out.recompute_tokens.push_back(t.get<std::uint32_t>());
    }
  }
  return out;
}

Result<std::string> Connection::diff_json(const Source& a, const Source& b) {
  const json req = {{"a", source_json(a)}, {"b", source_json(b)}};
  return json_op(MsgType::kDiff, req.dump());
}

Result<std::string> Connection::log_json(std::string_view cid_or_ref) {
  return json_op(MsgType::kLog, json{{"cid", std::string(cid_or_ref)}}.dump());
}

Result<std::string> Connection::manifest_json(std::string_view cid_or_ref) {
  return json_op(MsgType::kManifest, json{{"cid", std::string(cid_or_ref)}}.dump());
}

Result<std::string> Connection::snapshots_json() {
  return json_op(MsgType::kSnapshots, "{}");
}

Status Connection::unpin(std::string_view cid) {
  return json_op(MsgType::kUnpin, json{{"cid", std::string(cid)}}.dump()).status();
}

Status Connection::ref_set(std::string_view name, std::string_view cid_or_ref) {
  const json req = {{"name", std::string(name)}, {"cid", std::string(cid_or_ref)}};
  return json_op(MsgType::kRefSet, req.dump()).status();
}

Result<std::string> Connection::ref_get(std::string_view name) {
  PF_ASSIGN_OR_RETURN(std::string text,
                      json_op(MsgType::kRefGet, json{{"name", std::string(name)}}.dump()));
  PF_ASSIGN_OR_RETURN(json j, parse_json(text, "ref get"));
  PF_ASSIGN_OR_RETURN(std::string cid, json_str(j, "cid", "ref get"));
  if (cid.empty()) return PF_ERROR(Code::kProtocol, "daemon's ref answer names no cid");
  return cid;
}

Status Connection::ref_delete(std::string_view name) {
  return json_op(MsgType::kRefDelete, json{{"name", std::string(name)}}.dump()).status();
}

Result<std::string> Connection::refs_json() {
  return json_op(MsgType::kRefs, "{}");
}

Result<std::string> Connection::pool_json() {
  return json_op(MsgType::kPool, "{}");
}

Result<PoolStats> Connection::pool_stats() {
  PF_ASSIGN_OR_RETURN(std::string text, pool_json());
  PF_ASSIGN_OR_RETURN(json j, parse_json(text, "pool"));
  PoolStats out;
  PF_ASSIGN_OR_RETURN(out.capacity_pages, json_u64(j, "capacity_pages", "pool"));
  PF_ASSIGN_OR_RETURN(out.used_pages, json_u64(j, "used_pages", "pool"));
  PF_ASSIGN_OR_RETURN(out.shared_pages, json_u64(j, "shared_pages", "pool"));
  PF_ASSIGN_OR_RETURN(out.cached_pages, json_u64(j, "cached_pages", "pool"));
  PF_ASSIGN_OR_RETURN(out.free_pages, json_u64(j, "free_pages", "pool"));
  PF_ASSIGN_OR_RETURN(out.page_bytes, json_u64(j, "page_bytes", "pool"));
  PF_ASSIGN_OR_RETURN(out.chunk_bytes, json_u64(j, "chunk_bytes", "pool"));
  if (!j.contains("used_pages") || !j.contains("capacity_pages")) {
    return PF_ERROR(Code::kProtocol, "daemon's pool answer lacks used_pages/capacity_pages");
  }
  return out;
}

Result<std::string> Connection::gc_json(bool drop_cache) {
  return json_op(MsgType::kGc, json{{"drop_cache", drop_cache}}.dump());
}

Result<GcResult> Connection::gc(bool drop_cache) {
  PF_ASSIGN_OR_RETURN(std::string text, gc_json(drop_cache));
  PF_ASSIGN_OR_RETURN(json j, parse_json(text, "gc"));
  GcResult out;
  PF_ASSIGN_OR_RETURN(out.evicted_pages, json_u64(j, "evicted_pages", "gc"));
  PF_ASSIGN_OR_RETURN(out.released_chunks, json_u64(j, "released_chunks", "gc"));
  return out;
}

Result<std::string> Connection::health_json() {
  return json_op(MsgType::kHealth, "{}");
}

Result<std::string> Connection::branches_json() {
  if (pool_.protocol_minor < 1) {
    return PF_ERROR(Code::kUnsupported, "listing branches needs protocol 1.1; the daemon speaks " +
                                            std::to_string(pool_.protocol_major) + "." +
                                            std::to_string(pool_.protocol_minor));
  }
  return json_op(MsgType::kBranches, "{}");
}

Result<std::string> Connection::branch_info_json(std::uint64_t branch) {
  if (pool_.protocol_minor < 1) {
    return PF_ERROR(Code::kUnsupported, "branch info needs protocol 1.1; the daemon speaks " +
                                            std::to_string(pool_.protocol_major) + "." +
                                            std::to_string(pool_.protocol_minor));
  }
  return json_op(MsgType::kBranchInfo, json{{"branch", branch}}.dump());
}

// --- keyed pages (protocol 1.2) ----------------------------------------------------------

namespace {
Status check_count(std::size_t n, const char* what) {
  if (n > wire::kMaxKeysPerRequest) {
    return PF_ERROR(Code::kInvalidArgument, std::to_string(n) + " " + what +
                                                " in one request; the limit is " +
                                                std::to_string(wire::kMaxKeysPerRequest));
  }
  return Status::ok();
}

Result<std::vector<std::uint32_t>> read_pages(const std::vector<std::byte>& payload,
                                              std::size_t most, const char* op) {
  wire::PayloadReader reader(payload);
  wire::PagesReply r;
  std::vector<std::uint32_t> pages;
  PF_TRY(reader.read(&r, "PagesReply"));
  if (r.n_pages > most) {
    return PF_ERROR(Code::kProtocol, std::string("daemon's ") + op + " reply names " +
                                         std::to_string(r.n_pages) + " pages; at most " +
                                         std::to_string(most) + " were asked for");
  }
  PF_TRY(reader.read_array(r.n_pages, &pages, "page ids"));
  PF_TRY(reader.finish("PagesReply"));
  return pages;
}
}  // namespace

Status Connection::keyed_pages_supported() const {
  if (pool_.protocol_minor < 2) {
    return PF_ERROR(Code::kUnsupported, "keyed pages need protocol 1.2; the daemon speaks " +
                                            std::to_string(pool_.protocol_major) + "." +
                                            std::to_string(pool_.protocol_minor));
  }
  return Status::ok();
}

Result<std::vector<std::uint32_t>> Connection::pages_lookup_keys(std::span<const std::uint8_t> keys,
                                                                 bool hold) {
  PF_TRY(keyed_pages_supported());
  if (keys.size() % wire::kKeyBytes != 0) {
    return PF_ERROR(Code::kInvalidArgument, "keys hold " + std::to_string(keys.size()) +
                                                " bytes, not a multiple of " +
                                                std::to_string(wire::kKeyBytes));
  }
  const std::size_t n = keys.size() / wire::kKeyBytes;
  PF_TRY(check_count(n, "keys"));
  wire::PagesLookupKeysRequest req;
  req.n_keys = static_cast<std::uint32_t>(n);
  req.hold = hold ? 1 : 0;
  wire::PayloadWriter w;
  w.put(req).put_array(keys);
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kPagesLookupKeys, w.bytes()));
  return read_pages(reply.payload, n, "lookup_keys");
}

Result<std::vector<std::uint32_t>> Connection::pages_alloc(std::uint32_t n) {
  PF_TRY(keyed_pages_supported());
  PF_TRY(check_count(n, "pages"));
  wire::PagesAllocRequest req;
  req.n_pages = n;
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kPagesAlloc, as_bytes_of(req)));
  PF_ASSIGN_OR_RETURN(std::vector<std::uint32_t> pages, read_pages(reply.payload, n, "alloc"));
  if (pages.size() != n) {
    return PF_ERROR(Code::kProtocol, "asked for " + std::to_string(n) + " pages, daemon gave " +
                                         std::to_string(pages.size()));
  }
  return pages;
}

Result<std::uint32_t> Connection::pages_publish(std::span<const std::uint8_t> keys,
                                                std::span<const std::uint32_t> pages,
                                                const std::uint8_t* parent_key) {
  PF_TRY(keyed_pages_supported());
  if (keys.size() != pages.size() * wire::kKeyBytes) {
    return PF_ERROR(Code::kInvalidArgument, "publish: " + std::to_string(keys.size()) +
                                                " key bytes for " + std::to_string(pages.size()) +
                                                " pages (one " + std::to_string(wire::kKeyBytes) +
                                                "-byte key per page)");
  }
  PF_TRY(check_count(pages.size(), "pages"));
  wire::PagesPublishRequest req;
  req.n = static_cast<std::uint32_t>(pages.size());
  if (parent_key != nullptr) {
    req.has_parent = 1;
    std::memcpy(req.parent_key, parent_key, wire::kKeyBytes);
  }
  wire::PayloadWriter w;
  w.put(req).put_array(keys).put_array(pages);
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kPagesPublish, w.bytes()));
  wire::PayloadReader reader(reply.payload);
  wire::PagesPublishReply r;
  PF_TRY(reader.read(&r, "PagesPublishReply"));
  PF_TRY(reader.finish("PagesPublishReply"));
  if (r.new_keys > pages.size()) {
    return PF_ERROR(Code::kProtocol, "daemon counts " + std::to_string(r.new_keys) +
                                         " new keys among " + std::to_string(pages.size()));
  }
  return r.new_keys;
}

Status Connection::pages_release(std::span<const std::uint32_t> pages) {
  PF_TRY(keyed_pages_supported());
  PF_TRY(check_count(pages.size(), "pages"));
  wire::PagesReleaseRequest req;
  req.n_pages = static_cast<std::uint32_t>(pages.size());
  wire::PayloadWriter w;
  w.put(req).put_array(pages);
  PF_ASSIGN_OR_RETURN(Reply reply, call(MsgType::kPagesRelease, w.bytes()));
  return expect_empty(reply.payload, "release");
}

}  // namespace pf::client
