#include "ipc/metrics.h"

#include <algorithm>
#include <cstdio>

namespace pf::ipc {

void OpMetrics::record(Op op, bool ok, std::chrono::nanoseconds elapsed) {
  Row& row = rows_[static_cast<std::size_t>(op)];
  (ok ? row.ok : row.error).fetch_add(1, std::memory_order_relaxed);
  const auto ns = static_cast<std::uint64_t>(elapsed.count() < 0 ? 0 : elapsed.count());
  row.sum_ns.fetch_add(ns, std::memory_order_relaxed);
  const double seconds = static_cast<double>(ns) * 1e-9;
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      row.buckets[i].fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  // Larger than the last bound: only counted in +Inf (= ok + error).
}

std::uint64_t OpMetrics::count(Op op) const {
  const Row& row = rows_[static_cast<std::size_t>(op)];
  return row.ok.load(std::memory_order_relaxed) + row.error.load(std::memory_order_relaxed);
}

void OpMetrics::render(std::string* out) const {
  metric_header(out, "processfork_ops_total", "counter",
                "Operations served (both front ends), by op and result.");
  for (std::size_t i = 0; i < kOpCount; ++i) {
    const std::string op(op_name(static_cast<Op>(i)));
    metric_line(out, "processfork_ops_total", "op=\"" + op + "\",result=\"ok\"",
                rows_[i].ok.load(std::memory_order_relaxed));
    metric_line(out, "processfork_ops_total", "op=\"" + op + "\",result=\"error\"",
                rows_[i].error.load(std::memory_order_relaxed));
  }
  metric_header(out, "processfork_op_duration_seconds", "histogram",
                "Time the daemon spent serving each operation (excluding socket I/O).");
  for (std::size_t i = 0; i < kOpCount; ++i) {
    const Row& row = rows_[i];
    const std::string op(op_name(static_cast<Op>(i)));
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < kBuckets.size(); ++b) {
      cumulative += row.buckets[b].load(std::memory_order_relaxed);
      char le[32];
      std::snprintf(le, sizeof le, "%g", kBuckets[b]);
      metric_line(out, "processfork_op_duration_seconds_bucket",
                  "op=\"" + op + "\",le=\"" + le + "\"", cumulative);
    }
    const std::uint64_t total =
        row.ok.load(std::memory_order_relaxed) + row.error.load(std::memory_order_relaxed);
    // Concurrent records may have bumped the total after the buckets were read; +Inf must
    // never be below the last bucket.
    metric_line(out, "processfork_op_duration_seconds_bucket", "op=\"" + op + "\",le=\"+Inf\"",
                total < cumulative ? cumulative : total);
    metric_line(out, "processfork_op_duration_seconds_sum", "op=\"" + op + "\"",
                static_cast<double>(row.sum_ns.load(std::memory_order_relaxed)) * 1e-9);
    metric_line(out, "processfork_op_duration_seconds_count", "op=\"" + op + "\"",
                total < cumulative ? cumulative : total);
  }
}

std::string prometheus_text(const rt::PoolStats& s, std::uint64_t epoch, std::uint32_t boot_epoch,
                            std::size_t live_leases, const DaemonCounters& c,
                            const OpMetrics& ops) {
  std::string out;
  out.reserve(32 << 10);

  metric_header(&out, "processfork_pages", "gauge",
                "Pool pages by state (shared and cached are subsets of sealed; free counts "
                "unmapped capacity too).");
  metric_line(&out, "processfork_pages", "state=\"free\"", std::uint64_t{s.free_pages});
  metric_line(&out, "processfork_pages", "state=\"exclusive\"", std::uint64_t{s.exclusive_pages});
  metric_line(&out, "processfork_pages", "state=\"sealed\"", std::uint64_t{s.sealed_pages});
  metric_line(&out, "processfork_pages", "state=\"shared\"", std::uint64_t{s.shared_pages});
  metric_line(&out, "processfork_pages", "state=\"cached\"", std::uint64_t{s.cached_pages});
  metric_line(&out, "processfork_pages", "state=\"quarantined\"",
              std::uint64_t{s.quarantined_pages});
  metric_header(&out, "processfork_digest_pending_pages", "gauge",
                "Published (sealed) pages whose content digests the background digest thread "
                "has not stored yet.");
  metric_line(&out, "processfork_digest_pending_pages", "", std::uint64_t{s.digest_pending_pages});
  metric_header(&out, "processfork_pool_capacity_pages", "gauge", "Pages the pool may hold.");
  metric_line(&out, "processfork_pool_capacity_pages", "", std::uint64_t{s.capacity_pages});
  metric_header(&out, "processfork_pool_used_pages", "gauge", "Pages not free.");
  metric_line(&out, "processfork_pool_used_pages", "", std::uint64_t{s.used_pages});
  metric_header(&out, "processfork_pool_mapped_pages", "gauge",
                "Pages inside the chunks mapped now.");
  metric_line(&out, "processfork_pool_mapped_pages", "", std::uint64_t{s.mapped_pages});
  metric_header(&out, "processfork_pool_chunks", "gauge", "Physical chunks mapped.");
  metric_line(&out, "processfork_pool_chunks", "", std::uint64_t{s.chunks});
  metric_header(&out, "processfork_pool_epoch", "gauge",
                "Changes whenever the set of mapped chunks changes.");
  metric_line(&out, "processfork_pool_epoch", "", epoch);
  metric_header(&out, "processfork_boot_epoch", "gauge",
                "This start's boot epoch: the high 32 bits of every branch and lease id.");
  metric_line(&out, "processfork_boot_epoch", "", std::uint64_t{boot_epoch});
  metric_header(&out, "processfork_page_bytes", "gauge", "Bytes per page.");
  metric_line(&out, "processfork_page_bytes", "", std::uint64_t{s.page_bytes});
  metric_header(&out, "processfork_branches", "gauge", "Live branches.");
  metric_line(&out, "processfork_branches", "", std::uint64_t{s.branches});
  metric_header(&out, "processfork_snapshots", "gauge", "Pinned snapshots.");
  metric_line(&out, "processfork_snapshots", "", std::uint64_t{s.snapshots});
  metric_header(&out, "processfork_prefix_index_nodes", "gauge", "Prefix index nodes.");
  metric_line(&out, "processfork_prefix_index_nodes", "", std::uint64_t{s.index_nodes});

  metric_header(&out, "processfork_cow_copied_pages_total", "counter",
                "Pages copied by copy-on-write appends.");
  const std::uint64_t cow = c.cow_pages.load(std::memory_order_relaxed);
  metric_line(&out, "processfork_cow_copied_pages_total", "", cow);
  metric_header(&out, "processfork_cow_copied_bytes_total", "counter",
                "Bytes copied by copy-on-write appends (the only page copies there are).");
  metric_line(&out, "processfork_cow_copied_bytes_total", "", cow * s.page_bytes);

  metric_header(&out, "processfork_clients_connected", "gauge",
                "Unix-socket clients connected now.");
  metric_line(&out, "processfork_clients_connected", "",
              static_cast<std::uint64_t>(
                  std::max<std::int64_t>(0, c.clients.load(std::memory_order_relaxed))));
  metric_header(&out, "processfork_leases_active", "gauge", "Leases held by live connections.");
  metric_line(&out, "processfork_leases_active", "", std::uint64_t{live_leases});
  metric_header(&out, "processfork_leases_total", "counter", "Leases granted.");
  metric_line(&out, "processfork_leases_total", "",
              c.leases_opened.load(std::memory_order_relaxed));
  metric_header(&out, "processfork_lease_branches_freed_total", "counter",
                "Branches freed because their lease's connection ended.");
  metric_line(&out, "processfork_lease_branches_freed_total", "",
              c.lease_branches_freed.load(std::memory_order_relaxed));
  metric_header(&out, "processfork_lease_page_holds_released_total", "counter",
                "Keyed-page holds ended because their lease's connection ended.");
  metric_line(&out, "processfork_lease_page_holds_released_total", "",
              c.lease_holds_released.load(std::memory_order_relaxed));
  metric_header(&out, "processfork_protocol_errors_total", "counter",
                "Unix-socket protocol violations (each answered or the connection dropped).");
  metric_line(&out, "processfork_protocol_errors_total", "",
              c.protocol_errors.load(std::memory_order_relaxed));
  metric_header(&out, "processfork_connections_refused_total", "counter",
                "Unix-socket connections refused, by reason.");
  metric_line(&out, "processfork_connections_refused_total", "reason=\"uid\"",
              c.refused_uid.load(std::memory_order_relaxed));
  metric_line(&out, "processfork_connections_refused_total", "reason=\"limit\"",
              c.refused_limit.load(std::memory_order_relaxed));
  metric_header(&out, "processfork_http_requests_total", "counter",
                "HTTP requests answered, by status class.");
  for (int cls = 1; cls <= 5; ++cls) {
    metric_line(&out, "processfork_http_requests_total", "code=\"" + std::to_string(cls) + "xx\"",
                c.http_by_class[cls].load(std::memory_order_relaxed));
  }
  ops.render(&out);
  return out;
}

void metric_header(std::string* out, std::string_view name, std::string_view type,
                   std::string_view help) {
  out->append("# HELP ").append(name).append(" ").append(help).append("\n");
  out->append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void metric_line(std::string* out, std::string_view name, std::string_view labels, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", value);
  out->append(name);
  if (!labels.empty()) out->append("{").append(labels).append("}");
  out->append(" ").append(buf).append("\n");
}

void metric_line(std::string* out, std::string_view name, std::string_view labels,
                 std::uint64_t value) {
  out->append(name);
  if (!labels.empty()) out->append("{").append(labels).append("}");
  out->append(" ").append(std::to_string(value)).append("\n");
}

void append_store_metrics(std::string* out, const rt::StoreStatus& st) {
  if (!st.attached) return;
  metric_header(out, "processfork_store_snapshots", "gauge",
                "Snapshots by where their pages are (resident: in the pool; durable: "
                "committed in the store).");
  metric_line(out, "processfork_store_snapshots", "state=\"resident\"", st.snapshots_resident);
  metric_line(out, "processfork_store_snapshots", "state=\"durable\"", st.snapshots_durable);
  metric_header(out, "processfork_store_blobs", "gauge", "Page blobs in the store.");
  metric_line(out, "processfork_store_blobs", "", st.store.blobs);
  metric_header(out, "processfork_store_blob_bytes", "gauge", "Bytes of page blobs on disk.");
  metric_line(out, "processfork_store_blob_bytes", "", st.store.blob_bytes);
  metric_header(out, "processfork_store_prefix_entries", "gauge",
                "Prefix-index entries in the store.");
  metric_line(out, "processfork_store_prefix_entries", "", st.store.prefix_entries);
  metric_header(out, "processfork_store_quarantined", "gauge",
                "Stored snapshots whose pages failed their digest check.");
  metric_line(out, "processfork_store_quarantined", "", st.store.quarantined);
  metric_header(out, "processfork_store_jobs_queued", "gauge",
                "Write-behind jobs waiting or running.");
  metric_line(out, "processfork_store_jobs_queued", "", st.counters.jobs_queued);
  metric_header(out, "processfork_store_pages_loading", "gauge",
                "Pages of checkouts still being read from the store (lazy page-in).");
  metric_line(out, "processfork_store_pages_loading", "", st.counters.pages_loading);
  const std::pair<const char*, std::uint64_t> counters[] = {
      {"processfork_store_jobs_failed_total", st.counters.jobs_failed},
      {"processfork_store_blobs_written_total", st.counters.blobs_written},
      {"processfork_store_bytes_written_total", st.counters.bytes_written},
      {"processfork_store_pages_read_total", st.counters.pages_read},
      {"processfork_store_bytes_read_total", st.counters.bytes_read},
      {"processfork_store_snapshots_paged_in_total", st.counters.snapshots_paged_in},
      {"processfork_store_pages_load_failed_total", st.counters.pages_load_failed},
      {"processfork_store_load_waits_total", st.counters.load_waits},
      {"processfork_store_snapshots_demoted_total", st.counters.snapshots_demoted},
      {"processfork_store_prefix_pages_promoted_total", st.counters.prefix_pages_promoted}};
  for (const auto& [name, value] : counters) {
    metric_header(out, name, "counter", "Durable store activity since start (docs/store.md).");
    metric_line(out, name, "", value);
  }
}

}  // namespace pf::ipc
