#include "runtime/page_digest.h"

#include <algorithm>
#include <vector>

namespace pf::rt {

Status digest_pages(kernels::PageKernels& kernels, const Geometry& g, const std::byte* base,
                    std::span<const PageId> pages, std::span<const std::uint32_t> fills,
                    std::span<PageDigest> out) {
  if (pages.size() != fills.size() || pages.size() != out.size()) {
    return PF_ERROR(Code::kInvalidArgument, "digest_pages: span sizes differ");
  }
  const std::size_t per_page = std::size_t{g.layers} * 2;
  // Batches of at most this many block spans keep the scratch small for long contexts.
  const std::size_t pages_per_batch = std::max<std::size_t>(1, 8192 / per_page);
  std::vector<kernels::ConstSpan> spans;
  std::vector<kernels::Digest> blocks;
  std::vector<std::uint8_t> cat(std::size_t{g.layers} * 32);
  for (std::size_t first = 0; first < pages.size(); first += pages_per_batch) {
    const std::size_t n = std::min(pages_per_batch, pages.size() - first);
    spans.clear();
    for (std::size_t i = first; i < first + n; ++i) {
      const std::byte* page = base + std::size_t{pages[i]} * g.page_bytes();
      const std::size_t bytes = std::size_t{fills[i]} * g.token_bytes();
      for (std::uint32_t half = 0; half < 2; ++half) {
        for (std::uint32_t l = 0; l < g.layers; ++l) {
          spans.push_back({page + g.offset(l, static_cast<Half>(half), 0), bytes});
        }
      }
    }
    blocks.assign(spans.size(), {});
    PF_TRY(kernels.digest_batch(spans, blocks));
    for (std::size_t i = 0; i < n; ++i) {
      for (std::uint32_t half = 0; half < 2; ++half) {
        const kernels::Digest* d = &blocks[i * per_page + std::size_t{half} * g.layers];
        for (std::uint32_t l = 0; l < g.layers; ++l) {
          std::copy(d[l].bytes.begin(), d[l].bytes.end(), cat.begin() + std::size_t{l} * 32);
        }
        (half == 0 ? out[first + i].k : out[first + i].v) =
            kernels::blake3_digest(cat.data(), cat.size());
      }
    }
  }
  return Status::ok();
}

}  // namespace pf::rt
