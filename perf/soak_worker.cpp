#include "perf/soak_worker.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "shims/include/processfork.h"

namespace pf::soak {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kSharedTokens = 32;  // a prefix every worker starts from
constexpr std::uint32_t kOwnTokens = 24;
constexpr std::uint32_t kChildTokens = 6;
constexpr std::uint32_t kForkN = 4;

volatile sig_atomic_t g_stop = 0;

// The KV byte of (token id, position, byte index): what was written is checkable anywhere,
// also in pages another worker wrote for the same shared prefix.
std::uint8_t kv_byte(std::uint32_t token, std::uint64_t position, std::size_t i) {
  return static_cast<std::uint8_t>(token * 31 + position * 7 + i);
}

struct Failure {
  std::string what;
};

// An engine's KV for n tokens as pf_kv_copy sees it: one block of all n tokens, one K and
// one V tensor per layer, token rows of token_bytes.
class EngineKv {
 public:
  EngineKv(const pf_pool_info& info, std::size_t token_bytes, std::size_t n)
      : token_bytes_(token_bytes),
        layer_bytes_(n * token_bytes),
        buf_(2 * info.layers * layer_bytes_),
        k_(info.layers),
        v_(info.layers) {
    for (std::uint32_t l = 0; l < info.layers; ++l) {
      k_[l] = reinterpret_cast<std::uint64_t>(buf_.data() + (2 * l) * layer_bytes_);
      v_[l] = reinterpret_cast<std::uint64_t>(buf_.data() + (2 * l + 1) * layer_bytes_);
    }
    const std::uint32_t elem = static_cast<std::uint32_t>(pf_dtype_bytes(info.dtype));
    layout_ = pf_kv_layout{sizeof(pf_kv_layout),
                           info.layers,
                           k_.data(),
                           v_.data(),
                           n,
                           0,
                           static_cast<std::int64_t>(token_bytes),
                           static_cast<std::int64_t>(info.head_dim * elem),
                           elem,
                           0};
  }
  // Byte i of token t's row in tensor l (2 * layer + 0 for K, + 1 for V).
  std::uint8_t& at(std::size_t t, std::size_t l, std::size_t i) {
    return buf_[l * layer_bytes_ + t * token_bytes_ + i];
  }
  const pf_kv_layout* layout() const { return &layout_; }

 private:
  std::size_t token_bytes_, layer_bytes_;
  std::vector<std::uint8_t> buf_;
  std::vector<std::uint64_t> k_, v_;
  pf_kv_layout layout_{};
};

class Worker {
 public:
  explicit Worker(const WorkerOptions& o) : o_(o) {
    fd_ = ::open(o.samples_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd_ < 0) throw Failure{"cannot open " + o.samples_path};
  }
  ~Worker() {
    if (c_ != nullptr) pf_disconnect(c_);
    if (fd_ >= 0) ::close(fd_);
  }
  void cycle(std::uint64_t n);

 private:
  // Runs one call, records its sample; a result outside `allowed` ends the worker.
  template <typename F>
  pf_result timed(SoakOp op, const char* what, F&& call, pf_result allowed = PF_OK);
  void connect();
  void write_kv(const std::vector<pf_write_run>& runs, std::size_t n_runs,
                const std::vector<std::uint32_t>& tokens, std::uint64_t first_token);
  void append(pf_branch_id b, const std::vector<std::uint32_t>& all, std::uint64_t from);
  void check_kv(pf_branch_id b, const std::vector<std::uint32_t>& tokens);
  std::string snapshot(pf_branch_id b, const std::string& name);
  void free_branch(pf_branch_id b);
  // Deletes `ref` (the snapshot's name; "" for none), then unpins `cid`.
  void unpin(const std::string& cid, const std::string& ref);

  WorkerOptions o_;
  int fd_ = -1;
  pf_client* c_ = nullptr;
  pf_pool_info info_{};
  std::size_t token_bytes_ = 0;  // one token's K (or V) row in one layer
};

template <typename F>
pf_result Worker::timed(SoakOp op, const char* what, F&& call, pf_result allowed) {
  const auto t0 = Clock::now();
  const pf_result r = call();
  const auto t1 = Clock::now();
  SoakSample s;
  s.t_ms = static_cast<std::uint32_t>((t1.time_since_epoch().count() - o_.t0_ns) / 1000000);
  s.op = static_cast<std::uint8_t>(op);
  s.ok = r == PF_OK ? 1 : 0;
  s.us = std::chrono::duration<float, std::micro>(t1 - t0).count();
  if (::write(fd_, &s, sizeof s) != static_cast<ssize_t>(sizeof s)) throw Failure{"sample write"};
  if (r != PF_OK && r != allowed) {
    throw Failure{std::string(what) + ": " + pf_result_string(r) + ": " +
                  pf_last_error_message(c_)};
  }
  return r;
}

void Worker::connect() {
  if (c_ != nullptr) pf_disconnect(c_);
  c_ = nullptr;
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = o_.socket.c_str();
  timed(SoakOp::kConnect, "connect", [&] { return pf_connect(&cfg, &c_); });
  info_.struct_size = sizeof info_;
  if (pf_pool_info_get(c_, &info_) != PF_OK) throw Failure{"pool info"};
  token_bytes_ = std::size_t{info_.kv_heads} * info_.head_dim * pf_dtype_bytes(info_.dtype);
}

// Stores tokens [first_token, first_token + n) through pf_kv_copy from engine tensors
// holding kv_byte() values (one block of all tokens, one K and one V tensor per layer).
void Worker::write_kv(const std::vector<pf_write_run>& runs, std::size_t n_runs,
                      const std::vector<std::uint32_t>& tokens, std::uint64_t first_token) {
  const std::size_t n = tokens.size() - first_token;
  EngineKv kv_in(info_, token_bytes_, n);
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t l = 0; l < 2 * info_.layers; ++l) {
      for (std::size_t i = 0; i < token_bytes_; ++i) {
        kv_in.at(t, l, i) = kv_byte(tokens[first_token + t], first_token + t, l * token_bytes_ + i);
      }
    }
  }
  std::vector<pf_kv_run> kv(n_runs);
  for (std::size_t r = 0; r < n_runs; ++r) {
    kv[r] = pf_kv_run{runs[r].page, runs[r].first_slot, runs[r].count, 0,
                      runs[r].first_token - first_token};
  }
  timed(SoakOp::kKvStore, "kv_copy store", [&] {
    return pf_kv_copy(c_, kv_in.layout(), kv.data(), kv.size(), 0, info_.layers, PF_KV_STORE,
                      nullptr, nullptr);
  });
}

// Appends all[from..] to b and writes their KV.
void Worker::append(pf_branch_id b, const std::vector<std::uint32_t>& all, std::uint64_t from) {
  if (from >= all.size()) return;
  const std::size_t n = all.size() - from;
  std::vector<pf_write_run> runs(pf_append_max_runs(c_, n));
  pf_append_result res{};
  timed(SoakOp::kAppend, "append",
        [&] { return pf_append(c_, b, all.data() + from, n, runs.data(), runs.size(), &res); });
  write_kv(runs, res.n_runs, all, res.first_token);
}

// Loads b's KV back (one run per page) and compares it with kv_byte() of `tokens`.
void Worker::check_kv(pf_branch_id b, const std::vector<std::uint32_t>& tokens) {
  pf_branch_info bi{};
  std::vector<std::uint32_t> pages(tokens.size() / info_.page_tokens + 2);
  if (pf_branch_view(c_, b, &bi, pages.data(), pages.size(), nullptr, 0) != PF_OK ||
      bi.n_tokens != tokens.size()) {
    throw Failure{"branch_view of a checkout"};
  }
  std::vector<pf_kv_run> runs;
  for (std::uint64_t t = 0; t < tokens.size(); t += info_.page_tokens) {
    const auto count =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(info_.page_tokens, tokens.size() - t));
    runs.push_back(pf_kv_run{pages[t / info_.page_tokens], 0, count, 0, t});
  }
  EngineKv kv_out(info_, token_bytes_, tokens.size());
  timed(SoakOp::kKvLoad, "kv_copy load", [&] {
    return pf_kv_copy(c_, kv_out.layout(), runs.data(), runs.size(), 0, info_.layers, PF_KV_LOAD,
                      nullptr, nullptr);
  });
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    for (std::size_t l = 0; l < 2 * info_.layers; ++l) {
      for (std::size_t i = 0; i < token_bytes_; ++i) {
        if (kv_out.at(t, l, i) != kv_byte(tokens[t], t, l * token_bytes_ + i)) {
          throw Failure{"KV of token " + std::to_string(t) + " read back differs"};
        }
      }
    }
  }
}

std::string Worker::snapshot(pf_branch_id b, const std::string& name) {
  pf_snapshot_result s{};
  timed(SoakOp::kSnapshot, "snapshot", [&] { return pf_snapshot(c_, b, name.c_str(), &s); });
  return s.cid;
}

void Worker::free_branch(pf_branch_id b) {
  timed(SoakOp::kFree, "branch_free", [&] { return pf_branch_free(c_, b); });
}

void Worker::unpin(const std::string& cid, const std::string& ref) {
  // A named snapshot's name is a ref, which blocks its unpin: the ref goes first.
  if (!ref.empty()) {
    timed(SoakOp::kUnpin, "ref_delete", [&] { return pf_ref_delete(c_, ref.c_str()); });
  }
  // Another snapshot of this cycle may be the same content (a merge result): gone already.
  timed(
      SoakOp::kUnpin, "unpin", [&] { return pf_unpin(c_, cid.c_str()); }, PF_NOT_FOUND);
}

void Worker::cycle(std::uint64_t n) {
  if (c_ == nullptr || n % 4 == 0) connect();
  const std::string tag = "soak-w" + std::to_string(o_.id) + "-g" + std::to_string(o_.generation) +
                          "-c" + std::to_string(n);
  std::vector<std::uint32_t> tokens;
  for (std::uint32_t i = 0; i < kSharedTokens; ++i) tokens.push_back(100 + i);
  for (std::uint32_t i = 0; i < kOwnTokens; ++i) {
    tokens.push_back(static_cast<std::uint32_t>(1000000 * (o_.id + 1) + 1000 * (n % 997) + i));
  }
  pf_new_branch nb{};
  timed(SoakOp::kBranch, "branch_create",
        [&] { return pf_branch_create(c_, tokens.data(), tokens.size(), &nb); });
  append(nb.branch, tokens, nb.n_tokens);
  const std::string parent = snapshot(nb.branch, tag);

  pf_branch_id kids[kForkN] = {};
  const pf_source from_parent = pf_source_named(parent.c_str());
  timed(SoakOp::kFork, "fork",
        [&] { return pf_fork(c_, &from_parent, kForkN, kids, kForkN, nullptr, 0); });
  std::string child_cids[2];
  for (int k = 0; k < 2; ++k) {
    std::vector<std::uint32_t> more = tokens;
    for (std::uint32_t i = 0; i < kChildTokens - k; ++i) more.push_back(7000 + 100 * k + i);
    append(kids[k], more, tokens.size());
    child_cids[k] = snapshot(kids[k], tag + "-k" + std::to_string(k));
  }
  const pf_source from = pf_source_named(child_cids[0].c_str());
  const pf_source into = pf_source_named(child_cids[1].c_str());
  pf_merge_result merged{};
  std::uint32_t recompute[64];
  timed(SoakOp::kMerge, "merge",
        [&] { return pf_merge(c_, &from, &into, &merged, recompute, 64); });

  pf_branch_id back = 0;
  timed(SoakOp::kCheckout, "checkout",
        [&] { return pf_checkout(c_, parent.c_str(), &back, nullptr, 0); });
  check_kv(back, tokens);
  const pf_source a = pf_source_branch(back);
  const pf_source b = pf_source_branch(kids[0]);
  static char json[1 << 16];
  timed(SoakOp::kDiff, "diff", [&] { return pf_diff(c_, &a, &b, json, sizeof json, nullptr); });

  for (pf_branch_id id : {nb.branch, back, merged.branch}) free_branch(id);
  for (pf_branch_id id : kids) free_branch(id);
  // Children first: a fast-forward merge's CID is child 0's, unpinned only after its ref.
  for (int k = 0; k < 2; ++k) unpin(child_cids[k], tag + "-k" + std::to_string(k));
  unpin(merged.cid, "");
  unpin(parent, tag);
}

}  // namespace

const char* op_name(SoakOp op) {
  static const char* const kNames[] = {
      "connect", "branch_create", "append", "kv_store", "kv_load", "snapshot", "fork",
      "merge",   "checkout",      "diff",   "free",     "unpin",   "http_get"};
  static_assert(sizeof kNames / sizeof kNames[0] == static_cast<std::size_t>(SoakOp::kCount));
  const auto i = static_cast<std::size_t>(op);
  return i < static_cast<std::size_t>(SoakOp::kCount) ? kNames[i] : "unknown";
}

int run_soak_worker(const WorkerOptions& options) {
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  try {
    Worker w(options);
    for (std::uint64_t n = 0; !g_stop; ++n) w.cycle(n);
  } catch (const Failure& f) {
    std::fprintf(stderr, "soak worker %u: %s\n", options.id, f.what.c_str());
    return 1;
  }
  return 0;
}

}  // namespace pf::soak
