// Prefix-index namespaces (docs/runtime.md "Namespaces").
//
// A namespace is a 32-byte tag that partitions the prefix index: a page cached or published
// in one namespace is never found from another, even for identical tokens or keys. Engines
// put everything the KV depends on besides the token ids into it (model weights, LoRA
// adapter, cache salt, prompt embeddings; docs/python.md processfork.namespace).
//
// The all-zero tag is the default namespace: exactly the index every client used before
// namespaces existed. A zero tag and an absent one are the same namespace everywhere (wire,
// manifests, C ABI, HTTP); nothing ever needs to spell the default out.
#pragma once

#include <algorithm>

#include "runtime/sha256.h"

namespace pf::rt {

using Namespace = Sha256;

inline constexpr Namespace kDefaultNamespace{};

inline bool is_default_namespace(const Namespace& ns) {
  return std::all_of(ns.begin(), ns.end(), [](std::uint8_t b) { return b == 0; });
}

}  // namespace pf::rt
