#include "ipc/ops.h"

#include <array>

namespace pf::ipc {
namespace {

struct Row {
  std::string_view name;
  bool mutates;
  std::uint16_t message;
};

constexpr std::array<Row, kOpCount> kRows = {{
#define PF_OP(op, name, msg, request, reply, mutates, ...) {name, mutates != 0, msg},
#include "ipc/ops.def"
#undef PF_OP
}};

// Message numbers are unique: two rows with one number would shadow each other.
static_assert(
    [] {
      for (std::size_t i = 0; i < kRows.size(); ++i) {
        for (std::size_t j = i + 1; j < kRows.size(); ++j) {
          if (kRows[i].message == kRows[j].message || kRows[i].name == kRows[j].name) return false;
        }
      }
      return true;
    }(),
    "ipc/ops.def: every op needs its own message number and name");

}  // namespace

std::string_view op_name(Op op) {
  const auto i = static_cast<std::size_t>(op);
  return i < kRows.size() ? kRows[i].name : std::string_view("unknown");
}

bool op_mutates(Op op) {
  const auto i = static_cast<std::size_t>(op);
  return i < kRows.size() && kRows[i].mutates;
}

std::optional<Op> op_of_message(std::uint16_t type) {
  for (std::size_t i = 0; i < kRows.size(); ++i) {
    if (kRows[i].message == type) return static_cast<Op>(i);
  }
  return std::nullopt;
}

}  // namespace pf::ipc
