// stream_kind (stream_choice.h): the stream-argument mapping of kv_copy.
#include "kernels/stream_choice.h"

namespace pf::kernels {

StreamKind stream_kind(const void* stream) {
  if (stream == nullptr) return StreamKind::kLegacyDefault;
  if (stream == kOwnStream) return StreamKind::kOwn;
  return StreamKind::kCaller;
}

}  // namespace pf::kernels
