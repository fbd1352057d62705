// Randomized operation sequences checked after every step against a plain model: the model
// keeps each branch's and snapshot's tokens; KV bytes are a pure function of the token
// prefix (runtime_test_util.h), so the expected bytes of every token of every branch follow
// from the model. The verifier runs after every mutating op (verify_each_op) and again
// explicitly. Each sequence ends by freeing everything: then every page must be free.
//
// Keyed pages join the mix: pages published by key (DESIGN §4 keys of model tokens, KV
// written like an engine's) for two leases, lookups by key with and without holds (every
// page found must hold exactly the KV its key stands for), releases and lease ends. After
// every token branch creation, a key lookup of the same tokens must find exactly as many
// pages as the token walk reused (adoption makes the two agree).
//
// Scale: PF_RANDOM_SEQUENCES (default 400 per seed) sequences of 60 operations per seed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <random>

#include "runtime/manifest.h"
#include "runtime/prefix_index.h"
#include "tests/runtime/runtime_test_util.h"

namespace pf::rt::testing {
namespace {

constexpr std::size_t kOpsPerSequence = 60;
constexpr std::size_t kMaxBranches = 12;
constexpr LeaseId kLeases = 2;  // keyed-page leases 1..kLeases

std::size_t sequences_per_seed() {
  if (const char* e = std::getenv("PF_RANDOM_SEQUENCES")) return std::strtoul(e, nullptr, 10);
  return 400;
}

std::uint64_t common_prefix(const std::vector<Token>& a, const std::vector<Token>& b) {
  std::uint64_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return i;
}

// What the sequences exercised, so the test proves it reached the interesting paths.
struct Coverage {
  std::size_t ops = 0, appends = 0, out_of_pages = 0, cow_copies = 0, reused = 0, forks = 0,
              checkouts = 0, fast_forwards = 0, three_ways = 0, snapshots = 0, dedup = 0,
              truncates = 0, frees = 0, evicted = 0, unpins = 0, published = 0, kept_existing = 0,
              key_hits = 0, holds = 0, releases = 0, lease_ends = 0, refused = 0;
};
Coverage g_cov;

class Sequence {
 public:
  Sequence(Runtime& rt, std::mt19937_64& rng) : rt_(rt), rng_(rng), P_(rt.geometry().page_tokens) {}

  void run() {
    for (std::size_t step = 0; step < kOpsPerSequence && !::testing::Test::HasFailure(); ++step) {
      one_op();
      ++g_cov.ops;
      check_all();
    }
    finish();
  }

 private:
  std::size_t pick(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
  }
  bool coin(double p = 0.5) { return std::bernoulli_distribution(p)(rng_); }
  std::vector<Token> random_tokens(std::size_t n) {
    std::vector<Token> t(n);
    for (auto& x : t) x = static_cast<Token>(pick(3));  // small vocabulary: shared prefixes
    return t;
  }
  BranchId any_branch() {
    auto it = branches_.begin();
    std::advance(it, pick(branches_.size()));
    return it->first;
  }
  std::string any_snapshot() {
    auto it = snaps_.begin();
    std::advance(it, pick(snaps_.size()));
    return it->first;
  }
  // A source and its model tokens.
  std::pair<Source, std::vector<Token>> any_source() {
    if (!snaps_.empty() && (branches_.empty() || coin())) {
      std::string cid = any_snapshot();
      return {cid, snaps_[cid]};
    }
    BranchId b = any_branch();
    return {b, branches_[b]};
  }

  void one_op() {
    const std::size_t op = pick(17);
    if (branches_.empty() && op != 0 && op != 1 && op != 6 && op < 14) {
      create_empty();
      return;
    }
    switch (op) {
      case 0:
        create_empty();
        break;
      case 1:
        create_from_tokens();
        break;
      case 2:
      case 3:
        append();
        break;
      case 4:
        ASSERT_TRUE(rt_.commit(any_branch()).is_ok());
        break;
      case 5:
        snapshot();
        break;
      case 6:
        fork_or_checkout();
        break;
      case 7:
        merge();
        break;
      case 8:
        truncate();
        break;
      case 9:
        free_one();
        break;
      case 10:
        g_cov.evicted += rt_.evict(pick(6));
        break;
      case 11:
        unpin();
        break;
      case 12:
        diff();
        break;
      case 13: {
        auto r = rt_.gc(coin());
        (void)r;
        break;
      }
      case 14:
        publish_keyed();
        break;
      case 15:
        lookup_keyed();
        break;
      case 16:
        release_keyed();
        break;
    }
  }

  std::vector<Sha256> keys_of(const std::vector<Token>& tokens) {
    std::vector<Sha256> out;
    Sha256 key{};
    for (std::size_t i = 0; (i + 1) * P_ <= tokens.size(); ++i) {
      key = prefix_page_key(i == 0 ? nullptr : &key, std::span(tokens).subspan(i * P_, P_));
      out.push_back(key);
    }
    return out;
  }

  // Like a storage backend: publishes the pages [from, n) of some tokens (often extending a
  // branch's, so existing keys and adoption happen) on freshly allocated, written pages.
  void publish_keyed() {
    std::vector<Token> tokens;
    if (!branches_.empty() && coin(0.6)) {
      tokens = branches_[any_branch()];
      tokens.resize(tokens.size() / P_ * P_);
    }
    tokens = concat(tokens, random_tokens(P_ * (1 + pick(3))));
    const std::size_t n = tokens.size() / P_;
    const std::size_t from = pick(n);
    const LeaseId lease = 1 + pick(kLeases);
    auto pages = rt_.alloc_pages(n - from, lease);
    if (!pages.is_ok()) {
      ASSERT_EQ(pages.status().code(), Code::kOutOfMemory) << pages.status().to_string();
      ++g_cov.out_of_pages;
      return;
    }
    AppendResult ar;
    for (std::size_t i = 0; i < pages->size(); ++i) {
      ar.runs.push_back({(*pages)[i], 0, P_, (from + i) * P_});
    }
    write_runs(rt_, ar, prefix_seeds(tokens));
    const auto keys = keys_of(tokens);
    const std::vector<Sha256> mine(keys.begin() + from, keys.end());
    const Sha256* parent = from > 0 && coin(0.8) ? &keys[from - 1] : nullptr;
    auto added = rt_.publish_pages(mine, *pages, parent, lease);
    ASSERT_TRUE(added.is_ok()) << added.status().to_string();
    g_cov.published += *added;
    g_cov.kept_existing += mine.size() - *added;
    if (coin(0.1)) {  // a second publish of the same pages is refused (they are not held)
      ASSERT_EQ(rt_.publish_pages(mine, *pages, parent, lease).status().code(),
                Code::kInvalidArgument);
      ++g_cov.refused;
    }
  }

  // Looks up the keys of a branch's or snapshot's tokens; every page found must hold the KV
  // of the tokens its key stands for.
  void lookup_keyed() {
    if (branches_.empty() && snaps_.empty()) return;
    const std::vector<Token> tokens = any_source().second;
    const auto keys = keys_of(tokens);
    const LeaseId lease = 1 + pick(kLeases);
    const bool hold = coin(0.6);
    auto found = rt_.lookup_keys(keys, hold, lease);
    ASSERT_TRUE(found.is_ok());
    ASSERT_LE(found->size(), keys.size());
    const auto seeds = prefix_seeds(tokens);
    const Geometry& g = rt_.geometry();
    for (std::size_t i = 0; i < found->size(); ++i) {
      const auto page = read_page(rt_, (*found)[i]);
      for (std::uint32_t slot = 0; slot < P_; ++slot) {
        const auto row = token_row(g, seeds[i * P_ + slot], 1, Half::kV);
        ASSERT_EQ(std::memcmp(page.data() + g.offset(1, Half::kV, slot), row.data(), row.size()), 0)
            << "page " << (*found)[i] << " found by key " << i << " holds other KV";
      }
    }
    g_cov.key_hits += !found->empty();
    if (hold) {
      held_[lease].insert(held_[lease].end(), found->begin(), found->end());
      g_cov.holds += found->size();
    }
  }

  void release_keyed() {
    const LeaseId lease = 1 + pick(kLeases);
    std::vector<PageId>& mine = held_[lease];
    if (coin(0.1)) {  // a page this lease does not hold: refused
      const PageId bogus = 100000 + static_cast<PageId>(pick(5));
      ASSERT_EQ(rt_.release_pages(std::vector<PageId>{bogus}, lease).code(),
                Code::kInvalidArgument);
      ++g_cov.refused;
    }
    if (mine.empty()) return;
    if (coin(0.25)) {  // the lease ends
      ASSERT_EQ(rt_.release_holds(lease), mine.size());
      mine.clear();
      ++g_cov.lease_ends;
      return;
    }
    std::shuffle(mine.begin(), mine.end(), rng_);
    const std::size_t k = 1 + pick(mine.size());
    const std::vector<PageId> drop(mine.end() - k, mine.end());
    ASSERT_TRUE(rt_.release_pages(drop, lease).is_ok());
    mine.resize(mine.size() - k);
    g_cov.releases += k;
  }

  void create_empty() {
    if (branches_.size() >= kMaxBranches) return;
    auto nb = rt_.create_branch();
    ASSERT_TRUE(nb.is_ok());
    branches_[nb->id] = {};
  }

  void create_from_tokens() {
    if (branches_.size() >= kMaxBranches) return;
    std::vector<Token> want = random_tokens(pick(12));
    if (!branches_.empty() && coin(0.7)) want = concat(branches_[any_branch()], want);
    auto nb = rt_.create_branch(want);
    ASSERT_TRUE(nb.is_ok());
    ASSERT_EQ(nb->reused_tokens % P_, 0u);
    ASSERT_LE(nb->reused_tokens, want.size());
    // Keys and tokens agree: the token walk (adopting pages published by key) reached
    // exactly as far as a lookup of the tokens' keys does.
    auto by_key = rt_.lookup_keys(keys_of(want), false, 0);
    ASSERT_TRUE(by_key.is_ok());
    ASSERT_EQ(by_key->size() * P_, nb->reused_tokens);
    std::vector<PageId> reused_pages = rt_.branch_view(nb->id)->pages;
    reused_pages.resize(by_key->size());
    ASSERT_EQ(*by_key, reused_pages);
    branches_[nb->id] = std::vector<Token>(want.begin(), want.begin() + nb->reused_tokens);
    g_cov.reused += nb->reused_tokens > 0;
  }

  // Like an engine: append (prefill or decode), sometimes commit right away.
  void append() { append_to(any_branch()); }
  void append_to(BranchId b) {
    const auto add = random_tokens(1 + pick(12));
    const auto all = concat(branches_[b], add);
    auto ar = rt_.append(b, add);
    if (!ar.is_ok()) {
      ASSERT_EQ(ar.status().code(), Code::kOutOfMemory) << ar.status().to_string();
      ++g_cov.out_of_pages;
      return;  // model unchanged; check_all() proves the runtime is too
    }
    ++g_cov.appends;
    g_cov.cow_copies += ar->copied_page;
    write_runs(rt_, *ar, prefix_seeds(all));
    branches_[b] = all;
    if (coin(0.3)) {
      ASSERT_TRUE(rt_.commit(b).is_ok());
    }
  }

  void snapshot() {
    const BranchId b = any_branch();
    static const char* kNames[] = {"", "a", "b"};
    auto s = rt_.snapshot(b, kNames[pick(3)]);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    ++g_cov.snapshots;
    g_cov.dedup += !s->created;
    auto known = snaps_.find(s->cid);
    if (known != snaps_.end()) {
      ASSERT_EQ(known->second, branches_[b]);
    }
    snaps_[s->cid] = branches_[b];
    auto m = parse_manifest(*rt_.manifest(s->cid));
    ASSERT_TRUE(m.is_ok());
    ASSERT_EQ(m->manifest.tokens, branches_[b]);
    if (coin(0.2)) {
      ASSERT_TRUE(rt_.set_ref("r" + std::to_string(pick(3)), s->cid).is_ok());
    }
  }

  void fork_or_checkout() {
    if (branches_.size() + 3 > kMaxBranches) return;
    if (!snaps_.empty() && coin(0.3)) {
      const std::string cid = any_snapshot();
      auto co = rt_.checkout(cid);
      ASSERT_TRUE(co.is_ok());
      branches_[*co] = snaps_[cid];
      ++g_cov.checkouts;
      return;
    }
    if (branches_.empty() && snaps_.empty()) return;
    auto [src, tokens] = any_source();
    const std::size_t n = 1 + pick(3);
    auto fk = rt_.fork(src, n);
    ASSERT_TRUE(fk.is_ok()) << fk.status().to_string();
    ASSERT_EQ(fk->branches.size(), n);
    for (BranchId c : fk->branches) branches_[c] = tokens;
    ++g_cov.forks;
  }

  void merge() {
    if (branches_.size() >= kMaxBranches) return;
    auto [from, from_tokens] = any_source();
    auto [into, into_tokens] = any_source();
    auto m = rt_.merge(from, into);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    const std::uint64_t c = common_prefix(from_tokens, into_tokens);
    ASSERT_EQ(m->common_tokens, c);
    // Branch sources were snapshotted: record those snapshots in the model.
    for (const auto& [src, toks] : {std::pair{from, from_tokens}, std::pair{into, into_tokens}}) {
      if (const BranchId* id = std::get_if<BranchId>(&src)) {
        const auto info = rt_.branch_info(*id);
        ASSERT_TRUE(info.is_ok());
        snaps_[info->parents.at(0)] = toks;
      }
    }
    if (c == into_tokens.size()) {
      ASSERT_EQ(m->outcome, MergeOutcome::kFastForward);
      ASSERT_TRUE(m->recompute_tokens.empty());
      branches_[m->branch] = from_tokens;
      ++g_cov.fast_forwards;
    } else {
      ASSERT_EQ(m->outcome, MergeOutcome::kThreeWay);
      ASSERT_EQ(m->recompute_tokens,
                std::vector<Token>(from_tokens.begin() + c, from_tokens.end()));
      const auto info = rt_.snapshot_info(m->cid);
      ASSERT_TRUE(info.is_ok());
      ASSERT_EQ(info->parents.size(), 2u);
      snaps_[m->cid] = into_tokens;
      branches_[m->branch] = into_tokens;
      ++g_cov.three_ways;
    }
  }

  void truncate() {
    const BranchId b = any_branch();
    const std::size_t n = pick(branches_[b].size() + 1);
    ASSERT_TRUE(rt_.truncate(b, n).is_ok());
    branches_[b].resize(n);
    ++g_cov.truncates;
    if (coin(0.5)) append_to(b);  // backtrack and retry
    if (coin(0.1)) {
      ASSERT_EQ(rt_.truncate(b, branches_[b].size() + 1).code(), Code::kInvalidArgument);
    }
  }

  void free_one() {
    const BranchId b = any_branch();
    ASSERT_TRUE(rt_.free_branch(b).is_ok());
    branches_.erase(b);
    ++g_cov.frees;
  }

  void unpin() {
    if (snaps_.empty()) return;
    const std::string cid = any_snapshot();
    const Status s = rt_.unpin(cid);
    if (s.code() == Code::kConflict) return;  // a ref names it
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    snaps_.erase(cid);
    ++g_cov.unpins;
  }

  void diff() {
    if (branches_.empty()) return;
    auto [a, ta] = any_source();
    auto [b, tb] = any_source();
    auto d = rt_.diff(a, b);
    ASSERT_TRUE(d.is_ok());
    ASSERT_EQ(d->common_tokens, common_prefix(ta, tb));
    ASSERT_EQ(d->shared_pages.size() + d->a_only_pages.size(), (ta.size() + P_ - 1) / P_);
  }

  void check_all() {
    if (::testing::Test::HasFailure()) return;
    ASSERT_TRUE(rt_.verify().is_ok()) << rt_.verify().to_string();
    ASSERT_EQ(rt_.branches().size(), branches_.size());
    for (const auto& [id, tokens] : branches_) {
      ASSERT_TRUE(branch_bytes_match(rt_, id, tokens));
    }
    ASSERT_EQ(rt_.snapshots().size(), snaps_.size());
    for (LeaseId l = 1; l <= kLeases; ++l) ASSERT_EQ(rt_.held_pages(l), held_[l].size());
  }

  void finish() {
    for (const auto& r : rt_.refs()) ASSERT_TRUE(rt_.delete_ref(r.name).is_ok());
    for (BranchId id : rt_.branches()) ASSERT_TRUE(rt_.free_branch(id).is_ok());
    for (const auto& s : rt_.snapshots()) ASSERT_TRUE(rt_.unpin(s.cid).is_ok());
    for (LeaseId l = 1; l <= kLeases; ++l) ASSERT_EQ(rt_.release_holds(l), held_[l].size());
    rt_.gc(true);
    const PoolStats st = rt_.pool_stats();
    ASSERT_EQ(st.used_pages, 0u) << "everything freed, yet pages are held";
    ASSERT_EQ(st.free_pages, st.capacity_pages);
    ASSERT_EQ(st.chunks, 0u);
    ASSERT_TRUE(rt_.verify().is_ok());
  }

  Runtime& rt_;
  std::mt19937_64& rng_;
  const std::uint32_t P_;
  std::map<BranchId, std::vector<Token>> branches_;
  std::map<std::string, std::vector<Token>> snaps_;
  std::map<LeaseId, std::vector<PageId>> held_;  // keyed-page holds (a page once per hold)
};

class RuntimeRandom : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(RuntimeRandom, OperationSequencesMatchTheModel) {
  g_cov = {};
  std::mt19937_64 rng(GetParam());
  const std::size_t n = sequences_per_seed();
  for (std::size_t i = 0; i < n && !HasFailure(); ++i) {
    // 20 pages: small enough that appends run out of pages and eviction kicks in.
    Fixture f = make_runtime("host", *geometry_preset("tiny"), 20 * 512);
    ASSERT_TRUE(f.rt) << f.skip_reason;
    SCOPED_TRACE("seed " + std::to_string(GetParam()) + " sequence " + std::to_string(i));
    Sequence(*f.rt, rng).run();
  }
  const Coverage& c = g_cov;
  std::printf(
      "seed %llu: %zu sequences, %zu ops: %zu appends (%zu copy-on-write, %zu out of "
      "pages), %zu prefix reuses, %zu forks, %zu checkouts, %zu snapshots (%zu "
      "identical), %zu fast-forward + %zu three-way merges, %zu truncates, %zu frees, "
      "%zu pages evicted, %zu unpins; keyed: %zu published, %zu kept existing, %zu key "
      "lookups found pages, %zu holds, %zu released, %zu lease ends, %zu refused\n",
      static_cast<unsigned long long>(GetParam()), n, c.ops, c.appends, c.cow_copies,
      c.out_of_pages, c.reused, c.forks, c.checkouts, c.snapshots, c.dedup, c.fast_forwards,
      c.three_ways, c.truncates, c.frees, c.evicted, c.unpins, c.published, c.kept_existing,
      c.key_hits, c.holds, c.releases, c.lease_ends, c.refused);
  if (n >= 100) {  // every interesting path must have been reached
    EXPECT_GT(c.cow_copies, 0u);
    EXPECT_GT(c.out_of_pages, 0u);
    EXPECT_GT(c.reused, 0u);
    EXPECT_GT(c.dedup, 0u);
    EXPECT_GT(c.fast_forwards, 0u);
    EXPECT_GT(c.three_ways, 0u);
    EXPECT_GT(c.evicted, 0u);
    EXPECT_GT(c.unpins, 0u);
    EXPECT_GT(c.checkouts, 0u);
    EXPECT_GT(c.published, 0u);
    EXPECT_GT(c.kept_existing, 0u);
    EXPECT_GT(c.key_hits, 0u);
    EXPECT_GT(c.holds, 0u);
    EXPECT_GT(c.releases, 0u);
    EXPECT_GT(c.lease_ends, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, RuntimeRandom, ::testing::Values(1, 2, 3, 4, 20240601));

}  // namespace
}  // namespace pf::rt::testing
