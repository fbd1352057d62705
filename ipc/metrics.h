// Operation counters and latency histograms, and the Prometheus text of GET /metrics
// (DESIGN §6). Op names come from the op table (ipc/ops.h).
//
// Contract: record() is lock-free (relaxed atomics) and safe from any thread; render()
// reads a consistent-enough snapshot (each counter atomically, not all of them at once),
// which is what Prometheus expects of a scrape.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "ipc/ops.h"
#include "runtime/runtime.h"

namespace pf::ipc {

class OpMetrics {
 public:
  // Upper bounds of the latency buckets, in seconds (+Inf is implicit).
  static constexpr std::array<double, 14> kBuckets = {
      1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 1e-1, 1.0};

  void record(Op op, bool ok, std::chrono::nanoseconds elapsed);
  std::uint64_t count(Op op) const;  // ok + error

  // Appends processfork_ops_total and processfork_op_duration_seconds (HELP/TYPE included).
  void render(std::string* out) const;

 private:
  struct Row {
    std::atomic<std::uint64_t> ok{0};
    std::atomic<std::uint64_t> error{0};
    std::atomic<std::uint64_t> sum_ns{0};
    std::array<std::atomic<std::uint64_t>, kBuckets.size()> buckets{};  // non-cumulative
  };
  std::array<Row, kOpCount> rows_{};
};

// Measures one operation: records on destruction unless record() was called.
class OpTimer {
 public:
  OpTimer(OpMetrics& metrics, Op op)
      : metrics_(metrics), op_(op), start_(std::chrono::steady_clock::now()) {}
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;
  ~OpTimer() { finish(false); }
  void finish(bool ok) {
    if (done_) return;
    done_ = true;
    metrics_.record(op_, ok, std::chrono::steady_clock::now() - start_);
  }

 private:
  OpMetrics& metrics_;
  Op op_;
  std::chrono::steady_clock::time_point start_;
  bool done_ = false;
};

// The daemon's own counters and gauges (lock-free; shown in /metrics).
struct DaemonCounters {
  std::atomic<std::int64_t> clients{0};
  std::atomic<std::uint64_t> leases_opened{0};
  std::atomic<std::uint64_t> lease_branches_freed{0};
  std::atomic<std::uint64_t> lease_holds_released{0};
  std::atomic<std::uint64_t> cow_pages{0};
  std::atomic<std::uint64_t> protocol_errors{0};
  std::atomic<std::uint64_t> refused_uid{0};
  std::atomic<std::uint64_t> refused_limit{0};
  std::array<std::atomic<std::uint64_t>, 6> http_by_class{};  // index: status / 100
};

// GET /metrics: the pool's gauges, the daemon's counters and every op's counters and
// latency histogram, in Prometheus text format.
std::string prometheus_text(const rt::PoolStats& pool, std::uint64_t epoch,
                            std::uint32_t boot_epoch, std::size_t live_leases,
                            const DaemonCounters& counters, const OpMetrics& ops);

// The durable store's gauges and counters (nothing without a store), appended to `out`.
void append_store_metrics(std::string* out, const rt::StoreStatus& store);

// Prometheus text helpers: "# HELP name help\n# TYPE name type\n".
void metric_header(std::string* out, std::string_view name, std::string_view type,
                   std::string_view help);
void metric_line(std::string* out, std::string_view name, std::string_view labels, double value);
void metric_line(std::string* out, std::string_view name, std::string_view labels,
                 std::uint64_t value);

}  // namespace pf::ipc
