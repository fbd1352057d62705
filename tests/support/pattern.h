// Deterministic byte patterns: word i of a buffer filled with seed s is splitmix64(s + i),
// so two processes can agree on expected bytes without shipping them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace pf::testing {

inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline std::vector<std::uint8_t> pattern(std::size_t bytes, std::uint64_t seed) {
  std::vector<std::uint8_t> out(bytes);
  for (std::size_t off = 0; off < bytes; off += 8) {
    const std::uint64_t word = splitmix64(seed + off / 8);
    std::memcpy(out.data() + off, &word, std::min<std::size_t>(8, bytes - off));
  }
  return out;
}

}  // namespace pf::testing
