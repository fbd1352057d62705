// The Unix-socket wire protocol between the daemon and its clients (DESIGN §3 ipc/, §8).
// Shared by ipc/ (the daemon) and shims/ (libprocessfork); nothing else crosses the socket.
//
// DESIGN
//  - Transport: AF_UNIX SOCK_STREAM. Every message is a 16-byte FrameHeader followed by
//    `payload_bytes` of payload. Chunk fds ride with a frame's first byte (SCM_RIGHTS);
//    only the daemon ever sends fds, and only in an AttachReply. A daemon that receives
//    an fd from a client treats it as a protocol violation (closes it, answers, and drops
//    the connection).
//  - Every request gets exactly one reply with the same request_id, in order. A reply's
//    payload starts with a ReplyHeader (status code, error message length, the pool's
//    current epoch and chunk count); on error the message follows and nothing else.
//  - Session: the first frame must be kHello (its number never changes); the reply grants
//    a lease. Everything created through a connection is owned by its lease and dies with
//    the connection unless snapshotted or detached.
//  - Pool growth: a client maps the pool's chunks once (kAttach) and compares every
//    reply's pool_epoch with the epoch it mapped; when they differ it sends kAttach again
//    before touching any page id of that reply (a grown pool has new chunks; a shrunk one
//    fewer). Page ids a reply hands out always lie inside the chunks of that epoch.
//  - Every operation is a row of ipc/ops.def; its request and reply are binary messages
//    (ipc/messages.h). Fast-path messages are the packed heads below with trailing arrays;
//    the others (merge, diff, log, refs, pool, gc, ...) are packed field lists. JSON exists
//    only at the HTTP edge (ipc/api_json.h).
//  - Every struct is packed and static_assert-sized; integers are little-endian (the
//    protocol is same-host only). Limits below are enforced by the daemon before parsing.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace pf::wire {

inline constexpr std::uint32_t kMagic = 0x314b4650;  // "PFK1" in memory order
inline constexpr std::uint16_t kVersionMajor = 3;    // incompatible changes bump this
inline constexpr std::uint16_t kVersionMinor = 4;    // compatible additions bump this
inline constexpr std::uint32_t kMaxPayload = 16u << 20;
inline constexpr std::uint32_t kMaxTokensPerRequest = 1u << 20;
inline constexpr std::uint32_t kMaxNameBytes = 256;
inline constexpr std::uint32_t kCidBytes = 72;                  // "sha256:" + 64 hex + NUL
inline constexpr std::uint32_t kMaxChunksPerAttachReply = 253;  // SCM_MAX_FD
// Keyed pages (1.2): keys or page ids in one request, and the bytes of one prefix key.
inline constexpr std::uint32_t kMaxKeysPerRequest = 1u << 16;
inline constexpr std::uint32_t kKeyBytes = 32;  // SHA-256, binary on the wire
inline constexpr std::uint32_t kMaxForkChildren = 1024;

// Message types, one per row of ipc/ops.def (kHello = 1 never changes).
enum class MsgType : std::uint16_t {
#define PF_OP(op, name, msg, ...) k##op = msg,
#include "ipc/ops.def"
#undef PF_OP
};

// Operations per protocol minor of this major: adding a row to ipc/ops.def without bumping
// kVersionMinor (and appending the new count here) fails to compile.
inline constexpr std::size_t kOpsByMinor[] = {31, 31, 32, 32, 32};
inline constexpr std::size_t kOpRows = 0
#define PF_OP(...) +1
#include "ipc/ops.def"
#undef PF_OP
    ;
static_assert(kOpRows == kOpsByMinor[kVersionMinor],
              "ipc/ops.def changed: bump wire::kVersionMinor and append the new op count to "
              "kOpsByMinor (docs/protocol.md, \"Adding an operation\")");

// A 32-byte binary SHA-256 prefix key (DESIGN §4).
using Key = std::array<std::uint8_t, 32>;
// A prefix-index namespace (3.1; runtime/namespace.h): 32 bytes, all zero = the default
// namespace. Requests that act on the prefix index (branch create, keyed lookup, publish)
// may end with one, after every other field; a request without it (any 3.0 client) acts
// on the default namespace. A client sends a non-default namespace only in a session whose
// negotiated minor is >= 1.
using Namespace = std::array<std::uint8_t, 32>;
inline constexpr std::uint16_t kNamespaceMinor = 1;

// Flags in FrameHeader::flags.
inline constexpr std::uint16_t kFlagReply = 1;

#pragma pack(push, 1)

struct FrameHeader {
  std::uint32_t magic = kMagic;
  std::uint16_t type = 0;  // MsgType
  std::uint16_t flags = 0;
  std::uint32_t request_id = 0;
  std::uint32_t payload_bytes = 0;
};
static_assert(sizeof(FrameHeader) == 16);

// First bytes of every reply payload.
struct ReplyHeader {
  std::int32_t code = 0;            // pf::Code; 0 = ok
  std::uint32_t message_bytes = 0;  // error text follows when code != 0
  std::uint64_t pool_epoch = 0;     // changes whenever the pool's chunk set changes
  std::uint32_t pool_chunks = 0;
  std::uint32_t reserved = 0;
};
static_assert(sizeof(ReplyHeader) == 24);

struct HelloRequest {
  std::uint16_t major = kVersionMajor;
  std::uint16_t minor = kVersionMinor;
  std::uint32_t client_pid = 0;
  std::uint64_t reserved = 0;
};
static_assert(sizeof(HelloRequest) == 16);

struct GeometryWire {
  std::uint32_t layers = 0;
  std::uint32_t kv_heads = 0;
  std::uint32_t head_dim = 0;
  std::uint32_t page_tokens = 0;
  std::uint8_t dtype = 0;  // rt::DType
  std::uint8_t reserved[7] = {};
};
static_assert(sizeof(GeometryWire) == 24);

struct HelloReply {
  std::uint16_t major = kVersionMajor;  // the daemon's; the session speaks min(minor)
  std::uint16_t minor = kVersionMinor;
  std::uint32_t daemon_pid = 0;
  std::uint64_t lease = 0;
  GeometryWire geometry;
  std::uint64_t page_bytes = 0;
  std::uint64_t chunk_bytes = 0;     // every chunk has this size
  std::uint64_t capacity_bytes = 0;  // the VA range a client reserves for the whole pool
  std::uint64_t capacity_pages = 0;
  char backend[16] = {};  // "host" / "cuda"
  char device[16] = {};   // "host" / "cuda:0"
};
static_assert(sizeof(HelloReply) == 104);

// HELLO's optional tail (3.2): follows HelloReply. A 3.2 daemon always sends it; a client
// reads it only when bytes are left (a 3.1 daemon sends none: the boot epoch is then the
// high 32 bits of the lease id). Lets a client that reconnects after a daemon restart name
// both boot epochs and refuse ids of the earlier one (docs/protocol.md "Daemon restarts").
struct HelloSession {
  std::uint32_t boot_epoch = 0;  // the daemon's boot epoch (ipc/boot_epoch.h), 1..2^20-1
  std::uint32_t reserved = 0;
};
static_assert(sizeof(HelloSession) == 8);
inline constexpr std::uint16_t kBootEpochMinor = 2;

// HELLO's second optional tail (3.3): follows HelloSession. Names the pool's device the
// same way in every process: HelloReply.device ("cuda:N") is the daemon's ordinal, which
// another process's CUDA_VISIBLE_DEVICES renumbers. A client finds the GPU among those it
// sees by `uuid` (else `pci_bus_id`) and maps the pool there; both are empty for a host
// pool. A 3.3 daemon always sends it; older clients ignore it (HELLO's reply only grows).
struct HelloDevice {
  char uuid[48] = {};        // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (cuDeviceGetUuid)
  char pci_bus_id[32] = {};  // "0000:3b:00.0" (cuDeviceGetPCIBusId)
};
static_assert(sizeof(HelloDevice) == 80);
inline constexpr std::uint16_t kDeviceIdentityMinor = 3;
// Branch and lease ids are (boot epoch << kIdEpochShift) | sequence (runtime/ids.h).
inline constexpr unsigned kIdEpochShift = 32;
inline std::uint32_t id_epoch(std::uint64_t id) {
  return static_cast<std::uint32_t>(id >> kIdEpochShift);
}

// Asks for fds of chunks [first_chunk, first_chunk + max_chunks) of the current epoch.
struct AttachRequest {
  std::uint32_t first_chunk = 0;
  std::uint32_t max_chunks = kMaxChunksPerAttachReply;
};
static_assert(sizeof(AttachRequest) == 8);

// Follows ReplyHeader; trailed by n_fds uint64 chunk serials. n_fds chunk fds are attached
// to the frame, for chunks [first_chunk, first_chunk + n_fds); the client owns them. A
// chunk's serial changes when the pool releases a chunk and later maps another at the same
// index: a client remaps exactly the indices whose serial differs from what it mapped and
// unmaps indices >= total_chunks.
struct AttachReply {
  std::uint64_t pool_epoch = 0;
  std::uint32_t total_chunks = 0;
  std::uint32_t first_chunk = 0;
  std::uint32_t n_fds = 0;
  std::uint32_t reserved = 0;
};
static_assert(sizeof(AttachReply) == 24);

// Trailed by n_tokens uint32 token ids, then (3.1) an optional Namespace.
struct BranchCreateRequest {
  std::uint32_t n_tokens = 0;
  std::uint32_t reserved = 0;
};
static_assert(sizeof(BranchCreateRequest) == 8);

struct BranchCreateReply {
  std::uint64_t branch = 0;
  std::uint64_t n_tokens = 0;
  std::uint64_t reused_tokens = 0;
};
static_assert(sizeof(BranchCreateReply) == 24);

// Trailed by n_tokens uint32 token ids.
struct AppendRequest {
  std::uint64_t branch = 0;
  std::uint32_t n_tokens = 0;
  std::uint32_t reserved = 0;
};
static_assert(sizeof(AppendRequest) == 16);

struct WriteRunWire {
  std::uint32_t page = 0;
  std::uint32_t first_slot = 0;
  std::uint32_t count = 0;
  std::uint32_t reserved = 0;
  std::uint64_t first_token = 0;
};
static_assert(sizeof(WriteRunWire) == 24);

// Trailed by n_runs WriteRunWire.
struct AppendReply {
  std::uint64_t first_token = 0;
  std::uint32_t pages_added = 0;
  std::uint8_t copied_page = 0;
  std::uint8_t reserved[3] = {};
  std::uint32_t n_runs = 0;
  std::uint32_t reserved2 = 0;
};
static_assert(sizeof(AppendReply) == 24);

// kCommit, kBranchFree, kDetach: empty reply body.
struct BranchRequest {
  std::uint64_t branch = 0;
};
static_assert(sizeof(BranchRequest) == 8);

struct TruncateRequest {
  std::uint64_t branch = 0;
  std::uint64_t n_tokens = 0;
};
static_assert(sizeof(TruncateRequest) == 16);

// The daemon answers once the first pages of the branch are readable (3.4): pages of a
// checkout of a snapshot that lives only in the store arrive in page order after the
// checkout returned. wait_mode 0 (what every 3.3 and older client sends): every page;
// 1: the first min(wait_pages, n_pages) pages (0: no wait), for at most kViewWaitSliceMs:
// the daemon then answers with what is ready (ready_pages < wait_pages) and the client asks
// again, so that no reply waits longer than a client's reply timeout whatever the disk.
// Other modes are kInvalidArgument. The wait blocks this connection only.
struct BranchViewRequest {
  std::uint64_t branch = 0;
  std::uint8_t with_tokens = 0;  // 0 or 1 (any nonzero value is 1)
  std::uint8_t wait_mode = 0;    // 3.4: kViewWaitAll / kViewWaitLeading
  std::uint8_t reserved[2] = {};
  std::uint32_t wait_pages = 0;  // 3.4: with kViewWaitLeading, the pages to wait for
};
static_assert(sizeof(BranchViewRequest) == 16);
static_assert(offsetof(BranchViewRequest, wait_mode) == 9);
static_assert(offsetof(BranchViewRequest, wait_pages) == 12);
inline constexpr std::uint8_t kViewWaitAll = 0;
inline constexpr std::uint8_t kViewWaitLeading = 1;
inline constexpr std::uint32_t kViewWaitSliceMs = 1000;
// The session minor from which a view request's wait_mode and a reply's ready_pages are
// meaningful; an older daemon ignores the former and leaves the latter 0 (reserved) with
// every page resident.
inline constexpr std::uint16_t kViewWaitMinor = 4;

// Trailed by n_pages uint32 page ids, then (with_tokens) n_tokens uint32 token ids.
struct BranchViewReply {
  std::uint64_t branch = 0;
  std::uint64_t owner = 0;  // lease id; 0 = detached
  std::uint64_t n_tokens = 0;
  std::uint32_t n_pages = 0;
  std::uint32_t fill_in_last_page = 0;
  std::uint8_t with_tokens = 0;
  std::uint8_t reserved[3] = {};
  std::uint32_t ready_pages = 0;  // 3.4: leading pages readable when the reply was sent
};
static_assert(sizeof(BranchViewReply) == 40);
static_assert(offsetof(BranchViewReply, ready_pages) == 36);

// Trailed by name_bytes of name (no NUL).
struct SnapshotRequest {
  std::uint64_t branch = 0;
  std::uint32_t name_bytes = 0;
  std::uint32_t reserved = 0;
};
static_assert(sizeof(SnapshotRequest) == 16);

struct SnapshotReply {
  char cid[kCidBytes] = {};
  std::uint64_t n_tokens = 0;
  std::uint64_t n_pages = 0;
  std::uint8_t created = 0;  // 0: an identical snapshot existed
  std::uint8_t reserved[7] = {};
};
static_assert(sizeof(SnapshotReply) == 96);

// A branch (kind 0) or a CID / ref name (kind 1, trailed by name_bytes of text).
struct SourceWire {
  std::uint8_t kind = 0;
  std::uint8_t reserved[3] = {};
  std::uint32_t name_bytes = 0;
  std::uint64_t branch = 0;
};
static_assert(sizeof(SourceWire) == 16);

// Followed by a SourceWire (and its name).
struct ForkRequest {
  std::uint32_t n = 0;  // 1..1024
  std::uint32_t reserved = 0;
};
static_assert(sizeof(ForkRequest) == 8);

// Trailed by n uint64 branch ids.
struct ForkReply {
  char source[kCidBytes] = {};  // empty when forked from a branch
  std::uint32_t n = 0;
  std::uint32_t reserved = 0;
  std::uint64_t n_tokens = 0;  // every child's length
};
static_assert(sizeof(ForkReply) == 88);

// Trailed by name_bytes of CID or ref name.
struct CheckoutRequest {
  std::uint32_t name_bytes = 0;
  std::uint32_t reserved = 0;
};
static_assert(sizeof(CheckoutRequest) == 8);

struct CheckoutReply {
  std::uint64_t branch = 0;
  char cid[kCidBytes] = {};
  std::uint64_t n_tokens = 0;  // the new branch's length
};
static_assert(sizeof(CheckoutReply) == 88);

// --- keyed pages (1.2) ----------------------------------------------------------------
// Keys are 32-byte binary SHA-256 prefix keys (DESIGN §4). Page ids that a request names
// must be held by the requesting lease (alloc / lookup with hold); anything else is
// kInvalidArgument and changes nothing. n_keys / n_pages <= kMaxKeysPerRequest.

// kPagesLookupKeys: trailed by n_keys keys, then (3.1) an optional Namespace. Reply:
// PagesReply.
struct PagesLookupKeysRequest {
  std::uint32_t n_keys = 0;
  std::uint8_t hold = 1;  // 0 or 1: the lease holds each returned page
  std::uint8_t reserved[3] = {};
};
static_assert(sizeof(PagesLookupKeysRequest) == 8);

// kPagesAlloc. Reply: PagesReply.
struct PagesAllocRequest {
  std::uint32_t n_pages = 0;
  std::uint32_t reserved = 0;
};
static_assert(sizeof(PagesAllocRequest) == 8);

// Reply of kPagesLookupKeys and kPagesAlloc; trailed by n_pages uint32 page ids.
struct PagesReply {
  std::uint32_t n_pages = 0;
  std::uint32_t reserved = 0;
};
static_assert(sizeof(PagesReply) == 8);

// kPagesPublish: trailed by n keys, then n uint32 page ids (pages[i] under keys[i]), then
// (3.1) an optional Namespace; parent_key is looked up in that namespace.
struct PagesPublishRequest {
  std::uint32_t n = 0;
  std::uint8_t has_parent = 0;  // 0 or 1: keys[0] chains after parent_key
  std::uint8_t reserved[3] = {};
  std::uint8_t parent_key[kKeyBytes] = {};
};
static_assert(sizeof(PagesPublishRequest) == 40);

struct PagesPublishReply {
  std::uint32_t new_keys = 0;  // keys that were not in the index before
  std::uint32_t reserved = 0;
};
static_assert(sizeof(PagesPublishReply) == 8);

// kPagesRelease: trailed by n_pages uint32 page ids. Empty reply body.
struct PagesReleaseRequest {
  std::uint32_t n_pages = 0;
  std::uint32_t reserved = 0;
};
static_assert(sizeof(PagesReleaseRequest) == 8);

#pragma pack(pop)

}  // namespace pf::wire
