// PrefixIndex: a radix tree over token ids at page granularity, plus a map from prefix key
// to node (DESIGN §4 Prefix keys, §5 branch(tokens?), gc/eviction; docs/runtime.md
// "Keyed pages").
//
// DESIGN: each node stands for one full page of page_tokens tokens following its parent's
// prefix, and holds the pool page with that prefix's KV plus its chained key
//   key = SHA-256(parent key || tokens as uint32 little-endian)   (the root's children
// omit the parent), equal to SGLang HiCache's get_hash_str(token_ids, prior_hash). The
// index holds ONE pool reference per node's page (the page's meta.in_index is set).
//
// Two kinds of node:
//  - token nodes (tokens known): inserted by commit (insert()), reached by token walks;
//    they live in their parent's `children`, keyed by their tokens. A token node's parent
//    is the root or a token node, and its key is checked against its tokens.
//  - key-only nodes (tokens unknown): inserted by publish() (SGLang writes pages by key);
//    they live in their chain parent's `key_children`, keyed by their key. A key-only node
//    whose chain parent is unknown — a first page (no parent key), or a parent key the
//    index does not hold — hangs under the root's key_children.
// Every node, of either kind, is in the key map (key -> node), so key lookups find both.
//
// Adoption: a token walk (lookup, insert) that finds no child with the next page's tokens
// computes that page's chained key and consults the key map; a key-only node found there
// is adopted: its tokens are filled in and it moves under the token map of the node the
// walk stands on (its own key_children move with it). From then on it is a token node.
// A token walk therefore reuses pages published by key, and a commit whose page has a
// key-only node keeps that node's page (like any existing node).
//
// Eviction: a node is evictable when it has no children of either kind and its page has no
// holder but the index (refs == 1; lease holds and branches count as holders). evict()
// removes evictable leaves in least-recently-used order (a lookup or insert touches every
// node on its path); removing a leaf may make its parent evictable. Pages held by a branch,
// snapshot or lease are never evicted (evicting them would free nothing).
//
// Namespaces (runtime/namespace.h): the index is a forest with one root per namespace that
// holds at least one node. Every operation names its namespace; token walks start at that
// namespace's root, adoption and key lookups consult the key map under (namespace, key), so
// nothing of one namespace is ever reached from another. Keys inside a namespace are the
// unchanged chain above. A root is created by the first insert/publish into its namespace
// and destroyed as soon as it has no child (eviction removed its last node), so empty
// namespaces hold no memory. Eviction is one LRU over every namespace.
//
// Not thread-safe: the Runtime serializes every call.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/namespace.h"
#include "runtime/page_pool.h"
#include "runtime/sha256.h"
#include "runtime/types.h"

namespace pf::rt {

// The chained page keys of every full page of `tokens` (DESIGN §4), lowercase hex.
std::vector<std::string> prefix_page_keys(std::span<const Token> tokens, std::uint32_t page_tokens);
// The same keys as raw bytes.
std::vector<Sha256> prefix_keys(std::span<const Token> tokens, std::uint32_t page_tokens);
// One key: SHA-256(parent || tokens LE); parent == nullptr for the first page.
Sha256 prefix_page_key(const Sha256* parent, std::span<const Token> tokens);
// Parses 64 hex digits (either case) into a key; false for anything else.
bool parse_key_hex(std::string_view hex, Sha256* out);

struct Sha256Hash {
  std::size_t operator()(const Sha256& k) const noexcept {
    std::size_t h;
    std::memcpy(&h, k.data(), sizeof h);  // a cryptographic hash: any 8 bytes are uniform
    return h;
  }
};

// A key map entry: a key within its namespace.
struct ScopedKey {
  Namespace ns;
  Sha256 key;
  bool operator==(const ScopedKey&) const = default;
};

struct ScopedKeyHash {
  std::size_t operator()(const ScopedKey& k) const noexcept {
    return Sha256Hash()(k.key) ^ (Sha256Hash()(k.ns) * 0x9e3779b97f4a7c15ull);
  }
};

class PrefixIndex {
 public:
  struct Node {
    Node* parent = nullptr;  // nullptr: a namespace root (never visited by for_each)
    Namespace ns{};
    Sha256 key{};
    std::vector<Token> tokens;  // this page's tokens (page_tokens of them); empty: key-only
    PageId page = 0;
    std::uint64_t last_used = 0;
    std::map<std::vector<Token>, std::unique_ptr<Node>> children;  // token nodes
    std::map<Sha256, std::unique_ptr<Node>> key_children;          // key-only nodes
    bool key_only() const { return tokens.empty(); }
    bool leaf() const { return children.empty() && key_children.empty(); }
  };

  explicit PrefixIndex(PagePool& pool);
  ~PrefixIndex();  // drops every node's reference

  // Pages of the longest cached prefix of whole pages of `tokens` (in order); touches them.
  // Adopts key-only nodes the walk meets (see above). Stops before a quarantined page.
  std::vector<PageId> lookup(const Namespace& ns, std::span<const Token> tokens);
  // Records pages[i] as the KV of full page i of `tokens` (tokens.size() must be
  // pages.size() * page_tokens) where no node exists yet; existing nodes (adopted key-only
  // ones included) keep their page. Each new node takes a reference. Returns how many
  // nodes were added.
  std::size_t insert(const Namespace& ns, std::span<const Token> tokens,
                     std::span<const PageId> pages);

  // Pages of the longest leading run of `keys` present in the index and not quarantined;
  // touches them.
  std::vector<PageId> lookup_keys(const Namespace& ns, std::span<const Sha256> keys);
  // Records pages[i] under keys[i] as key-only nodes chained after parent_key (nullptr:
  // keys[0] is a first page). A key already present keeps its node and page (pages[i] is
  // not referenced; the chain continues from the existing node). Each new node takes a
  // reference. new_key[i] (resized to keys.size()) says which keys were added. The caller
  // has checked keys are distinct and pages sealed. Returns how many nodes were added.
  std::size_t publish(const Namespace& ns, std::span<const Sha256> keys,
                      std::span<const PageId> pages, const Sha256* parent_key,
                      std::vector<bool>* new_key);
  // Whether `key` is present in namespace `ns` (no touch).
  bool contains(const Namespace& ns, const Sha256& key) const {
    return by_key_.count({ns, key}) != 0;
  }
  const Node* find(const Namespace& ns, const Sha256& key) const;

  // Pages evict(unbounded) would free now.
  std::size_t evictable_pages() const;
  // Evicts up to max_pages LRU evictable pages; returns how many were freed.
  std::size_t evict(std::size_t max_pages);
  std::size_t size() const { return nodes_; }
  std::size_t key_map_size() const { return by_key_.size(); }
  // Namespaces holding at least one node (their roots; an empty namespace has none).
  std::size_t namespaces() const { return roots_.size(); }

  // Visits every node of every namespace (parents before children; roots are not nodes).
  void for_each(const std::function<void(const Node&)>& fn) const;
  // Called with every node insert() or publish() adds, once it is linked in (its page
  // referenced), before the call returns; nullptr: none. The runtime's write-behind uses it.
  void set_on_new_node(std::function<void(const Node&)> fn) { on_new_node_ = std::move(fn); }

 private:
  std::size_t count_evictable(const Node& n, bool* all) const;
  void drop_subtree(Node& n);
  // The child of n for the page with `tokens`: a token child, or an adopted key-only node
  // with that chained key; nullptr when neither exists.
  Node* child_for(Node& n, const std::vector<Token>& tokens);
  // Removes n (a leaf) from its parent's map; destroys it, and its parent too when that is a
  // namespace root left without children.
  void erase_leaf(Node* n);
  // The root of ns, created when absent.
  Node& root_for(const Namespace& ns);
  // The root of ns, or nullptr when the namespace holds nothing.
  Node* find_root(const Namespace& ns);
  // Destroys ns's root when it has no child.
  void drop_root_if_empty(const Namespace& ns);

  PagePool& pool_;
  std::map<Namespace, std::unique_ptr<Node>> roots_;
  std::unordered_map<ScopedKey, Node*, ScopedKeyHash> by_key_;
  std::size_t nodes_ = 0;
  std::uint64_t clock_ = 0;
  std::function<void(const Node&)> on_new_node_;
};

}  // namespace pf::rt
