// Service handlers of the session and the pool: hello, attach, pool, gc, health.
#include <unistd.h>

#include <algorithm>

#include "ipc/frame_check.h"
#include "ipc/service.h"
#include "runtime/ids.h"

namespace pf::ipc {

static_assert(rt::kMaxForkChildren == wire::kMaxForkChildren);
static_assert(sizeof(rt::Sha256) == sizeof(wire::Key));
static_assert(wire::kIdEpochShift == rt::kIdSequenceBits);

namespace {

wire::GeometryWire geometry_wire(const rt::Geometry& g) {
  wire::GeometryWire w;
  w.layers = g.layers;
  w.kv_heads = g.kv_heads;
  w.head_dim = g.head_dim;
  w.page_tokens = g.page_tokens;
  w.dtype = static_cast<std::uint8_t>(g.dtype);
  return w;
}

}  // namespace

// The lease is opened by the session once HELLO succeeded; it fills head.lease in.
template <>
Result<msg::HelloAnswer> Service::handle<Op::kHello>(rt::LeaseId, const msg::Hello& request) {
  PF_TRY(check_hello_version(request.head));
  const rt::PoolLayout layout = runtime_.pool_layout();
  msg::HelloAnswer out;
  wire::HelloReply& hr = out.head;
  hr.daemon_pid = static_cast<std::uint32_t>(getpid());
  hr.geometry = geometry_wire(runtime_.geometry());
  hr.page_bytes = layout.page_bytes;
  hr.chunk_bytes = layout.chunk_bytes;
  hr.capacity_bytes = layout.capacity_bytes;
  hr.capacity_pages = layout.capacity_pages;
  msg::set_cstr(hr.backend, identity_.backend);
  msg::set_cstr(hr.device, identity_.device);
  out.session = wire::HelloSession{identity_.boot_epoch, 0};
  wire::HelloDevice device;
  msg::set_cstr(device.uuid, identity_.device_uuid);
  msg::set_cstr(device.pci_bus_id, identity_.device_pci_bus_id);
  out.device = device;
  return out;
}

template <>
Result<msg::AttachAnswer> Service::handle<Op::kAttach>(rt::LeaseId, const msg::Attach& request) {
  const wire::AttachRequest& req = request.head;
  // The pool may grow or shrink while chunks are exported: retry until the epoch read
  // before and after the exports agree, so fds, serials and epoch describe one pool.
  for (int attempt = 0; attempt < 8; ++attempt) {
    const rt::PoolLayout before = runtime_.pool_layout();
    const auto total = static_cast<std::uint32_t>(before.chunk_serials.size());
    if (req.first_chunk > total) {
      return PF_ERROR(Code::kInvalidArgument, "first_chunk " + std::to_string(req.first_chunk) +
                                                  " is past the pool's " + std::to_string(total) +
                                                  " chunks");
    }
    const std::uint32_t n = std::min<std::uint32_t>(
        {req.max_chunks, wire::kMaxChunksPerAttachReply, total - req.first_chunk});
    msg::AttachAnswer out;
    bool raced = false;
    for (std::uint32_t i = 0; i < n; ++i) {
      std::uint64_t serial = 0;
      Result<UniqueFd> fd = runtime_.export_chunk(req.first_chunk + i, &serial);
      if (!fd.is_ok()) {
        raced = runtime_.pool_layout().epoch != before.epoch;
        if (!raced) return detail::with_frame(fd.take_status(), __FILE__, __LINE__);
        break;
      }
      out.fds.push_back(std::move(*fd));
      out.serials.push_back(serial);
    }
    if (raced || runtime_.pool_layout().epoch != before.epoch) continue;
    out.head.pool_epoch = before.epoch;
    out.head.total_chunks = total;
    out.head.first_chunk = req.first_chunk;
    out.head.n_fds = n;
    return out;
  }
  return PF_ERROR(Code::kUnavailable, "the pool kept changing during attach; retry");
}

template <>
Result<msg::PoolAnswer> Service::handle<Op::kPool>(rt::LeaseId, const msg::Empty&) {
  // Epoch first: the stats then describe a pool at least that new.
  const std::uint64_t epoch = runtime_.pool_layout().epoch;
  const rt::PoolStats s = runtime_.pool_stats();
  msg::PoolAnswer out;
  out.backend = identity_.backend;
  out.device = identity_.device;
  out.geometry = geometry_wire(runtime_.geometry());
  out.page_bytes = s.page_bytes;
  out.chunk_bytes = s.chunk_bytes;
  out.chunks = s.chunks;
  out.epoch = epoch;
  out.capacity_pages = s.capacity_pages;
  out.mapped_pages = s.mapped_pages;
  out.used_pages = s.used_pages;
  out.free_pages = s.free_pages;
  out.exclusive_pages = s.exclusive_pages;
  out.sealed_pages = s.sealed_pages;
  out.shared_pages = s.shared_pages;
  out.cached_pages = s.cached_pages;
  out.branches = s.branches;
  out.snapshots = s.snapshots;
  return out;
}

template <>
Result<msg::GcAnswer> Service::handle<Op::kGc>(rt::LeaseId, const msg::Gc& request) {
  if (request.drop_cache > 1) {
    return PF_ERROR(Code::kInvalidArgument,
                    "drop_cache must be 0 or 1, got " + std::to_string(request.drop_cache));
  }
  const rt::GcResult g = runtime_.gc(request.drop_cache != 0);
  return msg::GcAnswer{g.evicted_pages, g.released_chunks};
}

template <>
Result<msg::Health> Service::handle<Op::kHealth>(rt::LeaseId, const msg::Empty&) {
  msg::Health out;
  out.status = "ok";
  out.version = identity_.version;
  out.backend = identity_.backend;
  out.device = identity_.device;
  out.boot_epoch = identity_.boot_epoch;
  return out;
}

}  // namespace pf::ipc
