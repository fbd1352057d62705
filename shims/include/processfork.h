/* libprocessfork: the C ABI of ProcessFork's client library (DESIGN §3 shims/).
 *
 * A pf_client is one session with the ProcessFork daemon over its Unix socket. It maps
 * the daemon's KV page pool into this process, so page p lives at
 * pf_page_ptr(client, p) == pool base + p * page_bytes, the same layout as in every other
 * attached process; fork, snapshot, checkout and merge are metadata operations on the
 * daemon. Full reference: docs/c_api.md.
 *
 * Contracts that hold for every function:
 *  - Never aborts, never throws, never raises a signal in the host process: every failure
 *    is a pf_result, with detail in pf_last_error_message().
 *  - A call that fails changes nothing (the exceptions are named at the function).
 *  - NULL pointers and bad sizes are PF_INVALID_ARGUMENT; a daemon that went away is
 *    PF_UNAVAILABLE until it is back: a client reconnects to a restarted daemon on the
 *    same socket (pf_client_generation counts the reconnections) and refuses ids of the
 *    earlier daemon with PF_STALE (docs/c_api.md "Daemon restarts").
 *  - Caller buffers: a function that fills a caller buffer takes its capacity (in elements)
 *    and, where the size is not known in advance, reports the size needed. A too-small
 *    buffer is PF_INVALID_ARGUMENT with the needed size reported (see docs/c_api.md,
 *    "Buffers"); where the size is known before the request (append, fork, CIDs) it is
 *    checked before anything is sent.
 *  - Blocking: every call but pf_page_ptr (on a mapped page), pf_pool_info,
 *    pf_mapping_info and the pure helpers is one or more round trips to the daemon, bounded
 *    by the connect timeout.
 *  - Threading: a pf_client may be used from several threads; its requests are serialized
 *    (one in flight per client). pf_disconnect must not race with other calls on the same
 *    client. Use one client per thread for parallel requests.
 *  - GPU fences (ABI 1.5; docs/cuda.md "Streams and fences"): the calls that seal pages
 *    (pf_commit, pf_snapshot, pf_fork, pf_fork_branches, pf_merge, pf_pages_publish,
 *    pf_pages_publish_ns) make the daemon digest or share page bytes as
 *    they are at that moment. The CLIENT synchronizes its own writes first: every kernel or
 *    copy of the client's that writes those pages (on any stream, through pf_page_ptr) must
 *    have completed, e.g. cudaStreamSynchronize on the stream that wrote them, before the
 *    sealing call is made. The LIBRARY synchronizes its own: pf_kv_copy returns only when
 *    its copy is complete (it synchronizes the stream it ran on), and a sealing call first
 *    waits for any copy of this client's pf_kv_copy that a failure left running. On a host
 *    pool there is nothing to wait for and the fence costs nothing.
 */
#ifndef PROCESSFORK_H_
#define PROCESSFORK_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PF_API __attribute__((visibility("default")))
#else
#define PF_API
#endif

/* The ABI version of this header: the library's major must equal it; a library of a
 * higher minor accepts everything a lower minor's header passes (docs/c_api.md). */
#define PF_ABI_VERSION_MAJOR 1
#define PF_ABI_VERSION_MINOR 6

/* "sha256:" + 64 hex digits + NUL. */
#define PF_CID_BYTES 72
/* Fork children per call: 1..PF_MAX_FORK. */
#define PF_MAX_FORK 1024

/* Result codes. The values equal the daemon's status codes (pf::Code), so an error from
 * the daemon reaches the caller unchanged. */
typedef enum pf_result {
  PF_OK = 0,
  PF_INVALID_ARGUMENT = 1, /* malformed or out-of-range argument; too-small buffer */
  PF_NOT_FOUND = 2,        /* unknown branch, CID, ref or page */
  PF_ALREADY_EXISTS = 3,
  PF_OUT_OF_MEMORY = 4,     /* the pool has no free pages; or host memory */
  PF_UNAVAILABLE = 5,       /* no daemon, daemon gone, timeout */
  PF_UNSUPPORTED = 6,       /* protocol/ABI version mismatch, newer struct than this library */
  PF_SYSTEM = 7,            /* an OS call failed */
  PF_PROTOCOL = 8,          /* the daemon broke the wire protocol */
  PF_PERMISSION_DENIED = 9, /* the daemon refused this uid */
  PF_CONFLICT = 10,         /* the branch belongs to another client's lease; ref in use */
  PF_DRIVER = 11,           /* the GPU driver failed while mapping the pool */
  PF_INTERNAL = 12,         /* a bug in ProcessFork (an invariant broke) */
  PF_DATA_CORRUPT = 13,     /* a snapshot's page failed its digest check and is quarantined */
  PF_STALE = 14             /* a branch id or page hold of an earlier daemon boot epoch (the
                               daemon restarted); refused without a round trip (ABI 1.4) */
} pf_result;

typedef enum pf_dtype {
  PF_DTYPE_BF16 = 0,
  PF_DTYPE_FP16 = 1,
  PF_DTYPE_FP32 = 2,
  PF_DTYPE_FP8_E4M3 = 3,
  PF_DTYPE_FP8_E5M2 = 4
} pf_dtype;

typedef struct pf_client pf_client;
typedef uint64_t pf_branch_id;

/* ---- errors and versions ------------------------------------------------------------- */

/* "PF_OK", "PF_NOT_FOUND", ...; "PF_UNKNOWN_RESULT" for other values. Static storage. */
PF_API const char* pf_result_string(pf_result result);
/* The message of the most recent failed call made by the calling thread (on any client,
 * pf_connect included); "" when none failed yet. `client` may be NULL. The pointer stays
 * valid until the calling thread's next failing call. */
PF_API const char* pf_last_error_message(const pf_client* client);
/* Where the most recent failed call of the calling thread failed inside libprocessfork:
 * "file:line <- file:line ..." from the innermost frame outwards ("" when the error has no
 * trail, e.g. a bad argument caught at the boundary). Same lifetime as
 * pf_last_error_message. For bug reports; the daemon logs its own internal errors with
 * their trail. (ABI 1.1) */
PF_API const char* pf_last_error_trail(const pf_client* client);
/* (major << 16) | minor of the library's ABI. */
PF_API uint32_t pf_abi_version(void);
/* The library's release ("0.1.0"). Static storage. */
PF_API const char* pf_version_string(void);

/* ---- dtypes (the one table of base/dtype.h) ------------------------------------------ */

/* "bf16", "fp16", "fp32", "fp8_e4m3", "fp8_e5m2"; NULL for a value outside enum pf_dtype.
 * Static storage. */
PF_API const char* pf_dtype_name(uint32_t dtype);
/* Bytes per element; 0 for a value outside enum pf_dtype. */
PF_API size_t pf_dtype_bytes(uint32_t dtype);

/* ---- connecting ---------------------------------------------------------------------- */

/* Do not map the pool during pf_connect (tools that only manage branches and snapshots);
 * pf_attach or the first pf_page_ptr maps it later. */
#define PF_CONNECT_NO_ATTACH 0x1u

/* Do not reconnect when the daemon goes away: every later call is PF_UNAVAILABLE (the
 * behaviour before ABI 1.4). */
#define PF_CONNECT_NO_RECONNECT 0x2u

/* Size-tagged: set struct_size = sizeof(pf_connect_config) (PF_CONNECT_CONFIG_INIT does).
 * Fields after socket_path may be left out by an older caller (smaller struct_size): they
 * take their defaults. A struct_size larger than this library knows is PF_UNSUPPORTED. */
typedef struct pf_connect_config {
  uint32_t struct_size;
  uint32_t timeout_ms;     /* per send / receive; 0 = 10000 ms */
  const char* socket_path; /* NULL or "" = $PROCESSFORK_SOCKET, else the daemon's default */
  uint32_t flags;          /* PF_CONNECT_* */
  uint32_t spin_us;        /* busy-wait up to this long for each reply before sleeping
                              (0 = never; try 50 on a dedicated core): lower latency, more CPU */
  /* (ABI 1.4) How long the call that finds the daemon gone keeps trying to reconnect to the
   * same socket path (backoff while it is absent or refusing; each attempt also bounded by
   * timeout_ms); 0 = 3000 ms. At most 600000. */
  uint32_t reconnect_timeout_ms;
  uint32_t reserved; /* 0 */
} pf_connect_config;

#define PF_CONNECT_CONFIG_INIT \
  { (uint32_t)sizeof(pf_connect_config), 0, NULL, 0, 0, 0, 0 }

/* Connects, says HELLO, receives a lease and (unless PF_CONNECT_NO_ATTACH) maps the pool.
 * `config` may be NULL (all defaults). On success *out is a new client owned by the caller
 * (end it with pf_disconnect). PF_UNAVAILABLE when no daemon listens at the socket. */
PF_API pf_result pf_connect(const pf_connect_config* config, pf_client** out);
/* Ends the session: the daemon frees every branch of this client that was neither
 * snapshotted nor detached, and the pool is unmapped (page pointers become invalid).
 * NULL is a no-op. */
PF_API void pf_disconnect(pf_client* client);

/* ---- the pool and its mapping -------------------------------------------------------- */

/* Size-tagged like pf_connect_config: set struct_size; fields past it are not written. */
typedef struct pf_pool_info {
  uint32_t struct_size;
  uint32_t layers;
  uint32_t kv_heads;
  uint32_t head_dim;
  uint32_t page_tokens;
  uint32_t dtype;      /* pf_dtype */
  uint64_t page_bytes; /* [layer][K|V][token][kv_head][head_dim] of `dtype` */
  uint64_t chunk_bytes;
  uint64_t capacity_bytes; /* the reserved range: page p at base + p * page_bytes */
  uint64_t capacity_pages;
  uint64_t lease; /* this session's lease id (branch owner) */
  uint32_t daemon_pid;
  uint16_t protocol_major;
  uint16_t protocol_minor;
  char backend[16];       /* "host" or "cuda" */
  char device[16];        /* "host" or "cuda:N", N this process's ordinal of the pool's GPU */
  uint32_t device_memory; /* 1: pages are device memory (CUDA), 0: ordinary host memory */
  uint32_t boot_epoch;    /* (ABI 1.4) the daemon's boot epoch: the high 32 bits of its ids */
} pf_pool_info;

/* From HELLO; no round trip. lease, daemon_pid, protocol_minor and boot_epoch are the
 * current session's: they change when the client reconnects. */
PF_API pf_result pf_pool_info_get(const pf_client* client, pf_pool_info* out);
/* How many times this client reconnected to a restarted daemon (0: never). When it
 * changes, the branches, page holds and writable pages of the earlier session are gone
 * and the pool is mapped at a new base (pf_mapping_info_get): re-read page pointers. No
 * round trip, lock-free; 0 for NULL. (ABI 1.4) */
PF_API uint64_t pf_client_generation(const pf_client* client);

typedef struct pf_mapping_info {
  uint32_t attached; /* 1 once the pool is mapped */
  uint32_t mapped_chunks;
  uint64_t mapped_bytes;
  uint64_t epoch;        /* the pool epoch the mapping reflects */
  uint64_t latest_epoch; /* the newest epoch the daemon reported */
  void* base;            /* pool base address (NULL before attach) */
} pf_mapping_info;

/* This process's view of the pool; no round trip. */
PF_API pf_result pf_mapping_info_get(const pf_client* client, pf_mapping_info* out);
/* Maps the pool, or brings the mapping up to date with the daemon (idempotent). */
PF_API pf_result pf_attach(pf_client* client);
/* *out = the address of page `page` in this process (a CUDA device address on a CUDA
 * pool). No round trip when the page is mapped; otherwise re-attaches first (a page id
 * learned from another process after the pool grew). Page ids from this client's own
 * replies are always mapped current; for a page id learned elsewhere, call pf_attach
 * first if the pool may have shrunk and grown again since this client's last request.
 * The address stays valid while the page is held by a branch or snapshot and the client
 * is connected. PF_INVALID_ARGUMENT beyond the pool's capacity, PF_NOT_FOUND outside the
 * daemon's current chunks. */
PF_API pf_result pf_page_ptr(pf_client* client, uint32_t page, void** out);

/* Bits of pf_page_access's *flags. */
#define PF_PAGE_WRITABLE 0x1u /* this session may write the page (below) */
#define PF_PAGE_GUARDED                                                \
  0x2u /* stores through this process's mapping fault (SIGSEGV) unless \
          the page is writable: the page size allows protection */
/* What this session may do with page `page` (docs/c_api.md "Sealed pages"). Writable: a
 * page of this client's pf_append write runs or of pf_pages_alloc, until this client seals
 * or frees it (commit of a full page, snapshot, fork or merge of the branch, truncate,
 * free, detach, publish, release). Every other page — a snapshot's, a fork's or
 * checkout's base, a reused prefix, another client's — is read-only: pf_kv_copy
 * (PF_KV_STORE) refuses it. No round trip; any page id below the capacity (PF_INVALID_ARGUMENT
 * beyond it). (ABI 1.2) */
PF_API pf_result pf_page_access(pf_client* client, uint32_t page, uint32_t* flags);

/* ---- branches ------------------------------------------------------------------------ */

typedef struct pf_new_branch {
  pf_branch_id branch;
  uint64_t n_tokens;      /* tokens the branch holds: the reused prefix */
  uint64_t reused_tokens; /* whole cached pages reused from the prefix index */
} pf_new_branch;

/* A new branch owned by this client. With tokens, the longest cached prefix of whole pages
 * is reused (no copy); the branch holds exactly those tokens and the caller appends the
 * rest (tokens[out->reused_tokens..]). tokens may be NULL when n_tokens == 0. */
PF_API pf_result pf_branch_create(pf_client* client, const uint32_t* tokens, size_t n_tokens,
                                  pf_new_branch* out);

/* Prefix-index namespaces (ABI 1.3, protocol 3.1; docs/c_api.md "Namespaces"). A namespace
 * is a PF_NAMESPACE_BYTES-byte tag that partitions the daemon's prefix index: pages cached
 * or published in one namespace are never reused from another, even for identical tokens
 * or keys. Engines put in it everything their KV depends on besides the token ids (model
 * weights, LoRA adapter, cache salt, prompt embeddings). NULL, or an all-zero tag, is the
 * default namespace: what the calls without _ns use. A non-default namespace with a daemon
 * of protocol 3.0 is PF_UNSUPPORTED, nothing sent. */
#define PF_NAMESPACE_BYTES 32

/* pf_branch_create in namespace `ns` (PF_NAMESPACE_BYTES bytes, or NULL): the prefix
 * lookup, and every later commit of the branch (and of its forks, and of branches checked
 * out from its snapshots), act on that namespace. */
PF_API pf_result pf_branch_create_ns(pf_client* client, const uint32_t* tokens, size_t n_tokens,
                                     const uint8_t* ns, pf_new_branch* out);

/* Where the KV of appended tokens goes: tokens [first_token, first_token + count) live in
 * page `page`, slots [first_slot, first_slot + count). Inside a page, token slot s of layer
 * l is at byte ((l * 2 + half) * page_tokens + s) * kv_heads * head_dim * dtype_size
 * (half 0 = K, 1 = V). */
typedef struct pf_write_run {
  uint32_t page;
  uint32_t first_slot;
  uint32_t count;
  uint32_t reserved;
  uint64_t first_token;
} pf_write_run;

typedef struct pf_append_result {
  uint64_t first_token; /* position of the first appended token */
  uint32_t pages_added; /* pages taken from the pool */
  uint32_t copied_page; /* 1: the shared last page was copied first (copy-on-write) */
  size_t n_runs;        /* runs written to the caller's array */
} pf_append_result;

/* The most write runs pf_append can return for n_tokens tokens: n_tokens / page_tokens + 2
 * (0 for 0 tokens). */
PF_API size_t pf_append_max_runs(const pf_client* client, size_t n_tokens);
/* Appends tokens to a branch of this client and returns where to write their KV. The
 * runs name only pages exclusive to this branch; write them before the next operation on
 * the branch (commit, snapshot, fork, truncate, append). runs_capacity must be at least
 * pf_append_max_runs(n_tokens): otherwise PF_INVALID_ARGUMENT before anything is sent,
 * with out->n_runs set to that bound (when out is not NULL). */
PF_API pf_result pf_append(pf_client* client, pf_branch_id branch, const uint32_t* tokens,
                           size_t n_tokens, pf_write_run* runs, size_t runs_capacity,
                           pf_append_result* out);
/* Seals the branch's full pages (digest) and offers them to the prefix index. */
PF_API pf_result pf_commit(pf_client* client, pf_branch_id branch);
/* Keeps the first n_tokens tokens. */
PF_API pf_result pf_truncate(pf_client* client, pf_branch_id branch, uint64_t n_tokens);
/* Frees a branch of this client (or a detached one). */
PF_API pf_result pf_branch_free(pf_client* client, pf_branch_id branch);
/* Detaches a branch from this client's lease: it outlives the connection until freed. */
PF_API pf_result pf_detach(pf_client* client, pf_branch_id branch);

typedef struct pf_branch_info {
  pf_branch_id branch;
  uint64_t owner; /* lease id; 0 = detached */
  uint64_t n_tokens;
  uint64_t n_pages;
  uint32_t fill_in_last_page;
  /* Leading pages whose bytes were readable when the daemon answered (ABI 1.6; the former
   * `reserved` field): pages [0, ready_pages) may be read, later ones are still arriving
   * from the daemon's store (a checkout of a snapshot that was paged out). Always n_pages
   * from pf_branch_view, and from a daemon older than protocol 3.4. */
  uint32_t ready_pages;
} pf_branch_info;

/* A branch's state, and optionally its page ids and tokens. pages (tokens) may be NULL to
 * skip them. info is filled whenever the branch exists, also when a buffer is too small:
 * pages_capacity < info->n_pages (or tokens_capacity < info->n_tokens with tokens given)
 * is PF_INVALID_ARGUMENT, and info says what is needed. Returns once every page of the
 * branch is readable: pf_branch_view_ready(..., UINT64_MAX, ...). */
PF_API pf_result pf_branch_view(pf_client* client, pf_branch_id branch, pf_branch_info* info,
                                uint32_t* pages, size_t pages_capacity, uint32_t* tokens,
                                size_t tokens_capacity);

/* pf_branch_view that returns as soon as the first min(wait_pages, n_pages) pages of the
 * branch are readable (ABI 1.6, protocol 3.4). A checkout of a snapshot that lives only in
 * the daemon's store returns at once and its pages arrive in page order in the background;
 * an engine can start on the leading pages while the rest arrive.
 *  - wait_pages 0: no wait; UINT64_MAX (or any value >= n_pages): every page, exactly
 *    pf_branch_view. Every page id is returned either way; info->ready_pages (>= the pages
 *    waited for) says how many leading pages may be read; read later ones only after a
 *    further call reports them ready.
 *  - Blocks the calling thread (and this client's other requests, which are serialized)
 *    until the pages are readable, however long the disk takes: the daemon answers each
 *    request within one second with what is ready and the library asks again, so no reply
 *    waits longer than timeout_ms. The daemon blocks only this connection.
 *  - Errors as pf_branch_view, plus PF_DATA_CORRUPT (a page waited for could not be read
 *    from the store: its blob is missing or failed its digest check; the message names it).
 *  - With a daemon older than protocol 3.4 every page is resident: the call waits for
 *    nothing and reports ready_pages == n_pages. */
PF_API pf_result pf_branch_view_ready(pf_client* client, pf_branch_id branch, uint64_t wait_pages,
                                      pf_branch_info* info, uint32_t* pages, size_t pages_capacity,
                                      uint32_t* tokens, size_t tokens_capacity);

/* ---- snapshots, fork, checkout, merge ------------------------------------------------- */

typedef struct pf_snapshot_result {
  char cid[PF_CID_BYTES]; /* NUL-terminated */
  uint64_t n_tokens;
  uint64_t n_pages;
  uint32_t created; /* 0: an identical snapshot existed (same CID) */
  uint32_t reserved;
} pf_snapshot_result;

/* Seals and pins the branch's pages under a content-addressed CID. name may be NULL; a
 * name is also a ref to the snapshot (moved to it if it existed; PF_INVALID_ARGUMENT for a
 * name that is not a ref name), which blocks pf_unpin until pf_ref_delete. */
PF_API pf_result pf_snapshot(pf_client* client, pf_branch_id branch, const char* name,
                             pf_snapshot_result* out);

/* A starting point: a branch (name == NULL) or a snapshot by CID or ref name. */
typedef struct pf_source {
  const char* name;
  pf_branch_id branch;
} pf_source;

static inline pf_source pf_source_branch(pf_branch_id branch) {
  pf_source s;
  s.name = NULL;
  s.branch = branch;
  return s;
}
static inline pf_source pf_source_named(const char* cid_or_ref) {
  pf_source s;
  s.name = cid_or_ref;
  s.branch = 0;
  return s;
}

/* n (1..PF_MAX_FORK) new branches of this client at the source's state; metadata only.
 * branches_capacity must be >= n (checked before sending). source_cid (may be NULL, else
 * at least PF_CID_BYTES, capacity in source_cid_capacity) receives the CID forked from
 * ("" when the source was a branch). */
PF_API pf_result pf_fork(pf_client* client, const pf_source* source, uint32_t n,
                         pf_branch_id* branches, size_t branches_capacity, char* source_cid,
                         size_t source_cid_capacity);
/* A new branch of this client at a snapshot (CID or ref). cid (may be NULL, else
 * cid_capacity >= PF_CID_BYTES) receives the resolved CID. */
PF_API pf_result pf_checkout(pf_client* client, const char* cid_or_ref, pf_branch_id* branch,
                             char* cid, size_t cid_capacity);

/* What pf_fork_branches and pf_checkout_branch report besides the branch ids. (ABI 1.1) */
typedef struct pf_fork_result {
  uint64_t n_tokens; /* every new branch's length */
  uint32_t n;        /* branches created */
  uint32_t reserved;
  char source[PF_CID_BYTES]; /* the CID forked from; "" when the source was a branch */
} pf_fork_result;

typedef struct pf_checkout_result {
  pf_branch_id branch;    /* a new branch of this client */
  uint64_t n_tokens;      /* its length */
  char cid[PF_CID_BYTES]; /* the snapshot checked out (a ref resolved) */
} pf_checkout_result;

/* pf_fork with the children's length in the same round trip (out must not be NULL). */
PF_API pf_result pf_fork_branches(pf_client* client, const pf_source* source, uint32_t n,
                                  pf_branch_id* branches, size_t branches_capacity,
                                  pf_fork_result* out);
/* pf_checkout with the branch's length in the same round trip (out must not be NULL). */
PF_API pf_result pf_checkout_branch(pf_client* client, const char* cid_or_ref,
                                    pf_checkout_result* out);

typedef enum pf_merge_outcome {
  PF_MERGE_FAST_FORWARD = 0,
  PF_MERGE_THREE_WAY = 1
} pf_merge_outcome;

typedef struct pf_merge_result {
  uint32_t outcome; /* pf_merge_outcome */
  uint32_t reserved;
  pf_branch_id branch;         /* a new branch of this client holding the result */
  uint64_t common_tokens;      /* common token prefix of from and into (if reported) */
  uint64_t n_recompute_tokens; /* tokens the engine must prefill on top of `branch` */
  char cid[PF_CID_BYTES];      /* the result's snapshot */
  char base[PF_CID_BYTES];     /* nearest common ancestor; "" if none */
} pf_merge_result;

/* DESIGN §5 merge. recompute_tokens (capacity in elements; may be NULL with 0) receives
 * the tokens to prefill. If they do not fit, the result branch is freed again and the call
 * is PF_INVALID_ARGUMENT with out->n_recompute_tokens = the size needed; snapshots the
 * merge made stay (they are content-addressed: a retry returns the same CIDs). */
PF_API pf_result pf_merge(pf_client* client, const pf_source* from, const pf_source* into,
                          pf_merge_result* out, uint32_t* recompute_tokens, size_t capacity);

/* ---- JSON answers --------------------------------------------------------------------
 * These return the DESIGN §6 HTTP answer of the operation, NUL-terminated (the daemon
 * answers in binary; libprocessfork renders the same JSON as the HTTP port, with the same
 * code), in
 * `json` (capacity in bytes). *needed (may be NULL) receives the bytes needed including
 * the NUL. json == NULL with capacity 0 asks for the size only (PF_OK). A non-NULL buffer
 * that is too small is PF_INVALID_ARGUMENT. All are read-only on the daemon. */

/* {common_tokens, shared_pages, a_only_pages, b_only_pages} */
PF_API pf_result pf_diff(pf_client* client, const pf_source* a, const pf_source* b, char* json,
                         size_t capacity, size_t* needed);
/* {entries: [{cid, name, parents, n_tokens}]} */
PF_API pf_result pf_log(pf_client* client, const char* cid_or_ref, char* json, size_t capacity,
                        size_t* needed);
/* The snapshot's canonical manifest (docs/formats.md). */
PF_API pf_result pf_manifest(pf_client* client, const char* cid_or_ref, char* json, size_t capacity,
                             size_t* needed);
/* The daemon's list of snapshots. */
PF_API pf_result pf_snapshots(pf_client* client, char* json, size_t capacity, size_t* needed);
/* The daemon's list of refs. */
PF_API pf_result pf_refs_list(pf_client* client, char* json, size_t capacity, size_t* needed);
/* {status, version, backend, device} */
PF_API pf_result pf_health(pf_client* client, char* json, size_t capacity, size_t* needed);
/* {branches: [{branch, n_tokens, n_pages, fill_in_last_page, base, parents, owner}]}: every
 * branch of the daemon (PF_UNSUPPORTED with a daemon older than protocol 1.1). */
PF_API pf_result pf_branches(pf_client* client, char* json, size_t capacity, size_t* needed);
/* GET /v1/pool's answer. */
PF_API pf_result pf_pool_json(pf_client* client, char* json, size_t capacity, size_t* needed);

/* ---- refs, unpin --------------------------------------------------------------------- */

/* Points ref `name` at a CID (or at what another ref names). */
PF_API pf_result pf_ref_set(pf_client* client, const char* name, const char* cid_or_ref);
/* cid_capacity >= PF_CID_BYTES. */
PF_API pf_result pf_ref_get(pf_client* client, const char* name, char* cid, size_t cid_capacity);
PF_API pf_result pf_ref_delete(pf_client* client, const char* name);
/* Drops a snapshot's pin (PF_CONFLICT while a ref names it). */
PF_API pf_result pf_unpin(pf_client* client, const char* cid);
/* Blocks until the snapshot (CID or ref) is durable in the daemon's store (serve --store):
 * its pages and then its manifest are committed on disk, so it survives a daemon restart or
 * crash. PF_UNAVAILABLE when the daemon runs without a store; the write's error if it failed.
 * Since ABI 1.4 (protocol 3.2). */
PF_API pf_result pf_wait_durable(pf_client* client, const char* cid_or_ref);

/* ---- pool statistics, gc -------------------------------------------------------------- */

/* Size-tagged: set struct_size; fields past it are not written. */
typedef struct pf_pool_stats {
  uint32_t struct_size;
  uint32_t reserved;
  uint64_t capacity_pages;
  uint64_t used_pages;
  uint64_t shared_pages;
  uint64_t cached_pages; /* held by the prefix index alone (evictable) */
  uint64_t free_pages;
  uint64_t page_bytes;
  uint64_t chunk_bytes;
} pf_pool_stats;

PF_API pf_result pf_pool_stats_get(pf_client* client, pf_pool_stats* out);

/* Drop every evictable cached prefix page too. */
#define PF_GC_DROP_CACHE 0x1u

typedef struct pf_gc_result {
  uint64_t evicted_pages;
  uint64_t released_chunks;
} pf_gc_result;

/* Frees what nothing holds and gives empty trailing chunks back; out may be NULL. */
PF_API pf_result pf_gc(pf_client* client, uint32_t flags, pf_gc_result* out);

/* ---- KV layout copies (kernels/kv_layout.h, docs/c_api.md "KV layout copies") ----------
 * Moves KV between pool pages (page-first [layer][K|V][token][kv_head][head_dim]) and an
 * engine's own per-layer K and V tensors, with the page kernels of the pool's device (host
 * memcpy, or the CUDA kernel on a cuda:N pool). For layer l, the K row of engine token t and
 * kv head h starts at
 *   k_ptrs[l] + (t / block_tokens) * block_stride + (t % block_tokens) * token_stride
 *             + h * head_stride
 * (V from v_ptrs[l]) and holds head_dim contiguous elements of the pool's dtype.
 * No round trip: pages are addressed through this process's mapping of the pool. */
typedef struct pf_kv_layout {
  uint32_t struct_size;   /* sizeof(pf_kv_layout) */
  uint32_t n_layers;      /* must equal the pool's layers */
  const uint64_t* k_ptrs; /* [n_layers] addresses (device addresses on a CUDA pool) */
  const uint64_t* v_ptrs; /* [n_layers] */
  uint64_t block_tokens;  /* engine tokens per block (>= 1) */
  int64_t block_stride;   /* bytes, >= 0 */
  int64_t token_stride;   /* bytes, >= 0 */
  int64_t head_stride;    /* bytes, >= 0 */
  uint32_t elem_bytes;    /* bytes per element: must equal the pool dtype's */
  uint32_t reserved;      /* 0 */
} pf_kv_layout;

/* Tokens [engine_token, engine_token + count) of the engine <-> slots
 * [page_slot, page_slot + count) of page `page`. */
typedef struct pf_kv_run {
  uint32_t page;
  uint32_t page_slot;
  uint32_t count; /* >= 1 */
  uint32_t reserved;
  uint64_t engine_token;
} pf_kv_run;

typedef enum pf_kv_direction {
  PF_KV_STORE = 0, /* engine tensors -> pages: only into pages this session may write
                      (pf_page_access: append's write runs, alloc'd pages); any other page
                      is PF_PERMISSION_DENIED (sealed pages are immutable, DESIGN §2) */
  PF_KV_LOAD = 1   /* pages -> engine tensors */
} pf_kv_direction;

/* pf_kv_copy's cuda_stream value for the library's own (non-blocking) stream (ABI 1.5). All
 * bits set: never a valid cudaStream_t. */
#define PF_CUDA_STREAM_OWN ((void*)~(uintptr_t)0)

/* Copies layers [layer_begin, layer_end) of every run. `cuda_stream` orders a CUDA copy after
 * the engine's work: pass the cudaStream_t that wrote (for a store) or will read (for a load)
 * the tensors. NULL is the legacy default stream, as in CUDA (PyTorch's default stream,
 * torch.cuda.current_stream().cuda_stream == 0); PF_CUDA_STREAM_OWN is the library's own
 * non-blocking stream, which waits for none of the caller's work (ABI 1.4 and earlier took
 * NULL to mean that stream: a store could read K/V before the model wrote them). Ignored on
 * a host pool, PF_CUDA_STREAM_OWN included. Blocking: returns when the copy is complete (the
 * stream it ran on is synchronized). bytes_copied may be NULL.
 * PF_INVALID_ARGUMENT for a malformed layout or run and PF_PERMISSION_DENIED for a store into
 * a page this session may not write (checked before any byte moves: nothing is copied),
 * PF_UNAVAILABLE when the pool's device kernels cannot run here (a CUDA pool in
 * a build without CUDA or without a GPU). */
PF_API pf_result pf_kv_copy(pf_client* client, const pf_kv_layout* layout, const pf_kv_run* runs,
                            size_t n_runs, uint32_t layer_begin, uint32_t layer_end,
                            pf_kv_direction direction, void* cuda_stream, uint64_t* bytes_copied);
/* ---- end of KV layout copies ------------------------------------------------------------ */

/* ---- keyed pages (protocol 1.2; docs/c_api.md "Keyed pages") ---------------------------
 * Pages addressed by their prefix key (DESIGN §4: key_i = SHA-256(key_{i-1} || the page's
 * token ids as uint32 little-endian), the first page without a parent; equal to SGLang
 * HiCache's page hashes). Keys cross this ABI as PF_KEY_BYTES-byte binary digests, n keys
 * back to back in one array; pf_key_from_hex / pf_key_to_hex convert the 64-digit hex form.
 * A *hold* is a reference this client's session keeps on a page: a held page is never
 * evicted or reused. Holds end with pf_pages_release, pf_pages_publish (for the published
 * pages), or when the session ends (pf_disconnect, or the process dies). Pages published by
 * key are found by token lookups too (pf_branch_create reuses them). Every call checks all
 * of its arguments before changing anything; PF_UNSUPPORTED with a daemon older than
 * protocol 1.2. At most PF_MAX_KEYS_PER_CALL keys or pages per call. */
#define PF_KEY_BYTES 32
#define PF_MAX_KEYS_PER_CALL 65536
/* pf_pages_lookup_keys flag: hold each returned page. */
#define PF_LOOKUP_HOLD 0x1u

/* Page ids of the longest LEADING run of `keys` (n_keys * PF_KEY_BYTES bytes) present in the
 * daemon's prefix index: pages[i] holds keys[i] for i < *n_found. With PF_LOOKUP_HOLD this
 * client holds each returned page. pages_capacity must be >= n_keys (checked before
 * sending). keys may be NULL when n_keys == 0. */
PF_API pf_result pf_pages_lookup_keys(pf_client* client, const uint8_t* keys, size_t n_keys,
                                      uint32_t flags, uint32_t* pages, size_t pages_capacity,
                                      size_t* n_found);
/* pf_pages_lookup_keys within namespace `ns` (PF_NAMESPACE_BYTES bytes, or NULL). */
PF_API pf_result pf_pages_lookup_keys_ns(pf_client* client, const uint8_t* keys, size_t n_keys,
                                         const uint8_t* ns, uint32_t flags, uint32_t* pages,
                                         size_t pages_capacity, size_t* n_found);
/* n fresh exclusive pages held by this client (pages_capacity >= n), to write through
 * pf_page_ptr (or pf_kv_copy) and then publish. The pool grows, then evicts least recently
 * used cached pages, as for pf_append; PF_OUT_OF_MEMORY takes nothing. */
PF_API pf_result pf_pages_alloc(pf_client* client, size_t n, uint32_t* pages,
                                size_t pages_capacity);
/* Seals pages[i] (content digest; immutable from now on) and records it under keys[i]
 * (n keys, n * PF_KEY_BYTES bytes), chained after parent_key (PF_KEY_BYTES bytes, or NULL:
 * keys[0] is the first page of a sequence). A key already present keeps its page (the new
 * page is freed). Ends this client's holds on `pages`. *n_new (may be NULL) = how many keys
 * were new. PF_INVALID_ARGUMENT, nothing changed, when a page is not an unpublished page of
 * pf_pages_alloc held by this client, or a key or page is listed twice. */
PF_API pf_result pf_pages_publish(pf_client* client, const uint8_t* keys, const uint32_t* pages,
                                  size_t n, const uint8_t* parent_key, size_t* n_new);
/* pf_pages_publish within namespace `ns` (PF_NAMESPACE_BYTES bytes, or NULL); parent_key is
 * looked up in that namespace. */
PF_API pf_result pf_pages_publish_ns(pf_client* client, const uint8_t* keys, const uint32_t* pages,
                                     size_t n, const uint8_t* parent_key, const uint8_t* ns,
                                     size_t* n_new);
/* Ends one hold per listed page (a page listed k times ends k holds). PF_INVALID_ARGUMENT,
 * nothing changed, when this client holds a page fewer times than listed. */
PF_API pf_result pf_pages_release(pf_client* client, const uint32_t* pages, size_t n);
/* Parses 64 hex digits (either case; nothing else, no NUL needed after them) into
 * PF_KEY_BYTES bytes. Pure; no client. */
PF_API pf_result pf_key_from_hex(const char* hex, uint8_t* key);
/* Writes the 64 lowercase hex digits of a key and a NUL (65 bytes) to `hex`. Pure. */
PF_API pf_result pf_key_to_hex(const uint8_t* key, char* hex);
/* ---- end of keyed pages ------------------------------------------------------------------ */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PROCESSFORK_H_ */
