#include "runtime/prefix_index.h"

#include <cstring>
#include <queue>

namespace pf::rt {

Sha256 prefix_page_key(const Sha256* parent, std::span<const Token> tokens) {
  std::vector<std::uint8_t> le(tokens.size() * 4);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const Token t = tokens[i];
    le[4 * i] = static_cast<std::uint8_t>(t);
    le[4 * i + 1] = static_cast<std::uint8_t>(t >> 8);
    le[4 * i + 2] = static_cast<std::uint8_t>(t >> 16);
    le[4 * i + 3] = static_cast<std::uint8_t>(t >> 24);
  }
  if (parent == nullptr) return sha256(le.data(), le.size());
  return sha256(parent->data(), parent->size(), le.data(), le.size());
}

std::vector<std::string> prefix_page_keys(std::span<const Token> tokens,
                                          std::uint32_t page_tokens) {
  std::vector<std::string> out;
  Sha256 key{};
  for (std::size_t i = 0; (i + 1) * page_tokens <= tokens.size(); ++i) {
    key = prefix_page_key(i == 0 ? nullptr : &key, tokens.subspan(i * page_tokens, page_tokens));
    out.push_back(to_hex(key));
  }
  return out;
}

bool parse_key_hex(std::string_view hex, Sha256* out) {
  if (hex.size() != 64) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Sha256 k{};
  for (std::size_t i = 0; i < 32; ++i) {
    const int hi = nibble(hex[2 * i]);
    const int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    k[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  *out = k;
  return true;
}

PrefixIndex::PrefixIndex(PagePool& pool) : pool_(pool) {}

PrefixIndex::~PrefixIndex() {
  drop_subtree(root_);
}

void PrefixIndex::drop_subtree(Node& n) {
  auto drop = [&](Node& child) {
    drop_subtree(child);
    pool_.meta(child.page).in_index = false;
    pool_.unref(child.page);
    by_key_.erase(child.key);
    --nodes_;
  };
  for (auto& [toks, child] : n.children) drop(*child);
  for (auto& [key, child] : n.key_children) drop(*child);
  n.children.clear();
  n.key_children.clear();
}

const PrefixIndex::Node* PrefixIndex::find(const Sha256& key) const {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

PrefixIndex::Node* PrefixIndex::child_for(Node& n, const std::vector<Token>& tokens) {
  if (auto it = n.children.find(tokens); it != n.children.end()) return it->second.get();
  const Sha256 key = prefix_page_key(&n == &root_ ? nullptr : &n.key, tokens);
  auto k = by_key_.find(key);
  if (k == by_key_.end() || !k->second->key_only()) return nullptr;
  // Adopt: move the key-only node (with its key_children) under n's token map.
  Node* m = k->second;
  Node* owner = m->parent;
  auto owned = owner->key_children.find(key);
  std::unique_ptr<Node> moved = std::move(owned->second);
  owner->key_children.erase(owned);
  moved->tokens = tokens;
  moved->parent = &n;
  n.children.emplace(tokens, std::move(moved));
  return m;
}

std::vector<PageId> PrefixIndex::lookup(std::span<const Token> tokens) {
  const std::uint32_t pt = pool_.geometry().page_tokens;
  std::vector<PageId> out;
  const std::uint64_t now = ++clock_;
  Node* n = &root_;
  std::vector<Token> page(pt);
  for (std::size_t i = 0; (i + 1) * pt <= tokens.size(); ++i) {
    std::memcpy(page.data(), tokens.data() + i * pt, pt * sizeof(Token));
    Node* c = child_for(*n, page);
    if (c == nullptr || pool_.meta(c->page).quarantined) break;  // never reuse a damaged page
    n = c;
    n->last_used = now;
    out.push_back(n->page);
  }
  return out;
}

std::size_t PrefixIndex::insert(std::span<const Token> tokens, std::span<const PageId> pages) {
  const std::uint32_t pt = pool_.geometry().page_tokens;
  std::size_t added = 0;
  const std::uint64_t now = ++clock_;
  Node* n = &root_;
  for (std::size_t i = 0; i < pages.size() && (i + 1) * pt <= tokens.size(); ++i) {
    std::vector<Token> page(tokens.begin() + i * pt, tokens.begin() + (i + 1) * pt);
    Node* c = child_for(*n, page);
    if (c == nullptr) {
      auto node = std::make_unique<Node>();
      node->parent = n;
      node->key = prefix_page_key(n == &root_ ? nullptr : &n->key, page);
      node->tokens = page;
      node->page = pages[i];
      pool_.ref(pages[i]);
      pool_.meta(pages[i]).in_index = true;
      c = node.get();
      by_key_.emplace(node->key, c);
      n->children.emplace(std::move(page), std::move(node));
      ++nodes_;
      ++added;
    }
    n = c;
    n->last_used = now;
  }
  return added;
}

std::vector<PageId> PrefixIndex::lookup_keys(std::span<const Sha256> keys) {
  std::vector<PageId> out;
  const std::uint64_t now = ++clock_;
  for (const Sha256& k : keys) {
    auto it = by_key_.find(k);
    if (it == by_key_.end() || pool_.meta(it->second->page).quarantined) break;
    it->second->last_used = now;
    out.push_back(it->second->page);
  }
  return out;
}

std::size_t PrefixIndex::publish(std::span<const Sha256> keys, std::span<const PageId> pages,
                                 const Sha256* parent_key, std::vector<bool>* new_key) {
  new_key->assign(keys.size(), false);
  const std::uint64_t now = ++clock_;
  Node* n = &root_;  // first pages and pages of an unknown parent hang under the root
  if (parent_key != nullptr) {
    if (auto it = by_key_.find(*parent_key); it != by_key_.end()) n = it->second;
  }
  std::size_t added = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto it = by_key_.find(keys[i]);
    Node* c = nullptr;
    if (it != by_key_.end()) {
      c = it->second;
    } else {
      auto node = std::make_unique<Node>();
      node->parent = n;
      node->key = keys[i];
      node->page = pages[i];
      pool_.ref(pages[i]);
      pool_.meta(pages[i]).in_index = true;
      c = node.get();
      by_key_.emplace(keys[i], c);
      n->key_children.emplace(keys[i], std::move(node));
      ++nodes_;
      ++added;
      (*new_key)[i] = true;
    }
    n = c;
    n->last_used = now;
  }
  return added;
}

std::size_t PrefixIndex::count_evictable(const Node& n, bool* all) const {
  // Returns the evictable pages in n's subtree (children only); *all says whether the
  // whole subtree below n can go, which makes n itself a future leaf.
  std::size_t count = 0;
  bool every = true;
  auto visit = [&](const Node& child) {
    bool child_all = false;
    count += count_evictable(child, &child_all);
    if (child_all && pool_.meta(child.page).refs == 1) {
      ++count;
    } else {
      every = false;
    }
  };
  for (const auto& [toks, child] : n.children) visit(*child);
  for (const auto& [key, child] : n.key_children) visit(*child);
  *all = every;
  return count;
}

std::size_t PrefixIndex::evictable_pages() const {
  bool all = false;
  return count_evictable(root_, &all);
}

void PrefixIndex::erase_leaf(Node* n) {
  Node* parent = n->parent;
  pool_.meta(n->page).in_index = false;
  pool_.unref(n->page);
  by_key_.erase(n->key);
  --nodes_;
  if (n->key_only()) {
    const Sha256 key = n->key;
    parent->key_children.erase(key);  // destroys n
  } else {
    const std::vector<Token> tokens = n->tokens;
    parent->children.erase(tokens);  // destroys n
  }
}

std::size_t PrefixIndex::evict(std::size_t max_pages) {
  using Entry = std::pair<std::uint64_t, Node*>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  auto evictable = [&](const Node* n) {
    return n != &root_ && n->leaf() && pool_.meta(n->page).refs == 1;
  };
  for_each([&](const Node& n) {
    if (evictable(&n)) heap.push({n.last_used, const_cast<Node*>(&n)});
  });
  std::size_t freed = 0;
  while (freed < max_pages && !heap.empty()) {
    Node* n = heap.top().second;
    heap.pop();
    Node* parent = n->parent;
    erase_leaf(n);
    ++freed;
    if (evictable(parent)) heap.push({parent->last_used, parent});
  }
  return freed;
}

void PrefixIndex::for_each(const std::function<void(const Node&)>& fn) const {
  std::vector<const Node*> stack{&root_};
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    if (n != &root_) fn(*n);
    for (const auto& [toks, child] : n->children) stack.push_back(child.get());
    for (const auto& [key, child] : n->key_children) stack.push_back(child.get());
  }
}

}  // namespace pf::rt
