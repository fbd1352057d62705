// Branch and lease ids that are never reused, not even across daemon restarts (DESIGN §8:
// a reconnecting client must never act on an id of an earlier run).
//
// An id is (boot epoch << 32) | sequence. The boot epoch (1..kMaxBootEpoch) is chosen once
// per daemon start (ipc/boot_epoch.h) and differs from the previous start's; the sequence
// counts 1, 2, ... within the run. Ids therefore stay below 2^52, exact in a JSON number (a
// double), and an id from an earlier run names nothing in this one. Epoch 0 is for
// in-process runtimes (unit tests), whose ids are then 1, 2, ...
//
// Not thread-safe: the owner serializes next().
#pragma once

#include <cstdint>

#include "base/status.h"

namespace pf::rt {

inline constexpr unsigned kIdSequenceBits = 32;
inline constexpr std::uint32_t kMaxBootEpoch = (std::uint32_t{1} << 20) - 1;

class IdSequence {
 public:
  // `last` is the sequence number already used (0: the first id has sequence 1).
  explicit IdSequence(std::uint32_t epoch = 0, std::uint32_t last = 0)
      : epoch_(epoch), last_(last) {}

  std::uint32_t epoch() const { return epoch_; }
  // How many more ids next() can give.
  std::uint64_t remaining() const { return kLastSequence - last_; }
  // The next id. kOutOfMemory once all 2^32 - 1 sequence numbers of this epoch are used:
  // the sequence never wraps (a wrapped id could name a live object).
  Result<std::uint64_t> next() {
    if (remaining() == 0) {
      return PF_ERROR(Code::kOutOfMemory, "out of ids: all " + std::to_string(kLastSequence) +
                                              " ids of boot epoch " + std::to_string(epoch_) +
                                              " are used; restart the daemon for a new epoch");
    }
    return (std::uint64_t{epoch_} << kIdSequenceBits) | ++last_;
  }

 private:
  static constexpr std::uint64_t kLastSequence = 0xFFFFFFFFu;
  std::uint32_t epoch_;
  std::uint64_t last_;
};

// The boot epoch an id was made in.
inline std::uint32_t id_epoch(std::uint64_t id) {
  return static_cast<std::uint32_t>(id >> kIdSequenceBits);
}

}  // namespace pf::rt
