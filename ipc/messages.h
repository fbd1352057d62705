// The request and reply of every operation on the Unix socket (ipc/ops.def names which goes
// with which), shared by the daemon and libprocessfork. Each message describes its bytes
// once (`io`, ipc/codec.h): wire::encode / wire::decode derive both directions from it.
//
// Contract:
//  - Fast-path messages keep the packed, static_assert-sized heads of ipc/wire.h followed
//    by trailing arrays whose counts live in the head; their layout is what raw-frame tests
//    and docs/protocol.md show byte for byte.
//  - The other messages are the concatenation of their fields in declaration order,
//    little-endian, no padding; lists and strings carry a uint32 count first.
//  - Limits are checked while decoding (ipc/codec.h); semantic checks (n in 1..1024, source
//    kind, flags) belong to the daemon's handlers, which answer kInvalidArgument.
//  - Fixed char fields (CIDs) are NUL-terminated by the writer; readers use cstr(), which
//    never reads past the field.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/unique_fd.h"
#include "ipc/codec.h"
#include "ipc/wire.h"

namespace pf::msg {

using wire::kCidBytes;
using wire::kMaxNameBytes;

// Bounds of the self-counted fields below.
inline constexpr std::size_t kMaxListEntries = 1u << 20;    // branches, snapshots, refs, log
inline constexpr std::size_t kMaxParents = 64;              // a snapshot's parents
inline constexpr std::size_t kMaxText = wire::kMaxPayload;  // a manifest

// The text of a fixed, NUL-padded char field (never past its end).
template <std::size_t N>
std::string cstr(const char (&field)[N]) {
  return std::string(field, strnlen(field, N));
}
// Stores `text` NUL-terminated (truncated to N - 1 bytes; CIDs are 71).
template <std::size_t N>
void set_cstr(char (&field)[N], std::string_view text) {
  const std::size_t n = std::min(text.size(), N - 1);
  std::memcpy(field, text.data(), n);
  std::memset(field + n, 0, N - n);
}

// An empty message (requests without arguments, replies without a body).
struct Empty {
  template <class IO>
  Status io(IO&) {
    return Status::ok();
  }
};

// A branch (kind 0) or a snapshot named by CID or ref (kind 1).
struct Source {
  wire::SourceWire head;
  std::string name;

  static Source of_branch(std::uint64_t id) {
    Source s;
    s.head.kind = 0;
    s.head.branch = id;
    return s;
  }
  static Source of_name(std::string cid_or_ref) {
    Source s;
    s.head.kind = 1;
    s.name = std::move(cid_or_ref);
    return s;
  }
  bool is_branch() const { return head.kind == 0; }

  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    if (head.kind != 1) return Status::ok();  // a branch carries no name
    return io.text(head.name_bytes, name, kMaxNameBytes, "source name");
  }
};

// ---- session -------------------------------------------------------------------------------

struct Hello {
  wire::HelloRequest head;
  template <class IO>
  Status io(IO& io) {
    return io.fixed(head);
  }
};

struct HelloAnswer {
  wire::HelloReply head;
  std::optional<wire::HelloSession> session;  // 3.2; a 3.1 daemon sends none
  std::optional<wire::HelloDevice> device;    // 3.3, after session; a 3.2 daemon sends none
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    PF_TRY(io.tail(session, "hello session"));
    return io.tail(device, "hello device");
  }
};

struct Attach {
  wire::AttachRequest head;
  template <class IO>
  Status io(IO& io) {
    return io.fixed(head);
  }
};

// n_fds chunk fds ride with the frame; serials[i] belongs to chunk first_chunk + i.
struct AttachAnswer {
  wire::AttachReply head;
  std::vector<std::uint64_t> serials;
  std::vector<UniqueFd> fds;  // not in the payload: sent with it (SCM_RIGHTS)
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    return io.array(head.n_fds, serials, wire::kMaxChunksPerAttachReply, "chunk serials");
  }
};

// ---- branches (fast path) ------------------------------------------------------------------

struct BranchCreate {
  wire::BranchCreateRequest head;
  std::vector<std::uint32_t> tokens;
  std::optional<wire::Namespace> ns;  // 3.1; absent: the default namespace
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    PF_TRY(io.array(head.n_tokens, tokens, wire::kMaxTokensPerRequest, "tokens"));
    return io.tail(ns, "namespace");
  }
};

struct NewBranch {
  wire::BranchCreateReply head;
  template <class IO>
  Status io(IO& io) {
    return io.fixed(head);
  }
};

struct Append {
  wire::AppendRequest head;
  std::vector<std::uint32_t> tokens;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    return io.array(head.n_tokens, tokens, wire::kMaxTokensPerRequest, "tokens");
  }
};

struct Appended {
  wire::AppendReply head;
  std::vector<wire::WriteRunWire> runs;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    return io.array(head.n_runs, runs, 2 * wire::kMaxTokensPerRequest + 2, "write runs");
  }
};

// commit, branch_free, detach, branch_info.
struct BranchTarget {
  wire::BranchRequest head;
  template <class IO>
  Status io(IO& io) {
    return io.fixed(head);
  }
};

struct Truncate {
  wire::TruncateRequest head;
  template <class IO>
  Status io(IO& io) {
    return io.fixed(head);
  }
};

struct ViewBranch {
  wire::BranchViewRequest head;
  template <class IO>
  Status io(IO& io) {
    return io.fixed(head);
  }
};

struct BranchViewAnswer {
  wire::BranchViewReply head;
  std::vector<std::uint32_t> pages;
  std::vector<std::uint32_t> tokens;  // only with head.with_tokens
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    PF_TRY(io.array(head.n_pages, pages, wire::kMaxPayload / 4, "pages"));
    if (head.with_tokens == 0) return Status::ok();
    // The token array holds n_tokens entries; the count is 64-bit in the head, so it is
    // bounded here before it narrows to the array's count.
    constexpr std::size_t kMaxTokens = wire::kMaxPayload / 4;
    if (head.n_tokens > kMaxTokens)
      return wire::detail::over_limit(head.n_tokens, kMaxTokens, "tokens");
    std::uint32_t n = static_cast<std::uint32_t>(head.n_tokens);
    return io.array(n, tokens, kMaxTokens, "tokens");
  }
};

// One branch as GET /v1/branches/{id} shows it.
struct BranchInfo {
  std::uint64_t branch = 0;
  std::uint64_t owner = 0;  // lease; 0 = unowned
  std::uint64_t n_tokens = 0;
  std::uint64_t n_pages = 0;
  std::uint32_t fill_in_last_page = 0;
  std::vector<std::string> parents;  // CIDs its next snapshot names as parents
  // Its prefix-index namespace (zero: default). Shown by the HTTP answers only: it is not
  // part of this message's socket encoding, whose 3.0 layout clients decode exactly (a
  // socket client names the namespace when it creates the branch).
  wire::Namespace ns{};
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(branch));
    PF_TRY(io.fixed(owner));
    PF_TRY(io.fixed(n_tokens));
    PF_TRY(io.fixed(n_pages));
    PF_TRY(io.fixed(fill_in_last_page));
    return io.list(parents, kMaxParents, "parents");
  }
};

struct Branches {
  std::vector<BranchInfo> branches;
  template <class IO>
  Status io(IO& io) {
    return io.list(branches, kMaxListEntries, "branches");
  }
};

// ---- snapshots -----------------------------------------------------------------------------

struct Snapshot {
  wire::SnapshotRequest head;
  std::string name;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    return io.text(head.name_bytes, name, kMaxNameBytes, "snapshot name");
  }
};

struct SnapshotAnswer {
  wire::SnapshotReply head;
  std::string name;  // the label the snapshot was given (the HTTP answer shows it)
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    return io.str(name, kMaxNameBytes, "snapshot name");
  }
};

struct Fork {
  wire::ForkRequest head;
  Source source;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    return source.io(io);
  }
};

struct Forked {
  wire::ForkReply head;  // source: the CID forked from ("" from a branch); n_tokens
  std::vector<std::uint64_t> branches;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    return io.array(head.n, branches, wire::kMaxForkChildren, "branches");
  }
};

// checkout, and every request that names one snapshot or ref (log, manifest, unpin,
// ref_get, ref_delete).
struct Named {
  wire::CheckoutRequest head;
  std::string name;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    return io.text(head.name_bytes, name, kMaxNameBytes, "name");
  }
};

struct CheckedOut {
  wire::CheckoutReply head;  // branch, cid, n_tokens
  template <class IO>
  Status io(IO& io) {
    return io.fixed(head);
  }
};

struct Merge {
  Source from;
  Source into;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(from.io(io));
    return into.io(io);
  }
};

struct Merged {
  std::uint8_t fast_forward = 1;  // else three-way
  std::uint64_t branch = 0;
  std::uint64_t n_tokens = 0;  // the new branch's length
  std::string cid;
  std::string base;  // nearest common ancestor ("" when none)
  std::uint64_t common_tokens = 0;
  std::vector<std::uint32_t> recompute_tokens;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(fast_forward));
    PF_TRY(io.fixed(branch));
    PF_TRY(io.fixed(n_tokens));
    PF_TRY(io.str(cid, kCidBytes, "cid"));
    PF_TRY(io.str(base, kCidBytes, "base"));
    PF_TRY(io.fixed(common_tokens));
    return io.list(recompute_tokens, wire::kMaxPayload / 4, "recompute tokens");
  }
};

struct Diff {
  Source a;
  Source b;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(a.io(io));
    return b.io(io);
  }
};

struct Diffed {
  std::uint64_t common_tokens = 0;
  std::vector<std::uint64_t> shared_pages;
  std::vector<std::uint64_t> a_only_pages;
  std::vector<std::uint64_t> b_only_pages;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(common_tokens));
    PF_TRY(io.list(shared_pages, wire::kMaxPayload / 8, "shared pages"));
    PF_TRY(io.list(a_only_pages, wire::kMaxPayload / 8, "a-only pages"));
    return io.list(b_only_pages, wire::kMaxPayload / 8, "b-only pages");
  }
};

struct LogEntry {
  std::string cid;
  std::string name;
  std::vector<std::string> parents;
  std::uint64_t n_tokens = 0;
  std::uint8_t known = 1;  // 0: an unpinned ancestor (only its CID is left)
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.str(cid, kCidBytes, "cid"));
    PF_TRY(io.str(name, kMaxNameBytes, "name"));
    PF_TRY(io.list(parents, kMaxParents, "parents"));
    PF_TRY(io.fixed(n_tokens));
    return io.fixed(known);
  }
};

struct Log {
  std::vector<LogEntry> entries;  // newest first
  template <class IO>
  Status io(IO& io) {
    return io.list(entries, kMaxListEntries, "log entries");
  }
};

// The canonical manifest bytes (DESIGN §4): content, not protocol; checkable against the CID.
struct Manifest {
  std::string canonical;
  template <class IO>
  Status io(IO& io) {
    return io.str(canonical, kMaxText, "manifest");
  }
};

struct SnapshotEntry {
  std::string cid;
  std::string name;
  std::uint64_t n_tokens = 0;
  std::uint64_t n_pages = 0;
  std::vector<std::string> parents;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.str(cid, kCidBytes, "cid"));
    PF_TRY(io.str(name, kMaxNameBytes, "name"));
    PF_TRY(io.fixed(n_tokens));
    PF_TRY(io.fixed(n_pages));
    return io.list(parents, kMaxParents, "parents");
  }
};

struct Snapshots {
  std::vector<SnapshotEntry> snapshots;
  template <class IO>
  Status io(IO& io) {
    return io.list(snapshots, kMaxListEntries, "snapshots");
  }
};

// ---- refs ----------------------------------------------------------------------------------

struct RefEntry {
  std::string name;
  std::string cid;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.str(name, kMaxNameBytes, "ref name"));
    return io.str(cid, kMaxNameBytes, "cid");
  }
};

// ref_set: point `name` at `cid` (a CID or another ref).
using RefSet = RefEntry;

struct Refs {
  std::vector<RefEntry> refs;
  template <class IO>
  Status io(IO& io) {
    return io.list(refs, kMaxListEntries, "refs");
  }
};

// ---- pool, gc, health ----------------------------------------------------------------------

struct PoolAnswer {
  std::string backend;
  std::string device;
  wire::GeometryWire geometry;
  std::uint64_t page_bytes = 0;
  std::uint64_t chunk_bytes = 0;
  std::uint64_t chunks = 0;
  std::uint64_t epoch = 0;
  std::uint64_t capacity_pages = 0;
  std::uint64_t mapped_pages = 0;
  std::uint64_t used_pages = 0;
  std::uint64_t free_pages = 0;
  std::uint64_t exclusive_pages = 0;
  std::uint64_t sealed_pages = 0;
  std::uint64_t shared_pages = 0;
  std::uint64_t cached_pages = 0;
  std::uint64_t branches = 0;
  std::uint64_t snapshots = 0;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.str(backend, 64, "backend"));
    PF_TRY(io.str(device, 64, "device"));
    PF_TRY(io.fixed(geometry));
    for (std::uint64_t* v : {&page_bytes, &chunk_bytes, &chunks, &epoch, &capacity_pages,
                             &mapped_pages, &used_pages, &free_pages, &exclusive_pages,
                             &sealed_pages, &shared_pages, &cached_pages, &branches, &snapshots}) {
      PF_TRY(io.fixed(*v));
    }
    return Status::ok();
  }
};

struct Gc {
  std::uint8_t drop_cache = 0;  // 0 or 1
  template <class IO>
  Status io(IO& io) {
    return io.fixed(drop_cache);
  }
};

struct GcAnswer {
  std::uint64_t evicted_pages = 0;
  std::uint64_t released_chunks = 0;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(evicted_pages));
    return io.fixed(released_chunks);
  }
};

struct Health {
  std::string status;  // "ok"
  std::string version;
  std::string backend;
  std::string device;
  std::uint16_t protocol_major = wire::kVersionMajor;
  std::uint16_t protocol_minor = wire::kVersionMinor;
  std::uint32_t boot_epoch = 0;  // the high 32 bits of every id of this run (runtime/ids.h)
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.str(status, 64, "status"));
    PF_TRY(io.str(version, 64, "version"));
    PF_TRY(io.str(backend, 64, "backend"));
    PF_TRY(io.str(device, 64, "device"));
    PF_TRY(io.fixed(protocol_major));
    PF_TRY(io.fixed(protocol_minor));
    return io.fixed(boot_epoch);
  }
};

// ---- keyed pages (docs/protocol.md) --------------------------------------------------------

struct LookupKeys {
  wire::PagesLookupKeysRequest head;
  std::vector<wire::Key> keys;
  std::optional<wire::Namespace> ns;  // 3.1; absent: the default namespace
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    PF_TRY(io.array(head.n_keys, keys, wire::kMaxKeysPerRequest, "keys"));
    return io.tail(ns, "namespace");
  }
};

struct AllocPages {
  wire::PagesAllocRequest head;
  template <class IO>
  Status io(IO& io) {
    return io.fixed(head);
  }
};

struct Pages {
  wire::PagesReply head;
  std::vector<std::uint32_t> pages;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    return io.array(head.n_pages, pages, wire::kMaxKeysPerRequest, "pages");
  }
};

struct Publish {
  wire::PagesPublishRequest head;
  std::vector<wire::Key> keys;
  std::vector<std::uint32_t> pages;   // pages[i] under keys[i]
  std::optional<wire::Namespace> ns;  // 3.1; absent: the default namespace
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    PF_TRY(io.array(head.n, keys, wire::kMaxKeysPerRequest, "keys"));
    PF_TRY(io.array(head.n, pages, wire::kMaxKeysPerRequest, "pages"));
    return io.tail(ns, "namespace");
  }
};

struct Published {
  wire::PagesPublishReply head;
  template <class IO>
  Status io(IO& io) {
    return io.fixed(head);
  }
};

struct ReleasePages {
  wire::PagesReleaseRequest head;
  std::vector<std::uint32_t> pages;
  template <class IO>
  Status io(IO& io) {
    PF_TRY(io.fixed(head));
    return io.array(head.n_pages, pages, wire::kMaxKeysPerRequest, "pages");
  }
};

}  // namespace pf::msg
