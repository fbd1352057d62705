// Connection (connection.h): the pages this session may write, and their protection in the
// mapping. The bookkeeping is ExclusivePages; the protection PoolMapping::set_writable.
#include <optional>
#include <string>

#include "shims/client/connection.h"

namespace pf::client {

void Connection::protect_locked(std::span<const std::uint32_t> pages, bool writable) {
  if (mapping_ == nullptr || pages.empty()) return;
  // Opening fails only when a chunk cannot even be made read-write whole (mprotect of a
  // mapping the process owns): then stores into it fault, which is all that is left to do.
  mapping_->set_writable(pages, writable).ignore();
}

void Connection::grant_runs(std::uint64_t branch, std::span<const wire::WriteRunWire> runs) {
  std::lock_guard lock(map_mu_);
  protect_locked(exclusive_.add_runs(branch, runs), true);
}

void Connection::grant_pages(std::span<const std::uint32_t> pages) {
  std::lock_guard lock(map_mu_);
  protect_locked(exclusive_.add_pages(pages), true);
}

void Connection::revoke_branch(std::uint64_t branch, bool committed_only) {
  std::lock_guard lock(map_mu_);
  protect_locked(committed_only ? exclusive_.commit(branch) : exclusive_.drop_branch(branch),
                 false);
}

void Connection::revoke_pages(std::span<const std::uint32_t> pages) {
  std::lock_guard lock(map_mu_);
  protect_locked(exclusive_.drop_pages(pages), false);
}

bool Connection::page_writable(std::uint32_t page) const {
  std::lock_guard lock(map_mu_);
  return exclusive_.owner(page).has_value();
}

bool Connection::page_guarded(std::uint32_t page) const {
  std::lock_guard lock(map_mu_);
  return mapping_ != nullptr && !stale_ && mapping_->guarded(page);
}

Status Connection::check_writable(std::span<const std::uint32_t> pages,
                                  std::string_view what) const {
  std::lock_guard lock(map_mu_);
  for (std::uint32_t page : pages) {
    if (exclusive_.owner(page).has_value()) continue;
    std::string why;
    if (std::optional<std::uint64_t> was = exclusive_.former_owner(page); !was.has_value()) {
      why =
          "no branch of this session holds it exclusively (pages of a snapshot, a fork, a "
          "checkout or a reused prefix are sealed and shared; another session's pages are "
          "its own)";
    } else if (*was == ExclusivePages::kNoBranch) {
      why = "this session allocated it (pages_alloc) and has published or released it since";
    } else {
      why = "it was exclusive to branch " + std::to_string(*was) +
            " until this session sealed, shared or freed it (commit of a full page, snapshot, "
            "fork, merge, truncate, free, detach)";
    }
    return PF_ERROR(Code::kPermissionDenied, std::string(what) + ": page " + std::to_string(page) +
                                                 " is not writable by this session: " + why +
                                                 "; write only the pages of append's write "
                                                 "runs or of pages_alloc");
  }
  return Status::ok();
}

}  // namespace pf::client
