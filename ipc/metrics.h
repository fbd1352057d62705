// Operation counters and latency histograms for GET /metrics (DESIGN §6), and the op names
// both front ends share.
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

namespace pf::ipc {

// Every operation either front end performs (one metrics row each).
enum class Op : int {
  kHello,
  kAttach,
  kBranchCreate,
  kAppend,
  kCommit,
  kTruncate,
  kBranchFree,
  kDetach,
  kBranchView,
  kBranchInfo,
  kBranches,
  kSnapshot,
  kFork,
  kCheckout,
  kMerge,
  kDiff,
  kLog,
  kManifest,
  kSnapshots,
  kUnpin,
  kRefSet,
  kRefGet,
  kRefDelete,
  kRefs,
  kPool,
  kGc,
  kHealth,
  kPagesLookupKeys,
  kPagesAlloc,
  kPagesPublish,
  kPagesRelease,
  kCount,
};
inline constexpr std::size_t kOpCount = static_cast<std::size_t>(Op::kCount);

// "branch_create", "append", ... (the `op` label).
std::string_view op_name(Op op);

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

// Prometheus text helpers: "# HELP name help\n# TYPE name type\n".
void metric_header(std::string* out, std::string_view name, std::string_view type,
                   std::string_view help);
void metric_line(std::string* out, std::string_view name, std::string_view labels, double value);
void metric_line(std::string* out, std::string_view name, std::string_view labels,
                 std::uint64_t value);

}  // namespace pf::ipc
