// pool_handoff: the foundation layer's end-to-end job (`make demo` until the fan-out demo
// lands). A parent process builds a pool of chunks on the chosen backend, fills it, and
// digests every page; a second, exec'd process attaches to the same physical memory through
// the chunk fds, digests what it sees, and writes one page; the parent checks that both
// processes see identical bytes and that the peer's write is visible exactly where it was
// made. Exit status 0 only if every check passes.
//
//   pool_handoff [--device auto|host|cuda:N] [--chunks N] [--chunk-mib M] [--page-kib K]
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ipc/fd_passing.h"
#include "kernels/page_kernels.h"
#include "vmm/mapped_range.h"
#include "vmm/registry.h"

extern char** environ;

namespace {

using pf::Code;
using pf::Status;
using pf::kernels::Digest;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kMagic = 0x70664450;  // "pfDP"

#pragma pack(push, 1)
struct AttachRequest {
  std::uint32_t magic = kMagic;
  std::uint32_t n_chunks = 0;
  std::uint64_t chunk_bytes = 0;
  std::uint64_t page_bytes = 0;
  std::uint64_t write_page = 0;  // the page the peer overwrites after digesting
};
struct PeerReport {
  std::uint32_t magic = kMagic;
  std::int32_t code = 0;
  double attach_ms = 0;  // import + map + set_access of every chunk
  double digest_ms = 0;  // digest of every page as the peer sees it
  char message[200] = {};
  // followed by n_pages digests of the pages as first seen, then one digest of the page
  // the peer wrote
};
#pragma pack(pop)
static_assert(sizeof(AttachRequest) == 32);
static_assert(sizeof(PeerReport) == 224);

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Options {
  std::string device = "auto";
  std::size_t chunks = 16;
  std::size_t chunk_mib = 2;
  std::size_t page_kib = 2048;  // llama-3-8b pages are 2 MiB
  int peer_fd = -1;
};

std::vector<pf::kernels::ConstSpan> pages_of(const pf::vmm::MappedRange& range, std::size_t page) {
  std::vector<pf::kernels::ConstSpan> out;
  for (std::size_t off = 0; off < range.mapped_bytes(); off += page) {
    out.push_back({static_cast<const char*>(range.base()) + off, page});
  }
  return out;
}

// Fills host memory with a deterministic pattern: byte i = hash of (seed, i / 8).
std::vector<std::uint8_t> pattern(std::size_t bytes, std::uint64_t seed) {
  std::vector<std::uint8_t> out(bytes);
  for (std::size_t off = 0; off < bytes; off += 8) {
    std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + off;
    x = (x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ull;
    std::memcpy(out.data() + off, &x, std::min<std::size_t>(8, bytes - off));
  }
  return out;
}

// ---- peer -------------------------------------------------------------------------------

Status run_peer(int sock, const std::string& device, PeerReport* report,
                std::vector<Digest>* digests) {
  AttachRequest req;
  std::vector<pf::UniqueFd> fds;
  PF_TRY(pf::ipc::recv_with_fds(sock, std::as_writable_bytes(std::span(&req, 1)),
                                pf::ipc::kMaxFdsPerMessage, &fds));
  if (req.magic != kMagic || fds.size() != req.n_chunks || req.page_bytes == 0) {
    return PF_ERROR(Code::kProtocol, "malformed attach request");
  }
  PF_ASSIGN_OR_RETURN(auto choice, pf::vmm::open_backend(device));
  PF_ASSIGN_OR_RETURN(auto kernels, pf::kernels::kernels_for(*choice.backend));
  const auto t_attach = Clock::now();
  PF_ASSIGN_OR_RETURN(
      auto range, pf::vmm::MappedRange::create(*choice.backend, req.n_chunks * req.chunk_bytes));
  for (auto& fd : fds) PF_TRY(range->grow_imported(fd.get(), req.chunk_bytes));
  report->attach_ms = ms_since(t_attach);
  fds.clear();

  const auto pages = pages_of(*range, req.page_bytes);
  digests->resize(pages.size() + 1);
  const auto t_digest = Clock::now();
  PF_TRY(kernels->digest_batch(pages, std::span(digests->data(), pages.size())));
  report->digest_ms = ms_since(t_digest);

  if (req.write_page >= pages.size()) return PF_ERROR(Code::kInvalidArgument, "bad write_page");
  const auto fresh = pattern(req.page_bytes, 0xfeed);
  void* at = const_cast<void*>(pages[req.write_page].data);
  PF_TRY(choice.backend->copy_to_mapped(at, fresh.data(), fresh.size()));
  PF_TRY(
      kernels->digest_batch(std::span(&pages[req.write_page], 1), std::span(&digests->back(), 1)));
  return Status::ok();
}

int peer_main(const Options& opt) {
  PeerReport report;
  std::vector<Digest> digests;
  const Status s = run_peer(opt.peer_fd, opt.device, &report, &digests);
  report.code = static_cast<std::int32_t>(s.code());
  std::snprintf(report.message, sizeof report.message, "%s", s.to_string().c_str());
  std::vector<std::byte> wire(sizeof report + digests.size() * sizeof(Digest));
  std::memcpy(wire.data(), &report, sizeof report);
  if (!digests.empty())
    std::memcpy(wire.data() + sizeof report, digests.data(), digests.size() * sizeof(Digest));
  return pf::ipc::send_with_fds(opt.peer_fd, wire, {}).is_ok() && s.is_ok() ? 0 : 1;
}

// ---- parent -----------------------------------------------------------------------------

#define CHECK_OK(expr)                                                               \
  do {                                                                               \
    const Status check_status_ = (expr);                                             \
    if (!check_status_.is_ok()) {                                                    \
      std::fprintf(stderr, "pool_handoff: %s\n", check_status_.to_string().c_str()); \
      return 1;                                                                      \
    }                                                                                \
  } while (0)

int parent_main(const Options& opt, const char* self) {
  auto choice = pf::vmm::open_backend(opt.device);
  CHECK_OK(choice.status());
  pf::vmm::Backend& backend = *choice.value().backend;
  std::printf("backend      : %s\n", choice.value().reason.c_str());
  auto kernels = pf::kernels::kernels_for(backend);
  CHECK_OK(kernels.status());
  const std::size_t chunk = opt.chunk_mib << 20, page = opt.page_kib << 10;
  const std::size_t total = opt.chunks * chunk;
  if (chunk % backend.granularity() != 0 || chunk % page != 0) {
    std::fprintf(stderr, "pool_handoff: chunk must be a multiple of %zu bytes and of the page\n",
                 backend.granularity());
    return 2;
  }

  auto t0 = Clock::now();
  auto range = pf::vmm::MappedRange::create(backend, total);
  CHECK_OK(range.status());
  for (std::size_t i = 0; i < opt.chunks; ++i) CHECK_OK(range.value()->grow(chunk));
  const double create_ms = ms_since(t0);
  const auto fill = pattern(total, 42);
  CHECK_OK(backend.copy_to_mapped(range.value()->base(), fill.data(), total));
  const auto pages = pages_of(*range.value(), page);
  std::vector<Digest> mine(pages.size());
  t0 = Clock::now();
  CHECK_OK(kernels.value()->digest_batch(pages, mine));
  const double digest_ms = ms_since(t0);
  std::printf("pool         : %zu chunks x %zu MiB = %zu MiB, %zu pages of %zu KiB, base %p\n",
              opt.chunks, opt.chunk_mib, total >> 20, pages.size(), opt.page_kib,
              range.value()->base());

  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return 1;
  pf::UniqueFd parent_end(pair[0]), child_end(pair[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_end.get(), 3);
  const std::string device = backend.device();
  std::vector<char*> argv = {
      const_cast<char*>(self),       const_cast<char*>("--peer-fd"),    const_cast<char*>("3"),
      const_cast<char*>("--device"), const_cast<char*>(device.c_str()), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, self, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    std::fprintf(stderr, "pool_handoff: cannot exec %s: %s\n", self, std::strerror(rc));
    return 1;
  }
  child_end.reset();

  AttachRequest req;
  req.n_chunks = static_cast<std::uint32_t>(opt.chunks);
  req.chunk_bytes = chunk;
  req.page_bytes = page;
  req.write_page = pages.size() / 2;
  std::vector<pf::UniqueFd> exported;
  std::vector<int> raw;
  t0 = Clock::now();
  for (std::size_t i = 0; i < opt.chunks; ++i) {
    auto fd = range.value()->export_chunk(i);
    CHECK_OK(fd.status());
    raw.push_back(fd.value().get());
    exported.push_back(std::move(fd.value()));
  }
  CHECK_OK(pf::ipc::send_with_fds(parent_end.get(), std::as_bytes(std::span(&req, 1)), raw));
  const double export_ms = ms_since(t0);
  exported.clear();

  std::vector<std::byte> wire(sizeof(PeerReport) + (pages.size() + 1) * sizeof(Digest));
  std::vector<pf::UniqueFd> none;
  const Status got = pf::ipc::recv_with_fds(parent_end.get(), wire, 0, &none);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  CHECK_OK(got);
  PeerReport report;
  std::memcpy(&report, wire.data(), sizeof report);
  if (report.code != 0) {
    std::fprintf(stderr, "pool_handoff: peer failed: %s\n", report.message);
    return 1;
  }
  std::vector<Digest> theirs(pages.size() + 1);
  std::memcpy(theirs.data(), wire.data() + sizeof report, theirs.size() * sizeof(Digest));

  std::size_t equal = 0;
  for (std::size_t i = 0; i < pages.size(); ++i) equal += (mine[i] == theirs[i]);
  std::vector<Digest> after(pages.size());
  CHECK_OK(kernels.value()->digest_batch(pages, after));
  std::size_t changed = 0;
  bool write_seen = false;
  for (std::size_t i = 0; i < pages.size(); ++i) {
    if (!(after[i] == mine[i])) {
      ++changed;
      write_seen = (i == req.write_page) && after[i] == theirs.back();
    }
  }
  const double mib = static_cast<double>(total) / (1 << 20);
  std::printf("create       : %.2f ms (reserve + %zu x create/map, one set_access each grow)\n",
              create_ms, opt.chunks);
  std::printf("digest       : %.2f ms parent (%.0f MiB/s, %s), %.2f ms peer\n", digest_ms,
              mib / (digest_ms / 1e3), std::string(kernels.value()->name()).c_str(),
              report.digest_ms);
  std::printf("handoff      : export + send %zu fds %.3f ms; peer attach (import+map) %.3f ms\n",
              opt.chunks, export_ms, report.attach_ms);
  std::printf("check        : peer sees identical bytes in %zu/%zu pages\n", equal, pages.size());
  std::printf(
      "check        : peer's write to page %zu visible here: %s; other pages changed: %zu\n",
      static_cast<std::size_t>(req.write_page), write_seen ? "yes" : "NO",
      changed - (write_seen ? 1 : 0));
  const bool ok = equal == pages.size() && write_seen && changed == 1 && WIFEXITED(wstatus) &&
                  WEXITSTATUS(wstatus) == 0;
  std::printf("result       : %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "pool_handoff: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--device")
      opt.device = value();
    else if (arg == "--chunks")
      opt.chunks = std::strtoull(value(), nullptr, 10);
    else if (arg == "--chunk-mib")
      opt.chunk_mib = std::strtoull(value(), nullptr, 10);
    else if (arg == "--page-kib")
      opt.page_kib = std::strtoull(value(), nullptr, 10);
    else if (arg == "--peer-fd")
      opt.peer_fd = std::atoi(value());
    else {
      std::fprintf(stderr,
                   "usage: pool_handoff [--device auto|host|cuda:N] [--chunks N] [--chunk-mib M] "
                   "[--page-kib K]\n");
      return 2;
    }
  }
  if (opt.chunks == 0 || opt.chunks > pf::ipc::kMaxFdsPerMessage || opt.chunk_mib == 0 ||
      opt.page_kib == 0) {
    std::fprintf(stderr, "pool_handoff: --chunks must be 1..253, sizes non-zero\n");
    return 2;
  }
  if (opt.peer_fd >= 0) return peer_main(opt);
  return parent_main(opt, "/proc/self/exe");
}
