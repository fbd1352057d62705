// Argument checks shared by every PageKernels implementation, so each rejects the same
// batches with the same messages before touching memory (a rejected call writes nothing).
#pragma once

#include <span>

#include "kernels/page_kernels.h"

namespace pf::kernels {

// No op has a null pointer with a non-zero size.
Status check_copy_batch(std::span<const CopyOp> ops);
// out has one digest per page; no page is null with a non-zero size.
Status check_digest_batch(std::span<const ConstSpan> pages, std::span<const Digest> out);
// a, b and equal have one entry per pair; no span is null with a non-zero size.
Status check_compare_batch(std::span<const ConstSpan> a, std::span<const ConstSpan> b,
                           std::span<const std::uint8_t> equal);

}  // namespace pf::kernels
