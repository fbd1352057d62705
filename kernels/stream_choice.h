// Which CUDA stream a kv_copy runs on, decided without CUDA (so host tests cover it).
//
// Contract of the `stream` argument of PageKernels::kv_copy (and of pf_kv_copy's
// `cuda_stream`, whose PF_CUDA_STREAM_OWN equals kOwnStream):
//  - nullptr (0): the legacy default stream, as everywhere in CUDA. PyTorch's default stream
//    IS the legacy stream (torch.cuda.current_stream().cuda_stream == 0), so a copy asked for
//    on stream 0 must be ordered after the engine's kernels on it. It never means "the
//    library's own stream": that stream is non-blocking, does not wait for legacy-stream
//    work, and a store would read K/V before the model wrote them.
//  - kOwnStream: the kernels' own non-blocking stream (ordered after nothing of the caller's;
//    for callers that synchronized their own work first).
//  - anything else: that cudaStream_t itself (including cudaStreamPerThread, 0x2).
#pragma once

#include <cstdint>

namespace pf::kernels {

// The "library's own stream" sentinel: all bits set, never a valid cudaStream_t (a stream
// handle is a pointer; the special handles are 0, 0x1 and 0x2).
inline void* const kOwnStream = reinterpret_cast<void*>(~std::uintptr_t{0});

enum class StreamKind {
  kLegacyDefault,  // cudaStreamLegacy
  kOwn,            // the kernels' own stream
  kCaller,         // the caller's stream, as given
};

// The kind of stream `stream` names (see the contract above). Pure.
StreamKind stream_kind(const void* stream);

}  // namespace pf::kernels
