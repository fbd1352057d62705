// K and V content digests of pages (DESIGN §4 Page digest; exact definition in
// docs/formats.md).
//
// For a page holding `fill` tokens:
//   kblock_l = BLAKE3-256(the first fill * token_bytes bytes of layer l's K block)
//   k        = BLAKE3-256(kblock_0 || kblock_1 || ... || kblock_{layers-1})   (32 bytes each)
// and likewise v over the V blocks. Unfilled slots never enter a digest, so a page's
// digest depends only on the tokens it holds. The per-block digests run as one
// digest_batch on the pool's own kernels (host or GPU); the small combining hash runs on
// the host. Blocking.
#pragma once

#include <span>

#include "base/page_format.h"
#include "kernels/page_kernels.h"
#include "runtime/types.h"

namespace pf::rt {

struct PageDigest {
  kernels::Digest k, v;
};

// out[i] = digests of page pages[i] over its first fills[i] token slots.
// `base` is the pool base (page p at base + p * page_bytes).
Status digest_pages(kernels::PageKernels& kernels, const Geometry& g, const std::byte* base,
                    std::span<const PageId> pages, std::span<const std::uint32_t> fills,
                    std::span<PageDigest> out);

}  // namespace pf::rt
