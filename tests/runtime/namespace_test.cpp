// Prefix-index namespaces (docs/runtime.md "Namespaces"): token lookups, commits, keyed
// lookups and publishes act within one namespace; a branch carries its namespace through
// fork, checkout, snapshot and merge; default-namespace manifests and CIDs are those of
// before namespaces; eviction is one LRU over every namespace and leaves no empty root.
// Every runtime runs the invariant verifier after each mutating call (verify_each_op),
// which also checks that no node sits under another namespace's root and that no empty
// namespace root is kept.
#include <gtest/gtest.h>

#include "runtime/manifest.h"
#include "runtime/prefix_index.h"
#include "tests/runtime/runtime_test_util.h"

namespace pf::rt::testing {
namespace {

constexpr LeaseId kLease = 7;

Namespace ns_of(std::uint8_t tag) {
  Namespace ns{};
  ns[0] = tag;
  ns[31] = 0x5a;
  return ns;
}

class Namespaces : public BackendRuntimeTest {
 protected:
  // A committed branch of `tokens` in `ns`, KV salted by `salt` (different models compute
  // different KV for the same tokens).
  BranchId committed(const std::vector<Token>& tokens, const Namespace& ns, std::uint64_t salt) {
    auto b = rt_->create_branch({}, 0, ns);
    EXPECT_TRUE(b.is_ok()) << b.status().to_string();
    append_and_write(*rt_, b->id, tokens, tokens, salt);
    EXPECT_TRUE(rt_->commit(b->id).is_ok());
    return b->id;
  }

  std::vector<PageId> published(const std::vector<Token>& tokens, const Namespace& ns) {
    const std::size_t n = tokens.size() / P_;
    auto pages = rt_->alloc_pages(n, kLease);
    EXPECT_TRUE(pages.is_ok()) << pages.status().to_string();
    AppendResult ar;
    for (std::size_t i = 0; i < n; ++i) ar.runs.push_back({(*pages)[i], 0, P_, i * P_});
    write_runs(*rt_, ar, prefix_seeds(tokens));
    auto added = rt_->publish_pages(keys_of(tokens, P_), *pages, nullptr, kLease, ns);
    EXPECT_TRUE(added.is_ok()) << added.status().to_string();
    return *pages;
  }
};

TEST_P(Namespaces, TokenLookupsAndCommitsStayInTheirNamespace) {
  const auto T = iota_tokens(3 * P_);
  const Namespace a = ns_of(1);
  const Namespace b = ns_of(2);
  committed(T, a, 1);
  EXPECT_EQ(rt_->lookup_prefix(T, a), T.size());
  EXPECT_EQ(rt_->lookup_prefix(T, b), 0u);
  EXPECT_EQ(rt_->lookup_prefix(T), 0u);  // the default namespace is one more namespace
  auto in_b = rt_->create_branch(T, 0, b);
  ASSERT_TRUE(in_b.is_ok());
  EXPECT_EQ(in_b->reused_tokens, 0u);
  // The same tokens committed in b get their own pages; a's stay a's.
  append_and_write(*rt_, in_b->id, T, T, 2);
  ASSERT_TRUE(rt_->commit(in_b->id).is_ok());
  auto again_a = rt_->create_branch(T, 0, a);
  auto again_b = rt_->create_branch(T, 0, b);
  ASSERT_TRUE(again_a.is_ok() && again_b.is_ok());
  EXPECT_EQ(again_a->reused_tokens, T.size());
  EXPECT_EQ(again_b->reused_tokens, T.size());
  const auto pages_a = rt_->branch_view(again_a->id)->pages;
  const auto pages_b = rt_->branch_view(again_b->id)->pages;
  for (PageId p : pages_a) EXPECT_EQ(std::count(pages_b.begin(), pages_b.end(), p), 0);
  EXPECT_TRUE(branch_bytes_match(*rt_, again_b->id, T, 2));
  EXPECT_EQ(rt_->pool_stats().index_namespaces, 2u);
  EXPECT_EQ(rt_->branch_info(again_b->id)->ns, b);
}

TEST_P(Namespaces, KeyedLookupsAndPublishesStayInTheirNamespace) {
  const auto T = iota_tokens(2 * P_, 40);
  const Namespace a = ns_of(3);
  const Namespace b = ns_of(4);
  const auto keys = keys_of(T, P_);
  const auto pages_a = published(T, a);
  EXPECT_EQ(*rt_->lookup_keys(keys, false, kLease, a), pages_a);
  EXPECT_TRUE(rt_->lookup_keys(keys, false, kLease, b)->empty());
  EXPECT_TRUE(rt_->lookup_keys(keys, false, kLease)->empty());
  // Publishing the same keys in b adds them there (the keys are new in b).
  const auto pages_b = published(T, b);
  EXPECT_EQ(*rt_->lookup_keys(keys, false, kLease, b), pages_b);
  EXPECT_EQ(*rt_->lookup_keys(keys, false, kLease, a), pages_a);
  // Token lookups adopt key-published pages of their own namespace only.
  EXPECT_EQ(rt_->lookup_prefix(T, a), T.size());
  EXPECT_EQ(rt_->lookup_prefix(T), 0u);
  // A parent key is looked up in the publish's namespace: b's chain continues from b's node.
  const auto U = concat(T, iota_tokens(P_, 900));
  const auto ukeys = keys_of(U, P_);
  auto extra = rt_->alloc_pages(1, kLease);
  ASSERT_TRUE(extra.is_ok());
  AppendResult ar;
  ar.runs.push_back({(*extra)[0], 0, P_, 2 * P_});
  write_runs(*rt_, ar, prefix_seeds(U));
  ASSERT_TRUE(
      rt_->publish_pages(std::vector<Sha256>{ukeys[2]}, *extra, &ukeys[1], kLease, b).is_ok());
  EXPECT_EQ(rt_->lookup_prefix(U, b), U.size());
  EXPECT_EQ(rt_->lookup_prefix(U, a), T.size());
}

TEST_P(Namespaces, ForkCheckoutSnapshotAndMergeKeepTheNamespace) {
  const auto T = iota_tokens(2 * P_ + 1, 70);
  const Namespace a = ns_of(5);
  auto b = rt_->create_branch({}, 0, a);
  ASSERT_TRUE(b.is_ok());
  append_and_write(*rt_, b->id, T, T);
  auto snap = rt_->snapshot(b->id, "ns");
  ASSERT_TRUE(snap.is_ok());
  EXPECT_EQ(snap->ns, a);
  auto manifest = rt_->manifest(snap->cid);
  ASSERT_TRUE(manifest.is_ok());
  EXPECT_NE(manifest->find("\"namespace\":\"" + to_hex(a) + "\""), std::string::npos);
  auto parsed = parse_manifest(*manifest);
  ASSERT_TRUE(parsed.is_ok()) << parsed.status().to_string();
  EXPECT_EQ(parsed->manifest.ns, a);
  EXPECT_EQ(parsed->cid, snap->cid);

  auto kids = rt_->fork(b->id, 2);
  ASSERT_TRUE(kids.is_ok());
  for (BranchId k : kids->branches) EXPECT_EQ(rt_->branch_info(k)->ns, a);
  auto from_snap = rt_->fork(snap->cid, 1);
  ASSERT_TRUE(from_snap.is_ok());
  EXPECT_EQ(rt_->branch_info(from_snap->branches[0])->ns, a);
  auto co = rt_->checkout(snap->cid);
  ASSERT_TRUE(co.is_ok());
  EXPECT_EQ(rt_->branch_info(*co)->ns, a);
  // A commit of a checked-out branch lands in the snapshot's namespace.
  const auto more = iota_tokens(P_, 300);
  append_and_write(*rt_, *co, more, concat(T, more));
  ASSERT_TRUE(rt_->commit(*co).is_ok());
  EXPECT_EQ(rt_->lookup_prefix(concat(T, more), a), 3u * P_);
  EXPECT_EQ(rt_->lookup_prefix(concat(T, more)), 0u);

  // Merge: within a namespace the result keeps it; across namespaces it is refused.
  auto merged = rt_->merge(Source{*co}, Source{snap->cid});
  ASSERT_TRUE(merged.is_ok()) << merged.status().to_string();
  EXPECT_EQ(rt_->branch_info(merged->branch)->ns, a);
  auto other = rt_->create_branch({}, 0, ns_of(6));
  ASSERT_TRUE(other.is_ok());
  append_and_write(*rt_, other->id, T, T);
  const PoolStats before = rt_->pool_stats();
  auto refused = rt_->merge(Source{other->id}, Source{snap->cid});
  EXPECT_EQ(refused.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(rt_->pool_stats().branches, before.branches);
  EXPECT_EQ(rt_->pool_stats().snapshots, before.snapshots);
}

// Golden values computed by the code before namespaces existed (commit 1965312): a
// default-namespace manifest and a runtime snapshot must keep their CIDs byte for byte.
TEST_P(Namespaces, DefaultNamespaceCidsAreUnchanged) {
  Manifest m;
  m.geometry = *geometry_preset("tiny");
  m.name = "golden";
  m.parents = {"sha256:" + std::string(64, 'a')};
  m.tokens = {1, 2, 3, 4, 5};
  m.pages = {{std::string(64, '1'), std::string(64, '2')},
             {std::string(64, '3'), std::string(64, '4')}};
  m.logical_seqs = {{0, {0, 1}, 1}};
  auto bytes = canonical_json(m);
  ASSERT_TRUE(bytes.is_ok());
  EXPECT_EQ(bytes->find("namespace"), std::string::npos);
  EXPECT_EQ(cid_of(*bytes),
            "sha256:65c3591a784a7c2b9cf0da9c7b3fbb6bb1d6559ade01080b29ca9e6b34f6a5f6");
  // Only the namespace field tells a namespaced manifest apart.
  m.ns = ns_of(9);
  EXPECT_NE(cid_of(*canonical_json(m)), cid_of(*bytes));

  ASSERT_EQ(P_, 4u);
  const auto T = iota_tokens(2 * P_ + 3, 7);
  auto b = rt_->create_branch();
  ASSERT_TRUE(b.is_ok());
  append_and_write(*rt_, b->id, T, T);
  auto snap = rt_->snapshot(b->id, "golden");
  ASSERT_TRUE(snap.is_ok());
  EXPECT_EQ(snap->cid, "sha256:36f07441713823c93bc76d16deec00497a051a9792d85e6256f8aac7188e90cb");
}

TEST_P(Namespaces, ManifestNamespaceMustBeCanonical) {
  Manifest m;
  m.geometry = *geometry_preset("tiny");
  m.ns = ns_of(1);
  const std::string good = *canonical_json(m);
  ASSERT_TRUE(parse_manifest(good).is_ok());
  const std::string hex = to_hex(m.ns);
  auto replaced = [&](const std::string& with) {
    std::string s = good;
    s.replace(s.find(hex), hex.size(), with);
    return s;
  };
  EXPECT_FALSE(parse_manifest(replaced(std::string(64, '0'))).is_ok());  // default: omitted
  EXPECT_FALSE(parse_manifest(replaced(std::string(63, 'a'))).is_ok());
  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_FALSE(parse_manifest(replaced(upper)).is_ok());
}

TEST_P(Namespaces, EvictionIsOneLruOverEveryNamespaceAndDropsEmptyRoots) {
  const Namespace a = ns_of(7);
  const Namespace b = ns_of(8);
  const auto T = iota_tokens(2 * P_, 1000);
  const auto U = iota_tokens(2 * P_, 2000);
  ASSERT_TRUE(rt_->free_branch(committed(T, a, 1)).is_ok());  // older
  ASSERT_TRUE(rt_->free_branch(committed(U, b, 2)).is_ok());  // newer
  EXPECT_EQ(rt_->pool_stats().index_namespaces, 2u);
  EXPECT_EQ(rt_->pool_stats().cached_pages, 4u);
  // LRU across namespaces: a's pages are the oldest and go first.
  EXPECT_EQ(rt_->evict(2), 2u);
  EXPECT_EQ(rt_->lookup_prefix(T, a), 0u);
  EXPECT_EQ(rt_->lookup_prefix(U, b), U.size());
  EXPECT_EQ(rt_->pool_stats().index_namespaces, 1u);  // a's root went with its last page
  EXPECT_EQ(rt_->evict(10), 2u);
  const PoolStats s = rt_->pool_stats();
  EXPECT_EQ(s.index_namespaces, 0u);
  EXPECT_EQ(s.index_nodes, 0u);
  EXPECT_TRUE(rt_->verify().is_ok());
  // Publishing only keys that exist leaves no root either.
  const auto pages = published(T, a);
  EXPECT_EQ(rt_->pool_stats().index_namespaces, 1u);
  auto dup = rt_->alloc_pages(2, kLease);
  ASSERT_TRUE(dup.is_ok());
  ASSERT_TRUE(rt_->publish_pages(keys_of(T, P_), *dup, nullptr, kLease, a).is_ok());
  EXPECT_EQ(*rt_->lookup_keys(keys_of(T, P_), false, kLease, a), pages);
  rt_->gc(/*drop_cache=*/true);
  EXPECT_EQ(rt_->pool_stats().index_namespaces, 0u);
  EXPECT_EQ(rt_->pool_stats().used_pages, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, Namespaces, ::testing::Values("host", "cuda:0"),
                         [](const auto& info) {
                           return info.param == "host" ? std::string("host") : std::string("cuda");
                         });

}  // namespace
}  // namespace pf::rt::testing
