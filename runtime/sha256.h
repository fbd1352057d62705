// SHA-256 (OpenSSL EVP) for CIDs and prefix keys. Pure functions, thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pf::rt {

using Sha256 = std::array<std::uint8_t, 32>;

// SHA-256 of the concatenation of two buffers (either may be empty).
Sha256 sha256(const void* a, std::size_t a_bytes, const void* b = nullptr, std::size_t b_bytes = 0);
std::string to_hex(const std::uint8_t* bytes, std::size_t n);
inline std::string to_hex(const Sha256& d) {
  return to_hex(d.data(), d.size());
}

}  // namespace pf::rt
