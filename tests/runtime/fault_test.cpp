// The fault backend under the runtime: out of memory mid-append (chunk creation fails)
// leaves the state exactly as before; fork, checkout, snapshot and prefix reuse make zero
// backend create/map/unmap calls; eviction under memory pressure is LRU and never touches
// pinned pages.
#include <gtest/gtest.h>

#include "tests/runtime/runtime_test_util.h"
#include "vmm/fault_backend.h"
#include "vmm/host_backend.h"

namespace pf::rt::testing {
namespace {

using vmm::FaultBackend;
using vmm::FaultOp;
using vmm::FaultRule;

// 256 KiB pages: 8 per 2 MiB chunk.
Geometry small_geometry() {
  return *parse_geometry("layers=8,kv_heads=8,head_dim=64,dtype=bf16,page_tokens=16");
}

struct FaultFixture {
  ~FaultFixture() {
    if (fault != nullptr) fault->clear_rules();  // teardown must be able to unmap
    rt.reset();
  }
  FaultBackend* fault = nullptr;
  std::unique_ptr<vmm::Backend> backend;
  std::unique_ptr<Runtime> rt;
};

void init_fault_runtime(FaultFixture& f, std::size_t capacity_chunks) {
  auto fb = std::make_unique<FaultBackend>(vmm::make_host_backend());
  f.fault = fb.get();
  f.backend = std::move(fb);
  RuntimeOptions o;
  o.geometry = small_geometry();
  o.pool.chunk_bytes = vmm::kHostGranularity;
  o.pool.capacity_bytes = capacity_chunks * vmm::kHostGranularity;
  o.verify_each_op = true;
  auto rt = Runtime::create(*f.backend, o);
  EXPECT_TRUE(rt.is_ok()) << rt.status().to_string();
  f.rt = std::move(*rt);
}

struct Calls {
  std::uint64_t create, map, unmap, release, set_access;
  explicit Calls(const FaultBackend& b)
      : create(b.calls(FaultOp::kCreateChunk)),
        map(b.calls(FaultOp::kMap)),
        unmap(b.calls(FaultOp::kUnmap)),
        release(b.calls(FaultOp::kReleaseChunk)),
        set_access(b.calls(FaultOp::kSetAccess)) {}
  bool operator==(const Calls&) const = default;
};

// Everything observable about a runtime's state.
struct Observed {
  std::vector<BranchView> views;
  PoolStats stats;
  vmm::BackendStats backend;
  std::vector<SnapshotInfo> snaps;
};
Observed observe(Runtime& rt) {
  Observed o;
  for (BranchId id : rt.branches()) o.views.push_back(*rt.branch_view(id));
  o.stats = rt.pool_stats();
  o.backend = rt.backend().stats();
  o.snaps = rt.snapshots();
  return o;
}
void expect_same(const Observed& a, const Observed& b) {
  ASSERT_EQ(a.views.size(), b.views.size());
  for (std::size_t i = 0; i < a.views.size(); ++i) {
    EXPECT_EQ(a.views[i].tokens, b.views[i].tokens);
    EXPECT_EQ(a.views[i].pages, b.views[i].pages);
  }
  EXPECT_EQ(a.stats.used_pages, b.stats.used_pages);
  EXPECT_EQ(a.stats.mapped_pages, b.stats.mapped_pages);
  EXPECT_EQ(a.stats.chunks, b.stats.chunks);
  EXPECT_EQ(a.stats.exclusive_pages, b.stats.exclusive_pages);
  EXPECT_EQ(a.stats.sealed_pages, b.stats.sealed_pages);
  EXPECT_EQ(a.stats.cached_pages, b.stats.cached_pages);
  EXPECT_EQ(a.stats.index_nodes, b.stats.index_nodes);
  EXPECT_EQ(a.backend.live_chunks, b.backend.live_chunks);
  EXPECT_EQ(a.backend.live_mappings, b.backend.live_mappings);
  EXPECT_EQ(a.backend.mapped_bytes, b.backend.mapped_bytes);
  EXPECT_EQ(a.snaps.size(), b.snaps.size());
}

TEST(RuntimeFault, OutOfMemoryMidAppendLeavesStateExactlyAsBefore) {
  FaultFixture f;
  init_fault_runtime(f, 4);
  Runtime& rt = *f.rt;
  const auto ctx = iota_tokens(120);  // 8 pages: exactly one chunk, last page half full
  auto a = rt.create_branch();
  append_and_write(rt, a->id, ctx, ctx);
  ASSERT_EQ(rt.pool_stats().chunks, 1u);
  auto fk = rt.fork(a->id, 1);
  ASSERT_TRUE(fk.is_ok());
  const BranchId c = fk->branches[0];

  // 1) The first chunk creation fails: append needs a CoW page + 2 fresh pages.
  f.fault->set_rule(FaultOp::kCreateChunk, FaultRule{.fail_after = 0});
  const Observed before = observe(rt);
  auto ar = rt.append(c, iota_tokens(30, 500));
  EXPECT_EQ(ar.status().code(), Code::kOutOfMemory) << ar.status().to_string();
  expect_same(before, observe(rt));
  EXPECT_TRUE(branch_bytes_match(rt, c, ctx));
  EXPECT_TRUE(branch_bytes_match(rt, a->id, ctx));

  // 2) Two chunks needed, the second creation fails: the first is unmapped again.
  f.fault->set_rule(FaultOp::kCreateChunk, FaultRule{.fail_after = 1});
  const std::uint64_t creates = f.fault->calls(FaultOp::kCreateChunk);
  ar = rt.append(c, iota_tokens(200, 500));  // CoW + 12 fresh pages = 13 pages
  EXPECT_EQ(ar.status().code(), Code::kOutOfMemory);
  EXPECT_EQ(f.fault->calls(FaultOp::kCreateChunk), creates + 2);
  EXPECT_GE(f.fault->calls(FaultOp::kUnmap), 1u);
  expect_same(before, observe(rt));
  EXPECT_TRUE(branch_bytes_match(rt, c, ctx));

  // 3) A failing map (after creation succeeded) rolls back too.
  f.fault->clear_rules();
  f.fault->set_rule(FaultOp::kMap, FaultRule{.fail_after = 0});
  ar = rt.append(c, iota_tokens(30, 500));
  EXPECT_FALSE(ar.is_ok());
  expect_same(before, observe(rt));

  // 4) Without faults the same append succeeds and every byte is right.
  f.fault->clear_rules();
  const auto grown = concat(ctx, iota_tokens(200, 500));
  auto ok = append_and_write(rt, c, iota_tokens(200, 500), grown);
  EXPECT_EQ(ok.pages_added, 13u);
  EXPECT_TRUE(ok.copied_page);
  EXPECT_TRUE(branch_bytes_match(rt, c, grown));
  EXPECT_TRUE(branch_bytes_match(rt, a->id, ctx));
  EXPECT_TRUE(rt.verify().is_ok());
}

TEST(RuntimeFault, CapacityExhaustedIsOutOfPages) {
  FaultFixture f;
  init_fault_runtime(f, 1);
  Runtime& rt = *f.rt;
  auto a = rt.create_branch();
  append_and_write(rt, a->id, iota_tokens(128), iota_tokens(128));  // all 8 pages
  const Observed before = observe(rt);
  auto ar = rt.append(a->id, iota_tokens(1));
  EXPECT_EQ(ar.status().code(), Code::kOutOfMemory);
  EXPECT_NE(ar.status().message().find("out of pages"), std::string::npos);
  expect_same(before, observe(rt));
}

TEST(RuntimeFault, MetadataOperationsMakeNoBackendCalls) {
  FaultFixture f;
  init_fault_runtime(f, 4);
  Runtime& rt = *f.rt;
  const auto ctx = iota_tokens(100);
  auto a = rt.create_branch();
  append_and_write(rt, a->id, ctx, ctx);
  ASSERT_TRUE(rt.commit(a->id).is_ok());
  // From here on every create/map/unmap would fail, and none may even be attempted.
  f.fault->set_rule(FaultOp::kCreateChunk, FaultRule{.fail_after = 0});
  f.fault->set_rule(FaultOp::kMap, FaultRule{.fail_after = 0});
  f.fault->set_rule(FaultOp::kUnmap, FaultRule{.fail_after = 0});
  const Calls calls(*f.fault);
  const std::size_t used = rt.pool_stats().used_pages;

  auto fk = rt.fork(a->id, 12);
  ASSERT_TRUE(fk.is_ok());
  auto snap = rt.snapshot(a->id, "ctx");
  ASSERT_TRUE(snap.is_ok());
  auto fk2 = rt.fork(snap->cid, 128);
  ASSERT_TRUE(fk2.is_ok());
  auto co = rt.checkout(snap->cid);
  ASSERT_TRUE(co.is_ok());
  auto reuse = rt.create_branch(ctx);  // prefix reuse from the index
  ASSERT_TRUE(reuse.is_ok());
  EXPECT_EQ(reuse->reused_tokens, 96u);
  auto d = rt.diff(fk->branches[0], snap->cid);
  ASSERT_TRUE(d.is_ok());
  auto s2 = rt.snapshot(fk->branches[1]);
  ASSERT_TRUE(s2.is_ok());
  ASSERT_TRUE(rt.truncate(fk->branches[2], 10).is_ok());
  ASSERT_TRUE(rt.free_branch(fk->branches[3]).is_ok());

  EXPECT_TRUE(Calls(*f.fault) == calls) << "no create/map/unmap/release/set_access";
  EXPECT_EQ(f.fault->injected(FaultOp::kCreateChunk), 0u);
  EXPECT_EQ(rt.pool_stats().used_pages, used) << "no page copied or added";
  EXPECT_TRUE(branch_bytes_match(rt, fk2->branches[127], ctx));
  EXPECT_TRUE(branch_bytes_match(rt, *co, ctx));
  EXPECT_TRUE(branch_bytes_match(rt, reuse->id, iota_tokens(96)));

  // Fork with n out of range changes nothing either.
  const Observed before = observe(rt);
  EXPECT_EQ(rt.fork(snap->cid, 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(rt.fork(snap->cid, 1025).status().code(), Code::kInvalidArgument);
  expect_same(before, observe(rt));
  // vmm's MappedRange destructor retries a failing unmap forever: let teardown unmap.
  f.fault->clear_rules();
}

TEST(RuntimeFault, EvictionUnderPressureIsLruAndSparesPinnedPages) {
  FaultFixture f;
  init_fault_runtime(f, 1);  // 8 pages
  Runtime& rt = *f.rt;
  const auto x = iota_tokens(32, 1);     // 2 pages, pinned by a snapshot
  const auto y = iota_tokens(48, 1000);  // 3 pages, cached only
  const auto z = iota_tokens(48, 5000);  // 3 pages, cached only
  for (const auto* t : {&x, &y, &z}) {
    auto b = rt.create_branch();
    append_and_write(rt, b->id, *t, *t);
    ASSERT_TRUE(rt.commit(b->id).is_ok());
    if (t == &x) {
      ASSERT_TRUE(rt.snapshot(b->id, "pin").is_ok());
    }
    ASSERT_TRUE(rt.free_branch(b->id).is_ok());
  }
  auto st = rt.pool_stats();
  EXPECT_EQ(st.used_pages, 8u);
  EXPECT_EQ(st.cached_pages, 6u);
  // Touch y: z becomes the least recently used chain.
  EXPECT_EQ(rt.lookup_prefix(y), 48u);
  // Memory is full and the capacity reached: a 4-page append evicts z's 3 pages (leaves
  // first) and then y's leaf.
  const Calls calls(*f.fault);
  auto b = rt.create_branch();
  auto ar = rt.append(b->id, iota_tokens(64, 9000));
  ASSERT_TRUE(ar.is_ok()) << ar.status().to_string();
  EXPECT_TRUE(Calls(*f.fault) == calls) << "pressure is met by eviction, not by mapping";
  EXPECT_EQ(rt.lookup_prefix(z), 0u);
  EXPECT_EQ(rt.lookup_prefix(y), 32u);
  EXPECT_EQ(rt.lookup_prefix(x), 32u) << "pinned pages are never evicted";
  // Nothing evictable is left that could cover another 5 pages: out of pages, no change.
  const Observed before = observe(rt);
  EXPECT_EQ(rt.append(b->id, iota_tokens(80)).status().code(), Code::kOutOfMemory);
  expect_same(before, observe(rt));
}

}  // namespace
}  // namespace pf::rt::testing
