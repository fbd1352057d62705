// The host implementation of PageKernels: plain CPU loads and stores on host memory.
//
// Contract (in addition to page_kernels.h): arguments are validated before anything is
// written; a failed call writes nothing. digest_batch spreads batches of more than
// kParallelDigestBytes over a HostThreadPool (the process-wide one unless the instance was
// made with its own): one task per span, and spans longer than kSegmentBytes are cut into
// aligned BLAKE3 subtrees hashed as separate tasks and joined by root_of_subtrees. Each
// result depends only on its span, so digests are identical to the serial ones whatever the
// scheduling. copy_batch and compare_batch run on the calling thread. The object holds no
// mutable state, so any number of threads may call it at once.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/batch_checks.h"
#include "kernels/blake3.h"
#include "kernels/blake3_core.h"
#include "kernels/host_thread_pool.h"
#include "kernels/page_kernels.h"

namespace pf::kernels {
namespace {

// Below this many bytes in a batch, waking threads costs more than it saves.
constexpr std::size_t kParallelDigestBytes = std::size_t{512} << 10;
// One parallel task hashes at most this much of a span: a power-of-two number of chunks, so
// each full segment is a node of the span's BLAKE3 tree.
constexpr std::size_t kSegmentChunks = 256;
constexpr std::size_t kSegmentBytes = kSegmentChunks * b3::kChunkBytes;

// Digests `pages` into `out` on `pool`: one task per span, or per segment of a span longer
// than kSegmentBytes (its segments' chaining values are then joined on this thread).
void digest_parallel(HostThreadPool& pool, std::span<const ConstSpan> pages,
                     std::span<Digest> out) {
  struct Task {
    std::size_t page;
    std::size_t segment;   // in the page's segments; 0 for an uncut page
    std::size_t segments;  // the page's segment count (1: uncut, the task writes out[page])
  };
  std::vector<Task> tasks;
  std::vector<std::size_t> first_cv(pages.size(), 0);  // index of the page's segments in cvs
  std::size_t n_cvs = 0;
  for (std::size_t i = 0; i < pages.size(); ++i) {
    const std::size_t segments =
        pages[i].bytes > kSegmentBytes ? (pages[i].bytes + kSegmentBytes - 1) / kSegmentBytes : 1;
    first_cv[i] = n_cvs;
    if (segments > 1) n_cvs += segments;
    for (std::size_t j = 0; j < segments; ++j) tasks.push_back(Task{i, j, segments});
  }
  std::unique_ptr<std::uint32_t[][8]> cvs(new std::uint32_t[n_cvs][8]);
  pool.parallel_for(tasks.size(), [&](std::size_t t) {
    const Task& task = tasks[t];
    const ConstSpan& page = pages[task.page];
    if (task.segments == 1) {
      out[task.page] = blake3_digest(page.data, page.bytes);
      return;
    }
    const std::size_t off = task.segment * kSegmentBytes;
    b3::subtree_cv(static_cast<const std::uint8_t*>(page.data) + off,
                   std::min(kSegmentBytes, page.bytes - off), task.segment * kSegmentChunks,
                   /*root=*/false, cvs[first_cv[task.page] + task.segment]);
  });
  for (std::size_t i = 0; i < pages.size(); ++i) {
    if (pages[i].bytes <= kSegmentBytes) continue;
    const std::size_t segments = (pages[i].bytes + kSegmentBytes - 1) / kSegmentBytes;
    b3::root_of_subtrees(&cvs[first_cv[i]], segments, out[i].bytes.data());
  }
}

class HostKernels final : public PageKernels {
 public:
  explicit HostKernels(std::unique_ptr<HostThreadPool> own_pool)
      : own_pool_(std::move(own_pool)),
        pool_(own_pool_ != nullptr ? *own_pool_ : HostThreadPool::shared()) {}

  std::string_view name() const override { return "host"; }

  Status copy_batch(std::span<const CopyOp> ops) override {
    PF_TRY(check_copy_batch(ops));
    for (const CopyOp& op : ops) {
      if (op.bytes != 0) std::memcpy(op.dst, op.src, op.bytes);
    }
    return Status::ok();
  }

  Status kv_copy(const KVCopy& job, void* /*stream*/) override { return kv_copy_host(job); }
  Status fence() override { return Status::ok(); }  // no call leaves work behind

  Status digest_batch(std::span<const ConstSpan> pages, std::span<Digest> out) override {
    PF_TRY(check_digest_batch(pages, out));
    std::size_t total = 0;
    for (const ConstSpan& page : pages) total += page.bytes;
    if (total < kParallelDigestBytes || pool_.size() < 2) {
      for (std::size_t i = 0; i < pages.size(); ++i) {
        out[i] = blake3_digest(pages[i].data, pages[i].bytes);
      }
      return Status::ok();
    }
    digest_parallel(pool_, pages, out);
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

 private:
  std::unique_ptr<HostThreadPool> own_pool_;
  HostThreadPool& pool_;
};

}  // namespace

std::unique_ptr<PageKernels> make_host_kernels() {
  return std::make_unique<HostKernels>(nullptr);
}

std::unique_ptr<PageKernels> make_host_kernels(unsigned threads) {
  return std::make_unique<HostKernels>(std::make_unique<HostThreadPool>(threads));
}

}  // namespace pf::kernels
