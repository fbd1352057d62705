#include "runtime/prefix_index.h"

#include <cstring>
#include <queue>

#include "base/hex.h"

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

std::vector<Sha256> prefix_keys(std::span<const Token> tokens, std::uint32_t page_tokens) {
  std::vector<Sha256> out;
  for (std::size_t i = 0; (i + 1) * page_tokens <= tokens.size(); ++i) {
    out.push_back(prefix_page_key(i == 0 ? nullptr : &out.back(),
                                  tokens.subspan(i * page_tokens, page_tokens)));
  }
  return out;
}

std::vector<std::string> prefix_page_keys(std::span<const Token> tokens,
                                          std::uint32_t page_tokens) {
  std::vector<std::string> out;
  for (const Sha256& key : prefix_keys(tokens, page_tokens)) out.push_back(to_hex(key));
  return out;
}

bool parse_key_hex(std::string_view hex, Sha256* out) {
  return parse_hex(hex, out->data(), out->size());
}

PrefixIndex::PrefixIndex(PagePool& pool) : pool_(pool) {}

PrefixIndex::~PrefixIndex() {
  for (auto& [ns, root] : roots_) drop_subtree(*root);
}

void PrefixIndex::drop_subtree(Node& n) {
  auto drop = [&](Node& child) {
    drop_subtree(child);
    pool_.meta(child.page).in_index = false;
    pool_.unref(child.page);
    by_key_.erase({child.ns, child.key});
    --nodes_;
  };
  for (auto& [toks, child] : n.children) drop(*child);
  for (auto& [key, child] : n.key_children) drop(*child);
  n.children.clear();
  n.key_children.clear();
}

PrefixIndex::Node& PrefixIndex::root_for(const Namespace& ns) {
  std::unique_ptr<Node>& root = roots_[ns];
  if (!root) {
    root = std::make_unique<Node>();
    root->ns = ns;
  }
  return *root;
}

PrefixIndex::Node* PrefixIndex::find_root(const Namespace& ns) {
  auto it = roots_.find(ns);
  return it == roots_.end() ? nullptr : it->second.get();
}

void PrefixIndex::drop_root_if_empty(const Namespace& ns) {
  auto it = roots_.find(ns);
  if (it != roots_.end() && it->second->leaf()) roots_.erase(it);
}

const PrefixIndex::Node* PrefixIndex::find(const Namespace& ns, const Sha256& key) const {
  auto it = by_key_.find({ns, key});
  return it == by_key_.end() ? nullptr : it->second;
}

PrefixIndex::Node* PrefixIndex::child_for(Node& n, const std::vector<Token>& tokens) {
  if (auto it = n.children.find(tokens); it != n.children.end()) return it->second.get();
  const Sha256 key = prefix_page_key(n.parent == nullptr ? nullptr : &n.key, tokens);
  auto k = by_key_.find({n.ns, key});
  if (k == by_key_.end() || !k->second->key_only()) return nullptr;
  // Adopt: move the key-only node (with its key_children) under n's token map. Both lie in
  // n's namespace (the key map is scoped), so no root changes hands.
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

std::vector<PageId> PrefixIndex::lookup(const Namespace& ns, std::span<const Token> tokens) {
  const std::uint32_t pt = pool_.geometry().page_tokens;
  std::vector<PageId> out;
  Node* n = find_root(ns);
  if (n == nullptr) return out;  // nothing cached in this namespace
  const std::uint64_t now = ++clock_;
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

std::size_t PrefixIndex::insert(const Namespace& ns, std::span<const Token> tokens,
                                std::span<const PageId> pages) {
  const std::uint32_t pt = pool_.geometry().page_tokens;
  if (pages.empty() || tokens.size() < pt) return 0;
  std::size_t added = 0;
  const std::uint64_t now = ++clock_;
  Node* n = &root_for(ns);
  for (std::size_t i = 0; i < pages.size() && (i + 1) * pt <= tokens.size(); ++i) {
    std::vector<Token> page(tokens.begin() + i * pt, tokens.begin() + (i + 1) * pt);
    Node* c = child_for(*n, page);
    if (c == nullptr) {
      auto node = std::make_unique<Node>();
      node->parent = n;
      node->ns = ns;
      node->key = prefix_page_key(n->parent == nullptr ? nullptr : &n->key, page);
      node->tokens = page;
      node->page = pages[i];
      pool_.ref(pages[i]);
      pool_.meta(pages[i]).in_index = true;
      c = node.get();
      by_key_.emplace(ScopedKey{ns, node->key}, c);
      n->children.emplace(std::move(page), std::move(node));
      ++nodes_;
      ++added;
      if (on_new_node_) on_new_node_(*c);
    }
    n = c;
    n->last_used = now;
  }
  return added;
}

std::vector<PageId> PrefixIndex::lookup_keys(const Namespace& ns, std::span<const Sha256> keys) {
  std::vector<PageId> out;
  const std::uint64_t now = ++clock_;
  for (const Sha256& k : keys) {
    auto it = by_key_.find({ns, k});
    if (it == by_key_.end() || pool_.meta(it->second->page).quarantined) break;
    it->second->last_used = now;
    out.push_back(it->second->page);
  }
  return out;
}

std::size_t PrefixIndex::publish(const Namespace& ns, std::span<const Sha256> keys,
                                 std::span<const PageId> pages, const Sha256* parent_key,
                                 std::vector<bool>* new_key) {
  new_key->assign(keys.size(), false);
  if (keys.empty()) return 0;
  const std::uint64_t now = ++clock_;
  // First pages and pages of an unknown parent hang under the namespace's root.
  Node* n = &root_for(ns);
  if (parent_key != nullptr) {
    if (auto it = by_key_.find({ns, *parent_key}); it != by_key_.end()) n = it->second;
  }
  std::size_t added = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto it = by_key_.find({ns, keys[i]});
    Node* c = nullptr;
    if (it != by_key_.end()) {
      c = it->second;
    } else {
      auto node = std::make_unique<Node>();
      node->parent = n;
      node->ns = ns;
      node->key = keys[i];
      node->page = pages[i];
      pool_.ref(pages[i]);
      pool_.meta(pages[i]).in_index = true;
      c = node.get();
      by_key_.emplace(ScopedKey{ns, keys[i]}, c);
      n->key_children.emplace(keys[i], std::move(node));
      ++nodes_;
      ++added;
      (*new_key)[i] = true;
      if (on_new_node_) on_new_node_(*c);
    }
    n = c;
    n->last_used = now;
  }
  // Every key may already have been present elsewhere than under a fresh root.
  drop_root_if_empty(ns);
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
  std::size_t count = 0;
  for (const auto& [ns, root] : roots_) {
    bool all = false;
    count += count_evictable(*root, &all);
  }
  return count;
}

void PrefixIndex::erase_leaf(Node* n) {
  Node* parent = n->parent;
  pool_.meta(n->page).in_index = false;
  pool_.unref(n->page);
  by_key_.erase({n->ns, n->key});
  --nodes_;
  const Namespace ns = n->ns;
  if (n->key_only()) {
    const Sha256 key = n->key;
    parent->key_children.erase(key);  // destroys n
  } else {
    const std::vector<Token> tokens = n->tokens;
    parent->children.erase(tokens);  // destroys n
  }
  if (parent->parent == nullptr) drop_root_if_empty(ns);  // destroys parent when empty
}

std::size_t PrefixIndex::evict(std::size_t max_pages) {
  using Entry = std::pair<std::uint64_t, Node*>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  // Roots are never candidates, so destroying an emptied root leaves the heap valid.
  auto evictable = [&](const Node* n) {
    return n->parent != nullptr && n->leaf() && pool_.meta(n->page).refs == 1;
  };
  for_each([&](const Node& n) {
    if (evictable(&n)) heap.push({n.last_used, const_cast<Node*>(&n)});
  });
  std::size_t freed = 0;
  while (freed < max_pages && !heap.empty()) {
    Node* n = heap.top().second;
    heap.pop();
    Node* parent = n->parent;
    const bool parent_is_root = parent->parent == nullptr;
    erase_leaf(n);
    ++freed;
    if (!parent_is_root && evictable(parent)) heap.push({parent->last_used, parent});
  }
  return freed;
}

void PrefixIndex::for_each(const std::function<void(const Node&)>& fn) const {
  std::vector<const Node*> stack;
  for (const auto& [ns, root] : roots_) stack.push_back(root.get());
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    if (n->parent != nullptr) fn(*n);
    for (const auto& [toks, child] : n->children) stack.push_back(child.get());
    for (const auto& [key, child] : n->key_children) stack.push_back(child.get());
  }
}

}  // namespace pf::rt
