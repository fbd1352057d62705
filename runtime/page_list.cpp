#include "runtime/page_list.h"

#include <utility>

namespace pf::rt {

PageList::PageList(PagePool& pool, std::shared_ptr<const PageList> parent,
                   std::uint64_t parent_tokens, std::vector<PageId> pages,
                   std::vector<Token> tokens)
    : pool_(pool),
      parent_(std::move(parent)),
      parent_tokens_(parent_tokens),
      page_tokens_(pool.geometry().page_tokens),
      pages_(std::move(pages)),
      tokens_(std::move(tokens)) {
  for (PageId p : pages_) pool_.seal(p);
  ++pool_.live_lists();
}

PageList::~PageList() {
  for (PageId p : pages_) pool_.unref(p);
  --pool_.live_lists();
}

PageListPtr make_flat_list(PagePool& pool, std::span<const PageId> pages,
                           std::span<const Token> tokens) {
  for (PageId p : pages) pool.ref(p);
  return std::make_shared<const PageList>(pool, nullptr, 0,
                                          std::vector<PageId>(pages.begin(), pages.end()),
                                          std::vector<Token>(tokens.begin(), tokens.end()));
}

namespace {
// The chain nodes that contribute to the first n tokens, innermost (root) first, with the
// token count visible through each.
struct Visible {
  const PageList* list;
  std::uint64_t upto;
};
std::vector<Visible> visible_nodes(const PageList* head, std::uint64_t n_tokens) {
  std::vector<Visible> nodes;
  std::uint64_t limit = n_tokens;
  for (const PageList* s = head; s != nullptr && limit > 0; s = s->parent().get()) {
    if (limit > s->parent_tokens()) {
      nodes.push_back({s, limit});
      limit = s->parent_tokens();
    }
  }
  return {nodes.rbegin(), nodes.rend()};
}
}  // namespace

void chain_tokens(const PageList* head, std::uint64_t n_tokens, std::vector<Token>* out) {
  for (const Visible& v : visible_nodes(head, n_tokens)) {
    const auto& t = v.list->tokens();
    out->insert(out->end(), t.begin(), t.begin() + (v.upto - v.list->parent_tokens()));
  }
}

void chain_pages(const PageList* head, std::uint64_t n_tokens, std::uint32_t page_tokens,
                 std::vector<PageId>* out) {
  const std::size_t base = out->size();
  for (const Visible& v : visible_nodes(head, n_tokens)) {
    const std::uint64_t first = v.list->first_page();
    const std::uint64_t end = (v.upto + page_tokens - 1) / page_tokens;
    out->resize(base + first);  // pages[0] replaces a partially filled parent page
    const auto& p = v.list->pages();
    out->insert(out->end(), p.begin(), p.begin() + (end - first));
  }
}

PageId chain_page(const PageList* head, std::uint64_t n_tokens, std::uint32_t page_tokens,
                  std::uint64_t index) {
  // The last visible token of that page decides which node holds it.
  const std::uint64_t last = std::min(n_tokens, (index + 1) * page_tokens) - 1;
  const PageList* s = head;
  while (last < s->parent_tokens()) s = s->parent().get();
  return s->pages()[index - s->first_page()];
}

}  // namespace pf::rt
