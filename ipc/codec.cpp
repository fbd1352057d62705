#include "ipc/codec.h"

#include <string>

namespace pf::wire::detail {

Status over_limit(std::size_t n, std::size_t limit, const char* what) {
  return PF_ERROR(Code::kInvalidArgument, std::to_string(n) + " " + what + " exceed the limit of " +
                                              std::to_string(limit) + " per request");
}

Status too_short(const char* what) {
  return PF_ERROR(Code::kProtocol, std::string("payload too short reading ") + what);
}

}  // namespace pf::wire::detail
