#include "ipc/metrics.h"

#include <cstdio>

namespace pf::ipc {

std::string_view op_name(Op op) {
  switch (op) {
    case Op::kHello:
      return "hello";
    case Op::kAttach:
      return "attach";
    case Op::kBranchCreate:
      return "branch_create";
    case Op::kAppend:
      return "append";
    case Op::kCommit:
      return "commit";
    case Op::kTruncate:
      return "truncate";
    case Op::kBranchFree:
      return "branch_free";
    case Op::kDetach:
      return "detach";
    case Op::kBranchView:
      return "branch_view";
    case Op::kBranchInfo:
      return "branch_info";
    case Op::kBranches:
      return "branches";
    case Op::kSnapshot:
      return "snapshot";
    case Op::kFork:
      return "fork";
    case Op::kCheckout:
      return "checkout";
    case Op::kMerge:
      return "merge";
    case Op::kDiff:
      return "diff";
    case Op::kLog:
      return "log";
    case Op::kManifest:
      return "manifest";
    case Op::kSnapshots:
      return "snapshots";
    case Op::kUnpin:
      return "unpin";
    case Op::kRefSet:
      return "ref_set";
    case Op::kRefGet:
      return "ref_get";
    case Op::kRefDelete:
      return "ref_delete";
    case Op::kRefs:
      return "refs";
    case Op::kPool:
      return "pool";
    case Op::kGc:
      return "gc";
    case Op::kHealth:
      return "health";
    case Op::kPagesLookupKeys:
      return "pages_lookup_keys";
    case Op::kPagesAlloc:
      return "pages_alloc";
    case Op::kPagesPublish:
      return "pages_publish";
    case Op::kPagesRelease:
      return "pages_release";
    case Op::kCount:
      break;
  }
  return "unknown";
}

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

}  // namespace pf::ipc
