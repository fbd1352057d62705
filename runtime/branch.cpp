#include "runtime/branch.h"

namespace pf::rt {

std::vector<PageId> branch_pages(const Branch& b, std::uint32_t page_tokens) {
  std::vector<PageId> out;
  out.reserve((b.n_tokens() + page_tokens - 1) / page_tokens);
  if (b.base) chain_pages(b.base.get(), b.base_tokens, page_tokens, &out);
  if (!b.tail.empty()) {
    out.resize(tail_first_page(b, page_tokens));
    out.insert(out.end(), b.tail.begin(), b.tail.end());
  }
  return out;
}

std::vector<Token> branch_tokens(const Branch& b) {
  std::vector<Token> out;
  out.reserve(b.n_tokens());
  if (b.base) chain_tokens(b.base.get(), b.base_tokens, &out);
  out.insert(out.end(), b.tail_tokens.begin(), b.tail_tokens.end());
  return out;
}

PageId branch_page(const Branch& b, std::uint32_t page_tokens, std::uint64_t index) {
  const std::uint64_t first = tail_first_page(b, page_tokens);
  if (!b.tail.empty() && index >= first) return b.tail[index - first];
  return chain_page(b.base.get(), b.base_tokens, page_tokens, index);
}

std::uint32_t fill_in_last_page(std::uint64_t n_tokens, std::uint32_t page_tokens) {
  if (n_tokens == 0) return 0;
  const std::uint32_t r = static_cast<std::uint32_t>(n_tokens % page_tokens);
  return r == 0 ? page_tokens : r;
}

void freeze_tail(PagePool& pool, Branch& b) {
  if (b.tail.empty()) return;
  const std::uint64_t n = b.n_tokens();
  b.base = std::make_shared<const PageList>(pool, std::move(b.base), b.base_tokens,
                                            std::move(b.tail), std::move(b.tail_tokens));
  b.base_tokens = n;
  b.tail.clear();
  b.tail_tokens.clear();
}

void release_tail(PagePool& pool, Branch& b) {
  for (PageId p : b.tail) pool.unref(p);
  b.tail.clear();
  b.tail_tokens.clear();
}

}  // namespace pf::rt
