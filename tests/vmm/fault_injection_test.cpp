// Failure paths under the fault backend: every injected failure while building or growing
// a MappedRange leaves the range, the backend's books and the process's fds and mappings
// exactly as they were.
#include <gtest/gtest.h>

#include "tests/support/process_resources.h"
#include "vmm/fault_backend.h"
#include "vmm/host_backend.h"
#include "vmm/mapped_range.h"

namespace pf::vmm {
namespace {

constexpr std::size_t kG = kHostGranularity;

struct Snapshot {
  std::size_t chunks, mapped;
  BackendStats stats;
  testing::ProcessResources process;
};

class FaultInjection : public ::testing::Test {
 protected:
  FaultInjection() : fault_(make_host_backend(HostBackendOptions{HugePages::kOff})) {}

  Snapshot snapshot(const MappedRange& range) {
    return {range.chunk_count(), range.mapped_bytes(), fault_.stats(), testing::ProcessResources{}};
  }
  void expect_unchanged(const Snapshot& a, const Snapshot& b) {
    EXPECT_EQ(a.chunks, b.chunks);
    EXPECT_EQ(a.mapped, b.mapped);
    EXPECT_EQ(a.stats.live_chunks, b.stats.live_chunks);
    EXPECT_EQ(a.stats.live_mappings, b.stats.live_mappings);
    EXPECT_EQ(a.stats.live_reservations, b.stats.live_reservations);
    EXPECT_EQ(a.process.fds, b.process.fds) << "fd leaked";
    EXPECT_EQ(a.process.mappings, b.process.mappings) << "mapping leaked";
  }

  FaultBackend fault_;
};

class FailingGrow : public FaultInjection, public ::testing::WithParamInterface<FaultOp> {};

TEST_P(FailingGrow, LeavesTheRangeAsItWas) {
  auto range = MappedRange::create(fault_, 8 * kG);
  ASSERT_TRUE(range.is_ok());
  ASSERT_TRUE(range.value()->grow(kG).is_ok());
  ASSERT_TRUE(range.value()->grow(kG).is_ok());
  const Snapshot before = snapshot(*range.value());

  FaultRule once;
  once.fail_after = 0;
  once.fail_count = 1;
  fault_.set_rule(GetParam(), once);
  const Status s = range.value()->grow(kG);
  EXPECT_EQ(s.code(), Code::kOutOfMemory) << s.to_string();
  EXPECT_EQ(fault_.injected(GetParam()), 1u);
  expect_unchanged(before, snapshot(*range.value()));

  // The failure was transient: the next grow works and the bytes of older chunks survived.
  static_cast<char*>(range.value()->base())[0] = 'x';
  ASSERT_TRUE(range.value()->grow(kG).is_ok());
  EXPECT_EQ(range.value()->chunk_count(), 3u);
  EXPECT_EQ(static_cast<char*>(range.value()->base())[0], 'x');
}

INSTANTIATE_TEST_SUITE_P(EachBackendCall, FailingGrow,
                         ::testing::Values(FaultOp::kCreateChunk, FaultOp::kMap,
                                           FaultOp::kSetAccess),
                         [](const auto& info) { return std::string(fault_op_name(info.param)); });

TEST_F(FaultInjection, FailedReserveLeavesNothing) {
  const testing::ProcessResources before;
  FaultRule always;
  always.fail_after = 0;
  fault_.set_rule(FaultOp::kReserve, always);
  auto range = MappedRange::create(fault_, 4 * kG);
  EXPECT_EQ(range.status().code(), Code::kOutOfMemory);
  EXPECT_EQ(fault_.stats().live_reservations, 0u);
  EXPECT_EQ(testing::ProcessResources{}, before);
}

TEST_F(FaultInjection, FailedExportLeavesNoFd) {
  auto range = MappedRange::create(fault_, 2 * kG);
  ASSERT_TRUE(range.is_ok());
  ASSERT_TRUE(range.value()->grow(kG).is_ok());
  const Snapshot before = snapshot(*range.value());
  FaultRule once;
  once.fail_after = 0;
  once.fail_count = 1;
  once.code = Code::kDriver;
  fault_.set_rule(FaultOp::kExportChunk, once);
  auto fd = range.value()->export_chunk(0);
  EXPECT_EQ(fd.status().code(), Code::kDriver);
  expect_unchanged(before, snapshot(*range.value()));
  auto again = range.value()->export_chunk(0);
  ASSERT_TRUE(again.is_ok());
  EXPECT_TRUE(again.value().valid());
}

TEST_F(FaultInjection, FailedImportKeepsTheCallersFdAndLeaksNothing) {
  auto source = MappedRange::create(fault_, 2 * kG);
  ASSERT_TRUE(source.is_ok());
  ASSERT_TRUE(source.value()->grow(kG).is_ok());
  auto fd = source.value()->export_chunk(0);
  ASSERT_TRUE(fd.is_ok());
  auto sink = MappedRange::create(fault_, 2 * kG);
  ASSERT_TRUE(sink.is_ok());
  const Snapshot before = snapshot(*sink.value());

  for (FaultOp op : {FaultOp::kImportChunk, FaultOp::kMap, FaultOp::kSetAccess}) {
    FaultRule once;
    once.fail_after = 0;
    once.fail_count = 1;
    fault_.set_rule(op, once);
    EXPECT_FALSE(sink.value()->grow_imported(fd.value().get(), kG).is_ok()) << fault_op_name(op);
    fault_.clear_rules();
    expect_unchanged(before, snapshot(*sink.value()));
  }
  ASSERT_TRUE(sink.value()->grow_imported(fd.value().get(), kG).is_ok())
      << "the caller's fd must still be open and usable";
  static_cast<char*>(source.value()->base())[100] = 'q';
  EXPECT_EQ(static_cast<char*>(sink.value()->base())[100], 'q');
}

TEST_F(FaultInjection, FailAfterCountsSuccessfulCallsFirst) {
  FaultRule rule;
  rule.fail_after = 2;
  rule.fail_count = 1;
  fault_.set_rule(FaultOp::kCreateChunk, rule);
  auto range = MappedRange::create(fault_, 8 * kG);
  ASSERT_TRUE(range.is_ok());
  EXPECT_TRUE(range.value()->grow(kG).is_ok());
  EXPECT_TRUE(range.value()->grow(kG).is_ok());
  EXPECT_FALSE(range.value()->grow(kG).is_ok());
  EXPECT_TRUE(range.value()->grow(kG).is_ok());
  EXPECT_EQ(fault_.calls(FaultOp::kCreateChunk), 4u);
  EXPECT_EQ(fault_.injected(FaultOp::kCreateChunk), 1u);
  EXPECT_EQ(range.value()->chunk_count(), 3u);
}

TEST_F(FaultInjection, RandomFailuresNeverLeak) {
  const testing::ProcessResources before;
  {
    auto range = MappedRange::create(fault_, 16 * kG);
    ASSERT_TRUE(range.is_ok());
    for (FaultOp op : {FaultOp::kCreateChunk, FaultOp::kMap, FaultOp::kSetAccess}) {
      FaultRule rule;
      rule.fail_rate = 0.3;
      rule.seed = 1234 + static_cast<int>(op);
      rule.latency = std::chrono::microseconds(10);
      fault_.set_rule(op, rule);
    }
    std::size_t expected_chunks = 0;
    std::uint64_t failures = 0;
    for (int step = 0; step < 300; ++step) {
      const bool grow = expected_chunks == 0 || (expected_chunks < 16 && step % 3 != 2);
      if (grow) {
        if (range.value()->grow(kG).is_ok()) {
          ++expected_chunks;
        } else {
          ++failures;
        }
      } else {
        ASSERT_TRUE(range.value()->shrink().is_ok());
        --expected_chunks;
      }
      ASSERT_EQ(range.value()->chunk_count(), expected_chunks);
      ASSERT_EQ(fault_.stats().live_chunks, expected_chunks);
      ASSERT_EQ(fault_.stats().live_mappings, expected_chunks);
    }
    EXPECT_GT(failures, 10u) << "the rules should have injected failures";
  }
  EXPECT_EQ(fault_.stats().live_chunks, 0u);
  EXPECT_EQ(fault_.stats().live_reservations, 0u);
  EXPECT_EQ(testing::ProcessResources{}, before);
}

}  // namespace
}  // namespace pf::vmm

namespace pf::vmm {
namespace {

TEST_F(FaultInjection, DestructorGivesUpOnAFailingUnmapInsteadOfLooping) {
  {
    auto range = MappedRange::create(fault_, 2 * kG);
    ASSERT_TRUE(range.is_ok());
    ASSERT_TRUE(range.value()->grow(kG).is_ok());
    FaultRule always;
    always.fail_after = 0;
    fault_.set_rule(FaultOp::kUnmap, always);
  }  // must return: the chunk stays mapped and the reservation held (a visible leak)
  EXPECT_EQ(fault_.stats().live_mappings, 1u);
  EXPECT_EQ(fault_.stats().live_reservations, 1u);
}

}  // namespace
}  // namespace pf::vmm
