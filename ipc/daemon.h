// The daemon: `processfork serve` (DESIGN §3 ipc/, §6, §8).
//
// DESIGN: one process owns one pool (one backend, one geometry) and serves it on a Unix
// socket (the fast path for engines, ipc/wire.h) and on an HTTP control port (DESIGN §6).
// Configuration comes from flags, else PROCESSFORK_* environment variables, else defaults.
// It logs the backend it chose and why, refuses to start over a live socket, recovers a
// stale one, and on SIGTERM/SIGINT tells connected clients (closes their connections),
// releases every mapping and removes the socket before exiting 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/socket_path.h"
#include "base/status.h"

namespace pf::ipc {

struct DaemonConfig {
  std::string device = "auto";              // --device / PROCESSFORK_DEVICE
  std::size_t capacity_bytes = 4ull << 30;  // --capacity / PROCESSFORK_CAPACITY ("4GiB")
  std::size_t chunk_bytes = 64ull << 20;    // --chunk / PROCESSFORK_CHUNK ("64MiB")
  std::string geometry = "llama-3-8b";      // --geometry / PROCESSFORK_GEOMETRY
  std::string socket_path;                  // --socket / PROCESSFORK_SOCKET; "" = default
  std::string http = "127.0.0.1:8642";      // --http / PROCESSFORK_HTTP; "off" disables
  std::string token;                        // --token / PROCESSFORK_TOKEN
  // --ready-file / PROCESSFORK_READY_FILE: once serving, the daemon writes
  // {"pid":..,"socket":"..","http":"host:port"|null,"backend":"..","device":".."} there
  // (atomically, via rename), so scripts and tests know the bound port (--http HOST:0).
  std::string ready_file;
  // Added to the entry contract (compatible: defaults keep the old behaviour).
  std::size_t max_clients = 256;  // --max-clients / PROCESSFORK_MAX_CLIENTS: Unix-socket cap
  // --frame-timeout-ms / PROCESSFORK_FRAME_TIMEOUT_MS: a Unix-socket frame (header and
  // payload) must arrive whole within this long once its first byte did, and a reply must
  // be taken within it; otherwise the connection is dropped.
  std::uint32_t frame_timeout_ms = 10000;
  // --spin-us / PROCESSFORK_SPIN_US (0..10000): after a reply, a Unix-socket session thread
  // polls for its client's next frame for this long before it sleeps (ipc/idle_spin.h), at
  // most one such thread per two CPUs at a time. 0: sleep at once.
  std::uint32_t spin_us = 50;
  // HTTP control port hardening (DESIGN §8, docs/daemon.md "Security"):
  // --http-auth / PROCESSFORK_HTTP_AUTH (on|off): with it on (the default) every route but
  // GET /v1/health and GET /metrics needs the bearer token: --token, else a random one. Either
  // is written to "<socket>.token" (0600) for local clients. off: no token anywhere, only on
  // a loopback --http, not with --token.
  bool http_auth = true;
  // --http-request-timeout-ms / PROCESSFORK_HTTP_REQUEST_TIMEOUT_MS: a whole HTTP request
  // must arrive within this long of its first byte (and an idle connection is closed after it).
  std::uint32_t http_request_timeout_ms = 10000;
  // --http-max-connections / PROCESSFORK_HTTP_MAX_CONNECTIONS and
  // --http-max-connections-per-peer / PROCESSFORK_HTTP_MAX_CONNECTIONS_PER_PEER: beyond them
  // a new connection evicts the longest-waiting one (of that peer address, or of any), else
  // it is refused with 503.
  std::uint32_t http_max_connections = 256;
  std::uint32_t http_max_connections_per_peer = 64;
  // --store / PROCESSFORK_STORE: a durable store directory (docs/store.md). Snapshots, refs
  // and prefix-index pages are written to it in the background and survive restarts; the
  // boot epoch comes from it. "" (the default): no store, state lasts until the daemon stops.
  std::string store_dir;
  // --store-prefix-capacity / PROCESSFORK_STORE_PREFIX_CAPACITY: the most blob bytes the
  // store keeps for prefix-index pages alone (least recently used go first); 0 = unbounded.
  std::uint64_t store_prefix_capacity = 0;
  // --verify / PROCESSFORK_VERIFY=1: run the runtime's invariant verifier after every
  // mutating operation (slow; for tests and debugging). Always on in debug builds.
  bool verify = false;
};

// Sizes like "4GiB", "64MiB", "512KiB", "1048576" (bytes). kInvalidArgument otherwise.
Result<std::size_t> parse_size(std::string_view text);

// Parses the arguments after `serve` (and the environment). kInvalidArgument names the
// bad flag or value.
Result<DaemonConfig> parse_serve_args(int argc, char** argv);

// Runs the daemon in this process until SIGTERM/SIGINT. Returns the process exit code:
// 0 after a clean shutdown, 1 when it could not start (reason on stderr), 2 for bad usage.
int serve_main(int argc, char** argv);

}  // namespace pf::ipc
