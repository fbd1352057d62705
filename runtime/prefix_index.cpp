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

PrefixIndex::PrefixIndex(PagePool& pool) : pool_(pool) {}

PrefixIndex::~PrefixIndex() {
  drop_subtree(root_);
}

void PrefixIndex::drop_subtree(Node& n) {
  for (auto& [toks, child] : n.children) {
    drop_subtree(*child);
    pool_.meta(child->page).in_index = false;
    pool_.unref(child->page);
    --nodes_;
  }
  n.children.clear();
}

std::vector<PageId> PrefixIndex::lookup(std::span<const Token> tokens) {
  const std::uint32_t pt = pool_.geometry().page_tokens;
  std::vector<PageId> out;
  const std::uint64_t now = ++clock_;
  Node* n = &root_;
  std::vector<Token> key(pt);
  for (std::size_t i = 0; (i + 1) * pt <= tokens.size(); ++i) {
    std::memcpy(key.data(), tokens.data() + i * pt, pt * sizeof(Token));
    auto it = n->children.find(key);
    if (it == n->children.end()) break;
    n = it->second.get();
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
    std::vector<Token> key(tokens.begin() + i * pt, tokens.begin() + (i + 1) * pt);
    auto it = n->children.find(key);
    if (it == n->children.end()) {
      auto node = std::make_unique<Node>();
      node->parent = n;
      node->key = prefix_page_key(n == &root_ ? nullptr : &n->key, key);
      node->tokens = key;
      node->page = pages[i];
      pool_.ref(pages[i]);
      pool_.meta(pages[i]).in_index = true;
      it = n->children.emplace(std::move(key), std::move(node)).first;
      ++nodes_;
      ++added;
    }
    n = it->second.get();
    n->last_used = now;
  }
  return added;
}

std::size_t PrefixIndex::count_evictable(const Node& n, bool* all) const {
  // Returns the evictable pages in n's subtree (children only); *all says whether the
  // whole subtree below n can go, which makes n itself a future leaf.
  std::size_t count = 0;
  bool every = true;
  for (const auto& [toks, child] : n.children) {
    bool child_all = false;
    count += count_evictable(*child, &child_all);
    if (child_all && pool_.meta(child->page).refs == 1) {
      ++count;
    } else {
      every = false;
    }
  }
  *all = every;
  return count;
}

std::size_t PrefixIndex::evictable_pages() const {
  bool all = false;
  return count_evictable(root_, &all);
}

std::size_t PrefixIndex::evict(std::size_t max_pages) {
  using Entry = std::pair<std::uint64_t, Node*>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  auto evictable = [&](const Node* n) {
    return n != &root_ && n->children.empty() && pool_.meta(n->page).refs == 1;
  };
  for_each([&](const Node& n) {
    if (evictable(&n)) heap.push({n.last_used, const_cast<Node*>(&n)});
  });
  std::size_t freed = 0;
  while (freed < max_pages && !heap.empty()) {
    Node* n = heap.top().second;
    heap.pop();
    Node* parent = n->parent;
    const PageId page = n->page;
    pool_.meta(page).in_index = false;
    pool_.unref(page);
    parent->children.erase(n->tokens);  // destroys n
    --nodes_;
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
  }
}

}  // namespace pf::rt
