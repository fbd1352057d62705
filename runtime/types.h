// Identifiers and small value types shared by every runtime module.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <variant>
#include <vector>

namespace pf::rt {

// A token id as engines use it (SGLang/vLLM vocabularies fit in 32 bits; prefix keys hash
// them as uint32 little-endian, DESIGN §4).
using Token = std::uint32_t;
// A page slot in the pool: the page lives at pool base + id * page_bytes in every process.
using PageId = std::uint32_t;
// A client connection (ipc/ lease). 0 = unowned: the branch lives until freed explicitly.
using LeaseId = std::uint64_t;

// A branch id: (boot epoch << 32) | sequence, never reused, not even across daemon restarts
// (runtime/ids.h).
struct BranchId {
  std::uint64_t value = 0;
  auto operator<=>(const BranchId&) const = default;
};

// Where an operation starts from: a live branch, or a snapshot named by CID
// ("sha256:<64 hex>") or by ref name.
using Source = std::variant<BranchId, std::string>;

// A run of consecutive token slots in one page that an engine must fill after append():
// tokens [first_token, first_token + count) of the branch live in `page`, slots
// [first_slot, first_slot + count). Byte offsets inside the page: Geometry::offset().
struct WriteRun {
  PageId page = 0;
  std::uint32_t first_slot = 0;
  std::uint32_t count = 0;
  std::uint64_t first_token = 0;
  bool operator==(const WriteRun&) const = default;
};

}  // namespace pf::rt

template <>
struct std::hash<pf::rt::BranchId> {
  std::size_t operator()(const pf::rt::BranchId& id) const noexcept {
    return std::hash<std::uint64_t>()(id.value);
  }
};
