#include "base/status.h"

#include <cerrno>
#include <cstring>

namespace pf {

std::string_view code_name(Code code) {
  switch (code) {
    case Code::kOk:
      return "OK";
    case Code::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case Code::kNotFound:
      return "NOT_FOUND";
    case Code::kAlreadyExists:
      return "ALREADY_EXISTS";
    case Code::kOutOfMemory:
      return "OUT_OF_MEMORY";
    case Code::kUnavailable:
      return "UNAVAILABLE";
    case Code::kUnsupported:
      return "UNSUPPORTED";
    case Code::kSystem:
      return "SYSTEM";
    case Code::kProtocol:
      return "PROTOCOL";
    case Code::kPermissionDenied:
      return "PERMISSION_DENIED";
    case Code::kConflict:
      return "CONFLICT";
    case Code::kDriver:
      return "DRIVER";
    case Code::kInternal:
      return "INTERNAL";
    case Code::kDataCorrupt:
      return "DATA_CORRUPT";
    case Code::kStale:
      return "STALE";
  }
  return "UNKNOWN";
}

Status::Status(Code code, std::string message) {
  if (code == Code::kOk) return;
  payload_ = std::make_shared<Payload>(Payload{code, std::move(message), {}});
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return payload_ ? payload_->message : kEmpty;
}

const std::string& Status::trail() const {
  static const std::string kEmpty;
  return payload_ ? payload_->trail : kEmpty;
}

Status& Status::add_frame(const char* file, int line) {
  if (!payload_) return *this;
  // Copies share the payload; give this one its own before changing it.
  if (payload_.use_count() > 1) payload_ = std::make_shared<Payload>(*payload_);
  // Keep only the path below the source root so trails stay short and stable.
  std::string_view path(file);
  for (std::string_view root :
       {"/vmm/", "/kernels/", "/runtime/", "/ipc/", "/shims/", "/tests/", "/perf/"}) {
    if (auto pos = path.rfind(root); pos != std::string_view::npos) {
      path = path.substr(pos + 1);
      break;
    }
  }
  if (!payload_->trail.empty()) payload_->trail += " <- ";
  payload_->trail += std::string(path) + ":" + std::to_string(line);
  return *this;
}

std::string Status::to_string() const {
  if (!payload_) return "OK";
  std::string out = std::string(code_name(payload_->code)) + ": " + payload_->message;
  if (!payload_->trail.empty()) out += " [at " + payload_->trail + "]";
  return out;
}

Status errno_status(std::string_view what, int err) {
  const Code code = (err == ENOMEM) ? Code::kOutOfMemory : Code::kSystem;
  return Status(code, std::string(what) + ": " + std::strerror(err));
}

}  // namespace pf
