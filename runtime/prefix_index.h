// PrefixIndex: a radix tree over token ids at page granularity (DESIGN §4 Prefix keys,
// §5 branch(tokens?), gc/eviction).
//
// DESIGN: each node stands for one full page of page_tokens tokens following its parent's
// prefix, and holds the pool page with that prefix's KV plus its chained key
//   key = SHA-256(parent key || tokens as uint32 little-endian)   (the root's children
// omit the parent), equal to SGLang HiCache's get_hash_str(token_ids, prior_hash). The
// index holds ONE pool reference per node's page (the page's meta.in_index is set).
//
// Eviction: a node is evictable when it is a leaf and its page has no holder but the
// index (refs == 1). evict() removes evictable leaves in least-recently-used order (a
// lookup or insert touches every node on its path); removing a leaf may make its parent
// evictable. Pages held by a branch or snapshot are never evicted (evicting them would
// free nothing).
//
// Not thread-safe: the Runtime serializes every call.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/page_pool.h"
#include "runtime/sha256.h"
#include "runtime/types.h"

namespace pf::rt {

// The chained page keys of every full page of `tokens` (DESIGN §4), lowercase hex.
std::vector<std::string> prefix_page_keys(std::span<const Token> tokens, std::uint32_t page_tokens);
// One key: SHA-256(parent || tokens LE); parent == nullptr for the first page.
Sha256 prefix_page_key(const Sha256* parent, std::span<const Token> tokens);

class PrefixIndex {
 public:
  struct Node {
    Node* parent = nullptr;
    Sha256 key{};
    std::vector<Token> tokens;  // this page's tokens (page_tokens of them)
    PageId page = 0;
    std::uint64_t last_used = 0;
    std::map<std::vector<Token>, std::unique_ptr<Node>> children;
  };

  explicit PrefixIndex(PagePool& pool);
  ~PrefixIndex();  // drops every node's reference

  // Pages of the longest cached prefix of whole pages of `tokens` (in order); touches them.
  std::vector<PageId> lookup(std::span<const Token> tokens);
  // Records pages[i] as the KV of full page i of `tokens` (tokens.size() must be
  // pages.size() * page_tokens) where no node exists yet; existing nodes keep their page.
  // Each new node takes a reference. Returns how many nodes were added.
  std::size_t insert(std::span<const Token> tokens, std::span<const PageId> pages);
  // Pages evict(unbounded) would free now.
  std::size_t evictable_pages() const;
  // Evicts up to max_pages LRU evictable pages; returns how many were freed.
  std::size_t evict(std::size_t max_pages);
  std::size_t size() const { return nodes_; }

  // Visits every node (parents before children).
  void for_each(const std::function<void(const Node&)>& fn) const;

 private:
  std::size_t count_evictable(const Node& n, bool* all) const;
  void drop_subtree(Node& n);

  PagePool& pool_;
  Node root_;
  std::size_t nodes_ = 0;
  std::uint64_t clock_ = 0;
};

}  // namespace pf::rt
