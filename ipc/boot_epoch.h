// The daemon's boot epoch: the high bits of every branch and lease id (runtime/ids.h), so
// that ids of an earlier run never name anything in this one (DESIGN §8).
//
// Contract: without a store, choose_boot_epoch is the one source of the epoch; a daemon with
// --store takes it from the store instead (rt::Store::next_boot_epoch, docs/store.md). It reads the
// counter file `<socket path>.epoch`, adds one (kMaxBootEpoch wraps to 1) and writes the new value
// back atomically (a 0600 temporary file, fsync, rename) before returning it. With no file yet, an
// unreadable or malformed one, one that is not a regular file of this user, or a failed write, the
// epoch is random instead (getrandom, 1..kMaxBootEpoch), and a successful write of it seeds the
// counter for the next start. It never fails; `source` says where the epoch came from, for the log.
#pragma once

#include <cstdint>
#include <string>

namespace pf::ipc {

struct BootEpoch {
  std::uint32_t epoch = 0;  // 1..rt::kMaxBootEpoch
  std::string source;       // "counter /path" or "random (why)"
};

// Blocking (file I/O). Called once at start-up, before the runtime is created.
BootEpoch choose_boot_epoch(const std::string& socket_path);

}  // namespace pf::ipc
