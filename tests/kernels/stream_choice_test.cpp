// stream_kind (kernels/stream_choice.h): which CUDA stream a kv_copy's `stream` argument
// names. Host-only logic; the CUDA kernels map each kind to a cudaStream_t.
#include "kernels/stream_choice.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace pf::kernels {
namespace {

TEST(StreamChoice, NullIsTheLegacyDefaultStreamNotTheOwnStream) {
  // torch.cuda.current_stream().cuda_stream is 0 on torch's default stream: the copy must
  // be ordered after the model's kernels there.
  EXPECT_EQ(stream_kind(nullptr), StreamKind::kLegacyDefault);
}

TEST(StreamChoice, OwnStreamSentinelIsAllBitsSet) {
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(kOwnStream), ~std::uintptr_t{0});
  EXPECT_EQ(stream_kind(kOwnStream), StreamKind::kOwn);
}

TEST(StreamChoice, AnyOtherValueIsTheCallersStream) {
  // cudaStreamLegacy (0x1) and cudaStreamPerThread (0x2) pass through as they are, as does
  // a created stream's handle.
  int handle = 0;
  for (const void* s :
       {reinterpret_cast<const void*>(std::uintptr_t{1}),
        reinterpret_cast<const void*>(std::uintptr_t{2}), static_cast<const void*>(&handle),
        reinterpret_cast<const void*>(~std::uintptr_t{0} - 1)}) {
    EXPECT_EQ(stream_kind(s), StreamKind::kCaller) << s;
  }
}

}  // namespace
}  // namespace pf::kernels
