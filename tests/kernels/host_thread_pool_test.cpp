// HostThreadPool (every item once, concurrent callers) and the host kernels' parallel
// digest_batch: digests identical to the serial ones (blake3_digest, a one-thread kernels
// instance) for every span size, including empty, one byte, odd sizes and spans cut into
// BLAKE3 subtrees.
#include "kernels/host_thread_pool.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

#include "kernels/blake3.h"
#include "kernels/page_kernels.h"
#include "tests/support/pattern.h"

namespace pf::kernels {
namespace {

using testing::pattern;

TEST(HostThreadPool, RunsEveryItemOnce) {
  for (unsigned threads : {1u, 2u, 5u}) {
    HostThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (std::size_t n : {0u, 1u, 2u, 7u, 1000u}) {
      std::vector<std::atomic<int>> hits(n);
      pool.parallel_for(n, [&](std::size_t i) { hits[i].fetch_add(1); });
      for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << threads << " " << i;
    }
  }
}

TEST(HostThreadPool, ConcurrentCallersEachFinishTheirOwnJob) {
  HostThreadPool pool(3);
  constexpr int kCallers = 6;
  constexpr std::size_t kItems = 500;
  std::vector<std::vector<std::atomic<int>>> hits(kCallers);
  for (auto& h : hits) h = std::vector<std::atomic<int>>(kItems);
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      for (int round = 0; round < 20; ++round) {
        pool.parallel_for(kItems, [&](std::size_t i) { hits[c][i].fetch_add(1); });
      }
    });
  }
  for (std::thread& t : callers) t.join();
  for (int c = 0; c < kCallers; ++c) {
    for (std::size_t i = 0; i < kItems; ++i) ASSERT_EQ(hits[c][i].load(), 20) << c << " " << i;
  }
}

// A forked child has no workers: parallel_for still runs every item (on the caller).
TEST(HostThreadPool, WorksInAForkedChild) {
  HostThreadPool pool(3);
  pool.parallel_for(10, [](std::size_t) {});  // workers started and used in the parent
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::vector<int> hits(100, 0);
    pool.parallel_for(hits.size(), [&](std::size_t i) { ++hits[i]; });
    for (int h : hits) {
      if (h != 1) _exit(1);
    }
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(HostThreadPool, DefaultSizeIsCapped) {
  const unsigned n = HostThreadPool::default_threads();
  EXPECT_GE(n, 1u);
  EXPECT_GE(HostThreadPool::shared().size(), 1u);
  if (std::getenv("PF_HOST_THREADS") == nullptr) {
    EXPECT_LE(n, HostThreadPool::kDefaultMaxThreads);
  }
}

constexpr std::size_t kSeg = 256 * 1024;  // the host kernels' subtree segment

// Sizes around every boundary: BLAKE3 blocks and chunks, the subtree segment, several
// segments with a short or one-chunk or one-byte tail.
std::vector<std::size_t> edge_sizes() {
  return {0,
          1,
          63,
          64,
          65,
          1023,
          1024,
          1025,
          2048,
          4097,
          65543,
          kSeg - 1,
          kSeg,
          kSeg + 1,
          kSeg + 1024,
          2 * kSeg,
          2 * kSeg + 7,
          3 * kSeg + 1024,
          5 * kSeg - 3,
          (5u << 20) + 7};
}

TEST(HostKernelsParallel, RootOfSubtreesEqualsTheWholeHash) {
  for (std::size_t bytes : edge_sizes()) {
    if (bytes <= kSeg) continue;
    const auto buf = pattern(bytes, 3 + bytes);
    const std::size_t n = (bytes + kSeg - 1) / kSeg;
    std::vector<std::uint32_t> cvs(8 * n);
    for (std::size_t j = 0; j < n; ++j) {
      const std::size_t off = j * kSeg;
      b3::subtree_cv(buf.data() + off, std::min(kSeg, bytes - off), j * (kSeg / 1024), false,
                     &cvs[8 * j]);
    }
    Digest d;
    b3::root_of_subtrees(reinterpret_cast<const std::uint32_t(*)[8]>(cvs.data()), n,
                         d.bytes.data());
    EXPECT_EQ(d, blake3_digest(buf.data(), bytes)) << bytes;
  }
}

// One batch mixing every edge size (unaligned starts too) with many small odd spans.
TEST(HostKernelsParallel, DigestsEqualSerialOnes) {
  std::vector<std::vector<std::uint8_t>> bufs;
  std::vector<ConstSpan> spans;
  for (std::size_t bytes : edge_sizes()) {
    bufs.push_back(pattern(bytes + 1, 77 + bytes));
    spans.push_back({bufs.back().data() + 1, bytes});  // odd address
  }
  for (std::size_t i = 0; i < 300; ++i) {
    const std::size_t bytes = (i * 7919) % 9000;
    bufs.push_back(pattern(bytes, 1000 + i));
    spans.push_back({bufs.back().data(), bytes});
  }
  spans.push_back({nullptr, 0});
  std::vector<Digest> want(spans.size());
  for (std::size_t i = 0; i < spans.size(); ++i)
    want[i] = blake3_digest(spans[i].data, spans[i].bytes);

  auto serial = make_host_kernels(1);
  std::vector<Digest> got(spans.size());
  ASSERT_TRUE(serial->digest_batch(spans, got).is_ok());
  EXPECT_EQ(got, want);
  for (unsigned threads : {2u, 3u, 8u}) {
    auto k = make_host_kernels(threads);
    for (int round = 0; round < 3; ++round) {
      std::vector<Digest> par(spans.size());
      ASSERT_TRUE(k->digest_batch(spans, par).is_ok());
      EXPECT_EQ(par, want) << threads << " threads, round " << round;
    }
  }
  std::vector<Digest> shared(spans.size());
  ASSERT_TRUE(make_host_kernels()->digest_batch(spans, shared).is_ok());
  EXPECT_EQ(shared, want);
}

// Each large size alone in its batch: the one-huge-span case that is cut into subtrees.
TEST(HostKernelsParallel, OneLargeSpanEqualsSerial) {
  auto k = make_host_kernels(4);
  for (std::size_t bytes : edge_sizes()) {
    const auto buf = pattern(bytes, 5 * bytes + 1);
    const ConstSpan span{buf.data(), bytes};
    Digest got;
    ASSERT_TRUE(k->digest_batch({&span, 1}, {&got, 1}).is_ok());
    EXPECT_EQ(got, blake3_digest(buf.data(), bytes)) << bytes;
  }
}

// Several threads digesting at once through one instance (the runtime's unlocked publish).
TEST(HostKernelsParallel, ConcurrentCallersGetSerialDigests) {
  auto k = make_host_kernels(3);
  std::vector<std::vector<std::uint8_t>> bufs;
  std::vector<ConstSpan> spans;
  for (std::size_t i = 0; i < 24; ++i) {
    bufs.push_back(pattern(96 * 1024 + i * 13, 40 + i));
    spans.push_back({bufs.back().data(), bufs.back().size()});
  }
  std::vector<Digest> want(spans.size());
  for (std::size_t i = 0; i < spans.size(); ++i)
    want[i] = blake3_digest(spans[i].data, spans[i].bytes);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      for (int round = 0; round < 10; ++round) {
        std::vector<Digest> got(spans.size());
        if (!k->digest_batch(spans, got).is_ok() || got != want) mismatches.fetch_add(1);
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace pf::kernels
