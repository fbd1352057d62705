// KVTransfer (kv_transfer.h): resolves page ids through the mapping and runs the pool
// device's layout kernel.
#include "shims/client/kv_transfer.h"

#include <string>
#include <vector>

#include "base/device_name.h"
#include "base/dtype.h"

namespace pf::client {

Result<kernels::PageKernels*> KVTransfer::kernels() {
  std::lock_guard lock(mu_);
  if (kernels_ != nullptr) return kernels_.get();
  const std::string device = conn_.pool().device;
  Result<DeviceName> parsed = parse_device_name(device);
  if (!parsed.is_ok()) {
    return PF_ERROR(Code::kProtocol, "the daemon's pool device '" + device + "' is malformed");
  }
  if (parsed->kind == DeviceName::Kind::kHost) {
    kernels_ = kernels::make_host_kernels();
  } else {
    PF_ASSIGN_OR_RETURN(kernels_, kernels::make_cuda_kernels(parsed->ordinal));
  }
  made_.store(kernels_.get(), std::memory_order_release);
  return kernels_.get();
}

Status KVTransfer::fence() {
  kernels::PageKernels* k = made_.load(std::memory_order_acquire);
  if (k == nullptr) return Status::ok();  // no copy was ever made: nothing can be running
  return k->fence();
}

Result<std::uint64_t> KVTransfer::copy(const KVLayoutDesc& layout, std::span<const KVPageRun> runs,
                                       std::uint32_t layer_begin, std::uint32_t layer_end,
                                       kernels::KVDirection direction, void* stream) {
  const PoolInfo pool = conn_.pool();
  const kernels::KVPageFormat format{
      pool.layers, pool.kv_heads, pool.head_dim, pool.page_tokens,
      static_cast<std::uint32_t>(dtype_bytes(static_cast<DType>(pool.dtype)))};
  if (format.page_bytes() != pool.page_bytes) {
    return PF_ERROR(Code::kProtocol, "the pool's page_bytes disagrees with its geometry");
  }
  if (layout.elem_bytes != format.elem_bytes) {
    return PF_ERROR(Code::kInvalidArgument,
                    "kv copy: the engine's elements are " + std::to_string(layout.elem_bytes) +
                        " bytes but the pool's dtype " +
                        std::string(dtype_name(static_cast<DType>(pool.dtype))) + " has " +
                        std::to_string(format.elem_bytes) + "-byte elements");
  }
  std::vector<kernels::KVRun> resolved;
  resolved.reserve(runs.size());
  for (const KVPageRun& r : runs) {
    PF_ASSIGN_OR_RETURN(std::byte * page, conn_.page_ptr(r.page));
    resolved.push_back(kernels::KVRun{page, r.page_slot, r.count, r.engine_token});
  }
  // Valid page ids, then: a store writes only pages this session may write.
  if (direction == kernels::KVDirection::kEngineToPages) {
    std::vector<std::uint32_t> pages;
    pages.reserve(runs.size());
    for (const KVPageRun& r : runs) pages.push_back(r.page);
    PF_TRY(conn_.check_writable(pages, "kv store"));
  }
  const kernels::KVCopy job{format,
                            {layout.k_ptrs, layout.v_ptrs, layout.block_tokens, layout.block_stride,
                             layout.token_stride, layout.head_stride},
                            resolved,
                            layer_begin,
                            layer_end,
                            direction};
  PF_TRY(kernels::check_kv_copy(job));
  if (resolved.empty()) return std::uint64_t{0};
  PF_ASSIGN_OR_RETURN(kernels::PageKernels * k, kernels());
  PF_TRY(k->kv_copy(job, stream));
  return kernels::kv_copy_bytes(job);
}

}  // namespace pf::client
