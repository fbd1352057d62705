#include "kernels/batch_checks.h"

#include <string>

namespace pf::kernels {
namespace {

Status check_span(const ConstSpan& s, const char* what, std::size_t i) {
  if (s.data == nullptr && s.bytes != 0) {
    return PF_ERROR(Code::kInvalidArgument, std::string(what) + "[" + std::to_string(i) +
                                                "] is null with " + std::to_string(s.bytes) +
                                                " bytes");
  }
  return Status::ok();
}

}  // namespace

Status check_copy_batch(std::span<const CopyOp> ops) {
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].bytes != 0 && (ops[i].src == nullptr || ops[i].dst == nullptr)) {
      return PF_ERROR(Code::kInvalidArgument, "copy op " + std::to_string(i) +
                                                  " has a null pointer with " +
                                                  std::to_string(ops[i].bytes) + " bytes");
    }
  }
  return Status::ok();
}

Status check_digest_batch(std::span<const ConstSpan> pages, std::span<const Digest> out) {
  if (out.size() != pages.size()) {
    return PF_ERROR(Code::kInvalidArgument, "digest_batch: " + std::to_string(pages.size()) +
                                                " pages but " + std::to_string(out.size()) +
                                                " output digests");
  }
  for (std::size_t i = 0; i < pages.size(); ++i) PF_TRY(check_span(pages[i], "pages", i));
  return Status::ok();
}

Status check_compare_batch(std::span<const ConstSpan> a, std::span<const ConstSpan> b,
                           std::span<const std::uint8_t> equal) {
  if (a.size() != b.size() || equal.size() != a.size()) {
    return PF_ERROR(Code::kInvalidArgument,
                    "compare_batch: span sizes differ (a " + std::to_string(a.size()) + ", b " +
                        std::to_string(b.size()) + ", equal " + std::to_string(equal.size()) + ")");
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    PF_TRY(check_span(a[i], "a", i));
    PF_TRY(check_span(b[i], "b", i));
  }
  return Status::ok();
}

}  // namespace pf::kernels
