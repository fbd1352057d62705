// Operations, generated from the one table (ipc/ops.def): the Op enum (one metrics row
// each), their names, and OpTraits<op> (message type, request and reply messages, whether
// the op changes state, HTTP method / route / success status). Nothing here is written out
// per operation: a new op is a new row of ops.def (docs/protocol.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "ipc/messages.h"
#include "ipc/wire.h"

namespace pf::ipc {

enum class Op : int {
#define PF_OP(op, ...) k##op,
#include "ipc/ops.def"
#undef PF_OP
  kCount,
};
inline constexpr std::size_t kOpCount = static_cast<std::size_t>(Op::kCount);
static_assert(kOpCount == wire::kOpRows);

// k + the method column of ops.def (pasted, so a DELETE macro of a system header cannot bite).
enum class HttpMethod { kNONE, kGET, kPOST, kPUT, kDELETE };

template <Op op>
struct OpTraits;

#define PF_OP(op, name_, msg_, request_, reply_, mutates_, method_, route_, ok_) \
  template <>                                                                    \
  struct OpTraits<Op::k##op> {                                                   \
    using Request = msg::request_;                                               \
    using Reply = msg::reply_;                                                   \
    static constexpr std::string_view name = name_;                              \
    static constexpr wire::MsgType message = wire::MsgType::k##op;               \
    static constexpr bool mutates = mutates_ != 0;                               \
    static constexpr HttpMethod method = HttpMethod::k##method_;                 \
    static constexpr std::string_view route = route_;                            \
    static constexpr int ok_status = ok_;                                        \
  };
#include "ipc/ops.def"
#undef PF_OP

template <Op op>
using RequestOf = typename OpTraits<op>::Request;
template <Op op>
using ReplyOf = typename OpTraits<op>::Reply;

// "branch_create", "append", ... (the metrics `op` label).
std::string_view op_name(Op op);
// Whether the op changes daemon state (branches, snapshots, refs, pages, holds).
bool op_mutates(Op op);
// The op a socket message type runs; nullopt for an unknown type.
std::optional<Op> op_of_message(std::uint16_t type);

// Calls f.template operator()<Op::kX>() once per row, in table order.
template <typename F>
void for_each_op(F&& f) {
#define PF_OP(op, ...) f.template operator()<Op::k##op>();
#include "ipc/ops.def"
#undef PF_OP
}

}  // namespace pf::ipc
