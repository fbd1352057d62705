// ExclusivePages (exclusive_pages.h): bookkeeping of the pages this session may write.
#include "shims/client/exclusive_pages.h"

#include <algorithm>

namespace pf::client {

std::vector<std::uint32_t> ExclusivePages::add_runs(std::uint64_t branch,
                                                    std::span<const wire::WriteRunWire> runs) {
  std::vector<std::uint32_t> added;
  for (const wire::WriteRunWire& run : runs) {
    former_.erase(run.page);
    auto [it, fresh] = pages_.try_emplace(run.page, Entry{branch, 0});
    if (fresh || it->second.branch != branch) added.push_back(run.page);
    it->second.branch = branch;
    it->second.filled = std::max(it->second.filled, run.first_slot + run.count);
  }
  std::sort(added.begin(), added.end());
  added.erase(std::unique(added.begin(), added.end()), added.end());
  return added;
}

std::vector<std::uint32_t> ExclusivePages::add_pages(std::span<const std::uint32_t> pages) {
  std::vector<std::uint32_t> added;
  for (std::uint32_t page : pages) {
    // An alloc'd page is a whole page for the caller to fill.
    former_.erase(page);
    auto [it, fresh] = pages_.try_emplace(page, Entry{kNoBranch, page_tokens_});
    if (fresh) added.push_back(page);
  }
  std::sort(added.begin(), added.end());
  return added;
}

std::vector<std::uint32_t> ExclusivePages::drop_if(std::uint64_t branch, bool only_full) {
  std::vector<std::uint32_t> dropped;
  for (auto it = pages_.begin(); it != pages_.end();) {
    if (it->second.branch == branch && (!only_full || it->second.filled >= page_tokens_)) {
      dropped.push_back(it->first);
      former_[it->first] = it->second.branch;
      it = pages_.erase(it);
    } else {
      ++it;
    }
  }
  return dropped;
}

std::vector<std::uint32_t> ExclusivePages::commit(std::uint64_t branch) {
  return drop_if(branch, true);
}

std::vector<std::uint32_t> ExclusivePages::drop_branch(std::uint64_t branch) {
  return drop_if(branch, false);
}

std::vector<std::uint32_t> ExclusivePages::drop_pages(std::span<const std::uint32_t> pages) {
  std::vector<std::uint32_t> dropped;
  for (std::uint32_t page : pages) {
    auto it = pages_.find(page);
    if (it == pages_.end()) continue;
    dropped.push_back(page);
    former_[page] = it->second.branch;
    pages_.erase(it);
  }
  std::sort(dropped.begin(), dropped.end());
  return dropped;
}

std::vector<std::uint32_t> ExclusivePages::clear() {
  std::vector<std::uint32_t> all = pages();
  for (const auto& [page, entry] : pages_) former_[page] = entry.branch;
  pages_.clear();
  return all;
}

std::optional<std::uint64_t> ExclusivePages::former_owner(std::uint32_t page) const {
  auto it = former_.find(page);
  if (it == former_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::uint64_t> ExclusivePages::owner(std::uint32_t page) const {
  auto it = pages_.find(page);
  if (it == pages_.end()) return std::nullopt;
  return it->second.branch;
}

std::vector<std::uint32_t> ExclusivePages::pages() const {
  std::vector<std::uint32_t> out;
  out.reserve(pages_.size());
  for (const auto& [page, entry] : pages_) out.push_back(page);
  return out;
}

}  // namespace pf::client
