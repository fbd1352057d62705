// The test-only message pair exchanged by cross_process_test and vmm_peer.
#pragma once

#include <cstdint>

namespace pf::testing {

inline constexpr std::uint32_t kHandoffMagic = 0x70664801;  // "pfH\1"

#pragma pack(push, 1)
struct HandoffRequest {
  std::uint32_t magic = kHandoffMagic;
  std::uint32_t n_chunks = 0;  // fds attached, in mapping order
  std::uint64_t chunk_bytes = 0;
  std::uint64_t seed = 0;  // the parent filled the range with pattern(seed)
};
struct HandoffReply {
  std::uint32_t magic = kHandoffMagic;
  std::int32_t code = 0;  // pf::Code of the peer's outcome
  std::uint64_t verified_bytes = 0;
  std::uint64_t written_seed = 0;  // the peer wrote pattern(written_seed) over the 2nd half
  char message[240] = {};
};
#pragma pack(pop)
static_assert(sizeof(HandoffRequest) == 24);
static_assert(sizeof(HandoffReply) == 264);

}  // namespace pf::testing
