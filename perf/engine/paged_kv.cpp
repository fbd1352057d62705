#include "perf/engine/paged_kv.h"

#include <string>

namespace pf::engine {

Status PagedKv::set_n_tokens(std::uint64_t n) {
  if (n > capacity_tokens()) {
    return PF_ERROR(Code::kInvalidArgument, "set_n_tokens(" + std::to_string(n) + "): the " +
                                                "page table holds only " +
                                                std::to_string(capacity_tokens()) + " tokens");
  }
  n_tokens_ = n;
  return Status::ok();
}

void PagedKv::shrink_to_tokens() {
  const std::uint64_t P = geometry_.page_tokens;
  pages_.resize(static_cast<std::size_t>((n_tokens_ + P - 1) / P));
}

Status PagedKv::add_write_runs(std::span<const rt::WriteRun> runs,
                               const std::function<Result<std::byte*>(rt::PageId)>& resolve) {
  const std::uint64_t P = geometry_.page_tokens;
  std::vector<std::byte*> table = pages_;
  std::uint64_t next = n_tokens_;
  for (const rt::WriteRun& run : runs) {
    const std::string where =
        "write run {page " + std::to_string(run.page) + ", slot " + std::to_string(run.first_slot) +
        ", count " + std::to_string(run.count) + ", token " + std::to_string(run.first_token) + "}";
    if (run.first_token != next) {
      return PF_ERROR(Code::kInvalidArgument,
                      where + " does not continue the sequence at token " + std::to_string(next));
    }
    if (run.count == 0 || run.first_slot != run.first_token % P ||
        std::uint64_t{run.first_slot} + run.count > P) {
      return PF_ERROR(Code::kInvalidArgument,
                      where + " does not place token t at slot t % " + std::to_string(P));
    }
    PF_ASSIGN_OR_RETURN(std::byte* const base, resolve(run.page));
    const std::size_t index = static_cast<std::size_t>(run.first_token / P);
    if (index < table.size()) {
      table[index] = base;  // the runtime copied a shared last page: new address
    } else if (index == table.size()) {
      table.push_back(base);
    } else {
      return PF_ERROR(Code::kInternal, where + " skips a page");
    }
    next += run.count;
  }
  pages_ = std::move(table);
  return Status::ok();
}

}  // namespace pf::engine
