// vmm_peer: the exec'd second process of cross_process_test.
//   vmm_peer --socket-fd N --device SPEC
// Receives chunk fds, maps them into its own reservation with the same backend kind,
// verifies the parent's pattern, writes pattern(seed + 1) over the second half, replies.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ipc/fd_passing.h"
#include "tests/support/pattern.h"
#include "tests/vmm/handoff_wire.h"
#include "vmm/mapped_range.h"
#include "vmm/registry.h"

namespace {

using pf::Code;
using pf::Status;
using pf::testing::HandoffReply;
using pf::testing::HandoffRequest;

Status serve(int sock, const std::string& device, HandoffReply* reply) {
  HandoffRequest req;
  std::vector<pf::UniqueFd> fds;
  PF_TRY(pf::ipc::recv_with_fds(sock, std::as_writable_bytes(std::span(&req, 1)),
                                pf::ipc::kMaxFdsPerMessage, &fds));
  if (req.magic != pf::testing::kHandoffMagic || fds.size() != req.n_chunks) {
    return PF_ERROR(Code::kProtocol, "bad handoff request");
  }
  PF_ASSIGN_OR_RETURN(auto choice, pf::vmm::open_backend(device));
  const std::size_t total = req.n_chunks * req.chunk_bytes;
  PF_ASSIGN_OR_RETURN(auto range, pf::vmm::MappedRange::create(*choice.backend, total));
  for (auto& fd : fds) PF_TRY(range->grow_imported(fd.get(), req.chunk_bytes));
  fds.clear();  // imported: the fds are no longer needed

  std::vector<std::uint8_t> seen(total);
  PF_TRY(choice.backend->copy_from_mapped(seen.data(), range->base(), total));
  if (seen != pf::testing::pattern(total, req.seed)) {
    return PF_ERROR(Code::kInternal, "the parent's bytes differ in the peer's mapping");
  }
  reply->verified_bytes = total;
  reply->written_seed = req.seed + 1;
  const std::size_t half = total / 2;
  const auto mine = pf::testing::pattern(total - half, reply->written_seed);
  PF_TRY(choice.backend->copy_to_mapped(static_cast<char*>(range->base()) + half, mine.data(),
                                        mine.size()));
  return Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  int sock = -1;
  std::string device = "host";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--socket-fd") == 0) sock = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--device") == 0) device = argv[i + 1];
  }
  if (sock < 0) {
    std::fprintf(stderr, "usage: vmm_peer --socket-fd N --device SPEC\n");
    return 2;
  }
  HandoffReply reply;
  const Status s = serve(sock, device, &reply);
  reply.code = static_cast<std::int32_t>(s.code());
  std::snprintf(reply.message, sizeof reply.message, "%s", s.to_string().c_str());
  const Status sent = pf::ipc::send_with_fds(sock, std::as_bytes(std::span(&reply, 1)), {});
  return (s.is_ok() && sent.is_ok()) ? 0 : 1;
}
