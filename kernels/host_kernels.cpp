// The host implementation of PageKernels: plain CPU loads and stores on host memory.
//
// Contract (in addition to page_kernels.h): arguments are validated before anything is
// written; a failed call writes nothing. digest_batch spreads large batches over a few
// threads (one page per task, each result depends only on its page, so results do not depend
// on scheduling); copy_batch and compare_batch run on the calling thread. The object holds no
// state, so any number of threads may call it at once.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "kernels/batch_checks.h"
#include "kernels/page_kernels.h"

namespace pf::kernels {
namespace {

// Below this many bytes in a batch, threads cost more than they save.
constexpr std::size_t kParallelDigestBytes = std::size_t{8} << 20;
constexpr unsigned kMaxDigestThreads = 8;

class HostKernels final : public PageKernels {
 public:
  std::string_view name() const override { return "host"; }

  Status copy_batch(std::span<const CopyOp> ops) override {
    PF_TRY(check_copy_batch(ops));
    for (const CopyOp& op : ops) {
      if (op.bytes != 0) std::memcpy(op.dst, op.src, op.bytes);
    }
    return Status::ok();
  }

  Status kv_copy(const KVCopy& job, void* /*stream*/) override { return kv_copy_host(job); }

  Status digest_batch(std::span<const ConstSpan> pages, std::span<Digest> out) override {
    PF_TRY(check_digest_batch(pages, out));
    std::size_t total = 0;
    for (const ConstSpan& page : pages) total += page.bytes;
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    const unsigned threads =
        static_cast<unsigned>(std::min<std::size_t>({hw, kMaxDigestThreads, pages.size()}));
    if (total < kParallelDigestBytes || threads < 2) {
      for (std::size_t i = 0; i < pages.size(); ++i) {
        out[i] = blake3_digest(pages[i].data, pages[i].bytes);
      }
      return Status::ok();
    }
    std::atomic<std::size_t> next{0};
    auto worker = [&] {
      for (std::size_t i = next.fetch_add(1); i < pages.size(); i = next.fetch_add(1)) {
        out[i] = blake3_digest(pages[i].data, pages[i].bytes);
      }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (std::thread& t : pool) t.join();
    return Status::ok();
  }

  Status compare_batch(std::span<const ConstSpan> a, std::span<const ConstSpan> b,
                       std::span<std::uint8_t> equal) override {
    PF_TRY(check_compare_batch(a, b, equal));
    for (std::size_t i = 0; i < a.size(); ++i) {
      equal[i] = a[i].bytes == b[i].bytes &&
                 (a[i].bytes == 0 || std::memcmp(a[i].data, b[i].data, a[i].bytes) == 0);
    }
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<PageKernels> make_host_kernels() {
  return std::make_unique<HostKernels>();
}

}  // namespace pf::kernels
